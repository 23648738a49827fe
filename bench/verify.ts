/**
 * Ed25519 verification strategies for the request hot path: what caching the
 * imported device key and verifying on libuv's thread pool buy.
 *
 *   npx tsx bench/verify.ts
 *
 * Every strategy verifies the same valid signature over real ExecuteCommand
 * signed bytes; each round runs for a fixed time and the strategies alternate
 * round by round. Ratios are against (a), sync verify with a cached KeyObject.
 */
import { createPublicKey, generateKeyPairSync, type KeyObject, sign, verify } from "node:crypto";
import { performance } from "node:perf_hooks";
import { rawPublicKeyOf } from "../handlers/ed25519.js";
import { executeCommandSignedBytes } from "../handlers/signing.js";
import {
  fmt,
  interleave,
  mainThreadCpuMicros,
  median,
  printReport,
  ratio,
  settle,
  table,
} from "./report.js";

const ROUNDS = 15;
const ROUND_MS = 250;
/** Verifications kept in flight by the callback form (gRPC calls arriving together). */
const IN_FLIGHT = 64;
/** Sync iterations between clock reads. */
const BATCH = 64;

const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const raw = rawPublicKeyOf(privateKey);
const jwkX = raw.toString("base64url");
/** DER SubjectPublicKeyInfo of an Ed25519 key: a fixed 12-byte header, then the raw key. */
const spki = Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), raw]);
const data = executeCommandSignedBytes({
  deviceSessionId: "ds-bench-0001",
  messageType: "demo.echo",
  requestId: "7f3c2a9e-5b1d-4c8e-9a6f-0d2e4b6c8a10",
  timestampMs: Date.now(),
  payload: Buffer.from('{"text":"hello from a device"}'),
});
const signature = sign(null, data, privateKey);

/** What one round measured. */
interface RoundResult {
  readonly opsPerSecond: number;
  /** Event-loop thread CPU per verification, in µs (Linux only). */
  readonly mainCpuMicros: number | undefined;
  /** Whole-process CPU (event loop and thread pool) per verification, in µs. */
  readonly processCpuMicros: number;
}

/** Runs `body`, which performs some verifications, and turns its count into rates. */
async function measure(body: () => Promise<number> | number): Promise<RoundResult> {
  const mainBefore = mainThreadCpuMicros();
  const cpuBefore = process.cpuUsage();
  const start = performance.now();
  const ops = await body();
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const mainAfter = mainThreadCpuMicros();
  return {
    opsPerSecond: ops / seconds,
    mainCpuMicros:
      mainBefore === undefined || mainAfter === undefined
        ? undefined
        : (mainAfter - mainBefore) / ops,
    processCpuMicros: (cpu.user + cpu.system) / ops,
  };
}

/** Runs `step` synchronously for about ROUND_MS; returns how many ran. */
function timedSync(step: () => boolean): number {
  let ops = 0;
  let failures = 0;
  const end = performance.now() + ROUND_MS;
  while (performance.now() < end) {
    for (let i = 0; i < BATCH; i++) if (!step()) failures++;
    ops += BATCH;
  }
  if (failures > 0) throw new Error(`${failures} verification(s) failed`);
  return ops;
}

/** Keeps `inFlight` callback-form verifications running for about ROUND_MS; returns how many ran. */
function timedCallback(key: KeyObject, inFlight: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let done = 0;
    let running = 0;
    let stopped = false;
    const end = performance.now() + ROUND_MS;
    const launch = () => {
      running++;
      verify(null, data, key, signature, (error, ok) => {
        running--;
        if (stopped) return;
        if (error || !ok) {
          stopped = true;
          reject(error ?? new Error("verification failed"));
          return;
        }
        done++;
        if (performance.now() < end) launch();
        else if (running === 0) {
          stopped = true;
          resolve(done);
        }
      });
    };
    for (let i = 0; i < inFlight; i++) launch();
  });
}

const variants = [
  {
    name: "(a) sync, cached KeyObject",
    round: () => timedSync(() => verify(null, data, publicKey, signature)),
  },
  {
    name: `(b) callback (libuv pool), ${IN_FLIGHT} in flight, cached KeyObject`,
    round: () => timedCallback(publicKey, IN_FLIGHT),
  },
  {
    name: "(b1) callback (libuv pool), 1 in flight, cached KeyObject",
    round: () => timedCallback(publicKey, 1),
  },
  {
    name: "(c) sync, key imported per call from JWK",
    round: () =>
      timedSync(() =>
        verify(
          null,
          data,
          createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: jwkX }, format: "jwk" }),
          signature,
        ),
      ),
  },
  {
    name: "(d) sync, key imported per call from DER SPKI",
    round: () =>
      timedSync(() =>
        verify(null, data, createPublicKey({ key: spki, format: "der", type: "spki" }), signature),
      ),
  },
].map((variant) => ({
  ...variant,
  round: async () => {
    await settle(20);
    return measure(variant.round);
  },
}));

// Warm up every path once (JIT, OpenSSL init) before measuring.
for (const variant of variants) await variant.round();

const results = await interleave(variants, ROUNDS);
const opsOf = (name: string) => (results.get(name) ?? []).map((result) => result.opsPerSecond);
const baseline = median(opsOf(variants[0]!.name));
const rows = variants.map((variant) => {
  const rounds = results.get(variant.name) ?? [];
  const ops = median(opsOf(variant.name));
  const main = rounds.map((result) => result.mainCpuMicros);
  return [
    variant.name,
    fmt(ops),
    ratio(ops / baseline),
    `${fmt(1e6 / ops, 1)} µs`,
    main.every((value) => value !== undefined) ? `${fmt(median(main), 1)} µs` : "n/a",
    `${fmt(median(rounds.map((result) => result.processCpuMicros)), 1)} µs`,
  ];
});

printReport(
  "Ed25519 verify strategies",
  [
    `${ROUNDS} interleaved rounds of ${ROUND_MS} ms per strategy; medians. Message: ${data.length} signed bytes.`,
  ],
  table(
    ["strategy", "ops/s", "ops/s vs (a)", "wall/op", "event-loop CPU/op", "process CPU/op"],
    rows,
  ),
);

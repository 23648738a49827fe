/**
 * ExecuteCommand: the gateway's real bin against a plain implementation of
 * the same contract on bare grpc-js + ioredis (`bench/plain/server.ts`), each
 * in its own process pinned to the same core, driven by a lean client that
 * writes HTTP/2 frames on plain sockets (`bench/h2-wire.ts`).
 *
 *   npx tsx bench/execute-command-vs-plain.ts [--rounds N] [--seconds S] [--concurrency C]
 *     [--server-cores LIST] [--cpu-prof DIR] [--heap-prof DIR] [--baseline-bin PATH]
 *
 * It builds the bin (`npm run -s build`) and compiles the plain server, starts
 * one redis-server on a free loopback port with a password, seeds device
 * sessions, starts both servers and alternates them round by round (A B A B).
 * Each round measures calls/s with C calls in flight (after a 1 s warm-up),
 * then p50/p99 latency open-loop at half of that round's rate (after a 1 s
 * warm-up at that rate) and, for the peer, also at the gateway's half rate of
 * the round (the same offered load), and the server's RSS at rest (after start) and at
 * its peak under load. Every request is signed before its phase starts, with
 * its own request_id; every response's `:status` and grpc-status are read
 * and failures are counted, not hidden.
 * With `--cpu-prof DIR` both servers run under `node --cpu-prof` and write
 * their profiles to DIR when they stop (profiling slows them: read the
 * profiles, not that run's figures); `--heap-prof DIR` does the same with
 * `node --heap-prof` (sampled allocations by stack). `--server-cores LIST`
 * pins the servers to a `taskset -c` list other than core 0, such as `0,1`
 * (the client and redis-server then share those cores). Both servers also
 * load `bench/alloc-probe.ts`, which reports the bytes their JavaScript heap
 * allocated per call: unlike calls/s, that does not move with other load.
 * `--baseline-bin PATH` puts another build of the gateway in plain's place
 * (the `dist/runtime/bin.js` of another checkout, built there with
 * `npm run build`), configured as this one: an A/B of two builds.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomUUID, sign } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { executeCommandSignedBytes } from "../handlers/signing.js";
import {
  ExecuteCommandRequest,
  ExecuteCommandResponse,
} from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { frameOf } from "../runtime/grpc/grpc-frames.js";
import { importGatewayKey, verifyExecuteCommandResponse } from "../runtime/kit/device-client.js";
import { gatewayEnv, type SeededDevice, seedDevices } from "../test/support/gateway.js";
import { vectors } from "../test/support/keys.js";
import { startRedis } from "../test/support/redis-server.js";
import { removeTempDirs } from "../test/support/temp-dir.js";
import { WireClient } from "./h2-wire.js";
import { cpuMicros, createRunCleanup, rssKiB } from "./processes.js";
import { fmt, machineFacts, median, percentile, ratio, settle, table } from "./report.js";

const { values: options } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    seconds: { type: "string", default: "5" },
    concurrency: { type: "string", default: "64" },
    "cpu-prof": { type: "string" },
    "heap-prof": { type: "string" },
    "server-cores": { type: "string", default: "0" },
    "baseline-bin": { type: "string" },
  },
});
const BASELINE_BIN = options["baseline-bin"];
if (BASELINE_BIN !== undefined && !existsSync(BASELINE_BIN)) {
  throw new Error(`--baseline-bin ${BASELINE_BIN} does not exist (build that checkout first)`);
}
/** The server the gateway is measured against: the plain one, or another build of the gateway. */
const PEER =
  BASELINE_BIN === undefined
    ? { name: "plain", label: "plain (bare grpc-js + ioredis)" }
    : { name: "baseline", label: `baseline (${BASELINE_BIN})` };
const PROFILE_ARGS = [
  ...(options["cpu-prof"] === undefined
    ? []
    : ["--cpu-prof", "--cpu-prof-dir", options["cpu-prof"]]),
  ...(options["heap-prof"] === undefined
    ? []
    : ["--heap-prof", "--heap-prof-dir", options["heap-prof"]]),
];
const ROUNDS = Number(options.rounds);
const SECONDS = Number(options.seconds);
const CONCURRENCY = Number(options.concurrency);
if (!(Number.isInteger(ROUNDS) && ROUNDS >= 1)) {
  throw new Error("--rounds must be a whole number ≥ 1");
}
// Requests are signed before each phase and must still be fresh (30 s skew) at its end.
if (!(SECONDS > 0 && SECONDS <= 20)) throw new Error("--seconds must be in (0, 20]");
if (!(Number.isInteger(CONCURRENCY) && CONCURRENCY >= 1)) {
  throw new Error("--concurrency must be a whole number ≥ 1");
}

const WARM_MS = 1000;
/** An untimed full-rate run per server before the first round: JIT, connections, session cache. */
const FIRST_WARM_MS = 3000;
const MEASURE_MS = SECONDS * 1000;
/** Client connections per server; calls in flight are spread over them. */
const CONNECTIONS = 8;
/** Device sessions the requests are spread over (all cached after the first calls). */
const SESSIONS = 64;
const PAYLOAD = Buffer.alloc(256, "x");
const MESSAGE_TYPE = "demo.echo";
const PATH = "/edgegateway.v1.EdgeGatewayService/ExecuteCommand";
/**
 * Smallest pool of pre-signed requests, in calls/s: well above either server
 * here (the gateway's first round ran out of a 5,000/s pool at 5,143 calls/s).
 */
const MIN_POOL_RATE = 10_000;
const SERVER_CORE = options["server-cores"];
if (!/^\d+(?:[,-]\d+)*$/.test(SERVER_CORE))
  throw new Error("--server-cores must be a taskset -c list");
const CLIENT_CORE = availableParallelism() >= 2 ? "1" : "0";
const ROOT = new URL("..", import.meta.url).pathname;
// Taken before this process pins itself to one core, which would hide the others.
const MACHINE = machineFacts();

/** A server process under test. */
interface ServerProcess {
  readonly pid: number;
  readonly address: string;
  readonly restRssKiB: number;
  stop(): Promise<void>;
}

/** What one round of one variant measured. */
interface RoundResult {
  readonly callsPerSecond: number;
  readonly maxErrors: number;
  /** True when the pre-signed pool ran out before the measuring window ended. */
  readonly poolExhausted: boolean;
  readonly halfRate: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly halfErrors: number;
  /**
   * Latency at the gateway's half rate of the same round (the contract's
   * "half of the project's max rate"): for the gateway the phase above, for
   * the peer a phase of its own at that rate.
   */
  readonly loadRate: number;
  readonly loadP50Ms: number;
  readonly loadP99Ms: number;
  readonly loadErrors: number;
  readonly peakRssKiB: number;
  /** CPU time of the server process per call at full rate (warm-up included). */
  readonly serverCpuMicros: number;
  /** CPU time of this client process per call at full rate (warm-up included). */
  readonly clientCpuMicros: number;
  /** Bytes the server's JavaScript heap allocated per call at full rate (warm-up included). */
  readonly serverAllocBytes: number;
}

const { cleanups, atExit, cleanUp } = createRunCleanup(
  "execute-command-vs-plain",
  120_000 + 2 * FIRST_WARM_MS + ROUNDS * 2 * (3 * SECONDS * 1000 + WARM_MS + 20_000),
);

/** Where the servers' `alloc-probe` writes its counts, and the probe's compiled module. */
const alloc = { dir: "", probe: "" };
const lastAllocSequence = new Map<number, number>();

/** Bytes `pid`'s JavaScript heap has allocated so far, asked of its `alloc-probe` by SIGUSR2. */
async function allocatedBytes(pid: number): Promise<number> {
  const last = lastAllocSequence.get(pid) ?? 0;
  process.kill(pid, "SIGUSR2");
  for (let waited = 0; waited < 10_000; waited += 10) {
    await settle(10);
    let text: string;
    try {
      text = readFileSync(join(alloc.dir, String(pid)), "utf8");
    } catch {
      continue;
    }
    const [sequence, bytes] = text.split(" ").map(Number);
    if (sequence !== undefined && bytes !== undefined && sequence > last) {
      lastAllocSequence.set(pid, sequence);
      return bytes;
    }
  }
  throw new Error(`process ${pid} did not report its allocations`);
}

/** Spawns `script` under Node, pinned to the server core, and waits for its ready lines. */
async function launch(
  name: string,
  script: string,
  env: Record<string, string>,
  address: RegExp,
  ready: RegExp,
): Promise<ServerProcess> {
  const child: ChildProcess = spawn(
    "taskset",
    ["-c", SERVER_CORE, process.execPath, ...PROFILE_ARGS, "--import", alloc.probe, script],
    {
      env: { PATH: process.env.PATH ?? "", NO_COLOR: "1", BENCH_ALLOC_DIR: alloc.dir, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(timer);
  };
  cleanups.push(stop);
  atExit.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  let output = "";
  const found = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start:\n${output}`)), 30_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString("utf8");
      const match = output.match(address);
      if (match && ready.test(output)) {
        clearTimeout(timer);
        // Keep draining its output so it never blocks on a full pipe, without keeping it.
        child.stdout?.off("data", onData).on("data", () => {});
        child.stderr?.off("data", onData).on("data", () => {});
        resolve(match[1]!);
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    void exited.then(() => reject(new Error(`${name} exited:\n${output}`)));
  });
  if (child.pid === undefined) throw new Error(`${name} has no pid`);
  // At rest: started, connected, no calls yet.
  await settle(1000);
  return { pid: child.pid, address: found, restRssKiB: rssKiB(child.pid), stop };
}

const runId = randomUUID().slice(0, 8);
/** `count` framed, signed requests with unique request_ids, fresh as of now. */
function signFrames(devices: readonly SeededDevice[], label: string, count: number): Buffer[] {
  const timestampMs = Date.now();
  const frames = new Array<Buffer>(count);
  for (let i = 0; i < count; i++) {
    const device = devices[i % devices.length]!;
    const fields = {
      deviceSessionId: device.deviceSessionId,
      messageType: MESSAGE_TYPE,
      requestId: `${runId}-${label}-${i}`,
      timestampMs,
      payload: PAYLOAD,
    };
    const signature = sign(null, executeCommandSignedBytes(fields), device.privateKey);
    frames[i] = frameOf(
      ExecuteCommandRequest.encode({ protocolVersion: 1, ...fields, signature }).finish(),
    );
  }
  return frames;
}

/** Calls at a fixed number in flight: completions per second within the measuring window. */
function closedLoop(
  client: WireClient,
  frames: readonly Buffer[],
  warmMs = WARM_MS,
  measureMs = MEASURE_MS,
): Promise<{ callsPerSecond: number; calls: number; errors: number; exhausted: boolean }> {
  return new Promise((resolve) => {
    const start = performance.now();
    const measureFrom = start + warmMs;
    const end = measureFrom + measureMs;
    let sent = 0;
    let inFlight = 0;
    let completed = 0;
    let calls = 0;
    let errors = 0;
    let lastCompletion = measureFrom;
    const send = () => {
      const body = frames[sent++]!;
      inFlight++;
      client.call(body, onDone);
    };
    const onDone = (ok: boolean) => {
      inFlight--;
      calls++;
      const now = performance.now();
      if (!ok) errors++;
      if (now >= measureFrom && now <= end) {
        completed++;
        lastCompletion = now;
      }
      if (now < end && sent < frames.length) send();
      else if (inFlight === 0) {
        const exhausted = sent >= frames.length && now < end;
        resolve({
          callsPerSecond: completed / (((exhausted ? lastCompletion : end) - measureFrom) / 1000),
          calls,
          errors,
          exhausted,
        });
      }
    };
    for (let i = 0; i < CONCURRENCY && sent < frames.length; i++) send();
  });
}

/**
 * Open loop at `rate` calls/s: the latency of every call after the first
 * `warmCalls`, from when it was sent. The warm-up lets the server settle
 * from the full-rate phase before it (such as finishing the old-generation
 * collection that phase started), so the figures are the half rate's own.
 */
function openLoop(
  client: WireClient,
  frames: readonly Buffer[],
  rate: number,
  warmCalls: number,
): Promise<{ latenciesMs: Float64Array; errors: number }> {
  return new Promise((resolve) => {
    const latencies = new Float64Array(frames.length);
    const intervalMs = 1000 / rate;
    const start = performance.now();
    let sent = 0;
    let finished = 0;
    let errors = 0;
    const tick = () => {
      const now = performance.now();
      while (sent < frames.length && start + sent * intervalMs <= now) {
        const index = sent++;
        const sentAt = performance.now();
        client.call(frames[index]!, (ok) => {
          latencies[index] = performance.now() - sentAt;
          if (!ok) errors++;
          if (++finished === frames.length) {
            resolve({ latenciesMs: latencies.subarray(warmCalls), errors });
          }
        });
      }
      if (sent < frames.length) setTimeout(tick, 1);
    };
    tick();
  });
}

/** One call outside the timed part, its response decoded and its signature checked. */
async function probe(client: WireClient, devices: readonly SeededDevice[], label: string) {
  const [body] = signFrames(devices, `${label}-probe`, 1);
  const data = await new Promise<Buffer>((resolve, reject) =>
    client.call(
      body!,
      (ok, bytes) => (ok && bytes ? resolve(bytes) : reject(new Error(`${label}: probe failed`))),
      true,
    ),
  );
  const response = ExecuteCommandResponse.decode(data.subarray(5));
  if (response.resultCode !== "ok" || !response.payload.equals(PAYLOAD)) {
    throw new Error(`${label}: unexpected probe response`);
  }
  await verifyExecuteCommandResponse(
    response,
    devices[0]!.deviceSessionId,
    importGatewayKey(vectors.gateway_key.public_key_base64url),
  );
}

try {
  // The client, redis-server and the build run on the other core from the servers.
  execFileSync("taskset", ["-a", "-pc", CLIENT_CORE, String(process.pid)], { stdio: "ignore" });
  console.error("building the bin and the plain server…");
  execFileSync("npm", ["run", "-s", "build"], { cwd: ROOT, stdio: "inherit" });
  // Compiled into dist/ so its packages resolve from the project's node_modules;
  // removed again on exit so it never ends up in the package.
  const plainOut = join(ROOT, "dist", ".bench-plain");
  cleanups.push(() => rmSync(plainOut, { recursive: true, force: true }));
  atExit.push(() => rmSync(plainOut, { recursive: true, force: true }));
  execFileSync(
    join(ROOT, "node_modules", ".bin", "tsc"),
    [
      "--ignoreConfig",
      join(ROOT, "bench", "plain", "server.ts"),
      join(ROOT, "bench", "alloc-probe.ts"),
      ...["--outDir", plainOut, "--rootDir", ROOT],
      ...["--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2023"],
      ...["--types", "node", "--skipLibCheck", "--strict"],
    ],
    { cwd: ROOT, stdio: "inherit" },
  );

  const redis = await startRedis();
  cleanups.push(() => redis.stop());
  // kill() sends SIGKILL synchronously; its promise is not needed at exit.
  atExit.push(() => void redis.kill());
  cleanups.push(removeTempDirs);
  atExit.push(removeTempDirs);
  const dir = mkdtempSync(join(tmpdir(), "edge-gateway-bench-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  atExit.push(() => rmSync(dir, { recursive: true, force: true }));
  alloc.dir = mkdtempSync(join(dir, "alloc-"));
  alloc.probe = pathToFileURL(join(plainOut, "bench", "alloc-probe.js")).href;
  const routesPath = join(dir, "routes.mjs");
  writeFileSync(
    routesPath,
    'export const routes = { "demo.echo": async (command) => ({ resultCode: "ok", payload: command.payload }) };\n',
  );

  const seed = redis.client();
  cleanups.push(() => seed.quit());
  const devices = await seedDevices(seed, SESSIONS);

  const env = gatewayEnv(redis, { GATEWAY_ROUTES_MODULE: routesPath });
  const gateway = await launch(
    "gateway",
    join(ROOT, "dist", "runtime", "bin.js"),
    env,
    /authenticated gRPC listening on (\S+)/,
    /gateway ready/,
  );
  const plain =
    BASELINE_BIN === undefined
      ? await launch(
          "plain",
          join(plainOut, "bench", "plain", "server.js"),
          {
            PLAIN_REDIS_ADDR: redis.addr,
            PLAIN_REDIS_PASSWORD: redis.password,
            PLAIN_SIGNER_KEY_PATH: env.GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH!,
          },
          /plain gRPC listening on (\S+)/,
          /listening/,
        )
      : await launch(
          "baseline",
          BASELINE_BIN,
          env,
          /authenticated gRPC listening on (\S+)/,
          /gateway ready/,
        );

  const variants = [
    {
      name: "gateway",
      server: gateway,
      client: await WireClient.connect(gateway.address, PATH, CONNECTIONS),
    },
    {
      name: PEER.name,
      server: plain,
      client: await WireClient.connect(plain.address, PATH, CONNECTIONS),
    },
  ];
  for (const variant of variants) cleanups.push(() => variant.client.close());

  for (const variant of variants) {
    const frames = signFrames(
      devices,
      `${variant.name}-warm`,
      (MIN_POOL_RATE * FIRST_WARM_MS) / 1000,
    );
    const warm = await closedLoop(variant.client, frames, 0, FIRST_WARM_MS);
    if (warm.errors > 0) throw new Error(`${variant.name}: ${warm.errors} calls failed in warm-up`);
    await settle(500);
  }

  const results = new Map<string, RoundResult[]>(variants.map((v) => [v.name, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const variant of variants) {
      const label = `${variant.name[0]}${round}`;
      await probe(variant.client, devices, label);
      // Twice the variant's last rate, so a quieter round does not run out.
      const previous = results.get(variant.name)!.at(-1)?.callsPerSecond ?? 0;
      const poolRate = Math.max(MIN_POOL_RATE, 2 * previous);
      const poolSize = Math.ceil(poolRate * ((WARM_MS + MEASURE_MS) / 1000)) + CONCURRENCY;

      let peak = 0;
      const sampler = setInterval(() => {
        peak = Math.max(peak, rssKiB(variant.server.pid));
      }, 100);
      try {
        const frames = signFrames(devices, `${label}-max`, poolSize);
        const allocBefore = await allocatedBytes(variant.server.pid);
        const serverCpuBefore = cpuMicros(variant.server.pid);
        const clientCpuBefore = process.cpuUsage();
        const max = await closedLoop(variant.client, frames);
        const clientCpu = process.cpuUsage(clientCpuBefore);
        const serverCpuMicros = (cpuMicros(variant.server.pid) - serverCpuBefore) / max.calls;
        const serverAllocBytes =
          ((await allocatedBytes(variant.server.pid)) - allocBefore) / max.calls;
        const clientCpuMicros = (clientCpu.user + clientCpu.system) / max.calls;
        await settle(200);
        const halfRate = max.callsPerSecond / 2;
        if (!(halfRate > 0)) throw new Error(`${label}: no call completed`);
        const half = await openLoop(
          variant.client,
          signFrames(devices, `${label}-half`, Math.ceil(halfRate * (SECONDS + WARM_MS / 1000))),
          halfRate,
          Math.ceil((halfRate * WARM_MS) / 1000),
        );
        // Over the same phases for both servers: not the peer's extra one below.
        peak = Math.max(peak, rssKiB(variant.server.pid));
        const peakRssKiB = peak;
        // The peer also runs at the gateway's half rate of this round (the
        // gateway runs first): the same offered load for both.
        const gatewayHalf = results.get("gateway")![round]?.halfRate;
        const load =
          gatewayHalf === undefined
            ? { rate: halfRate, ...half }
            : {
                rate: gatewayHalf,
                ...(await openLoop(
                  variant.client,
                  signFrames(
                    devices,
                    `${label}-load`,
                    Math.ceil(gatewayHalf * (SECONDS + WARM_MS / 1000)),
                  ),
                  gatewayHalf,
                  Math.ceil((gatewayHalf * WARM_MS) / 1000),
                )),
              };
        const result: RoundResult = {
          callsPerSecond: max.callsPerSecond,
          maxErrors: max.errors,
          poolExhausted: max.exhausted,
          halfRate,
          p50Ms: percentile(half.latenciesMs, 50),
          p99Ms: percentile(half.latenciesMs, 99),
          halfErrors: half.errors,
          loadRate: load.rate,
          loadP50Ms: percentile(load.latenciesMs, 50),
          loadP99Ms: percentile(load.latenciesMs, 99),
          loadErrors: gatewayHalf === undefined ? 0 : load.errors,
          peakRssKiB,
          serverCpuMicros,
          clientCpuMicros,
          serverAllocBytes,
        };
        results.get(variant.name)!.push(result);
        console.error(
          `round ${round + 1}/${ROUNDS} ${variant.name}: ${fmt(result.callsPerSecond)} calls/s` +
            ` (${result.maxErrors} errors${result.poolExhausted ? ", pool ran out" : ""}),` +
            ` at ${fmt(halfRate)}/s p50 ${fmt(result.p50Ms, 2)} ms p99 ${fmt(result.p99Ms, 2)} ms` +
            ` (${result.halfErrors} errors),` +
            (gatewayHalf === undefined
              ? ""
              : ` at the gateway's ${fmt(gatewayHalf)}/s p99 ${fmt(result.loadP99Ms, 2)} ms (${result.loadErrors} errors),`) +
            ` peak RSS ${fmt(peakRssKiB / 1024, 1)} MiB,` +
            ` CPU/call server ${fmt(serverCpuMicros)} µs, client ${fmt(clientCpuMicros)} µs,` +
            ` heap allocated/call ${fmt(serverAllocBytes / 1024, 1)} KiB`,
        );
      } finally {
        clearInterval(sampler);
      }
      await settle(500);
    }
  }

  const mib = (kib: number) => fmt(kib / 1024, 1);
  const perRound: string[][] = [];
  for (let round = 0; round < ROUNDS; round++) {
    for (const variant of variants) {
      const r = results.get(variant.name)![round]!;
      const errors = r.maxErrors + r.halfErrors + r.loadErrors;
      perRound.push([
        String(round + 1),
        variant.name,
        fmt(r.callsPerSecond),
        fmt(r.halfRate),
        fmt(r.p50Ms, 2),
        fmt(r.p99Ms, 2),
        fmt(r.loadRate),
        fmt(r.loadP99Ms, 2),
        mib(r.peakRssKiB),
        fmt(r.serverCpuMicros),
        fmt(r.serverAllocBytes / 1024, 1),
        [
          ...(errors === 0 ? [] : [`${errors} errors`]),
          ...(r.poolExhausted ? ["pool ran out"] : []),
        ].join(", ") || "ok",
      ]);
    }
    const g = results.get("gateway")![round]!;
    const p = results.get(PEER.name)![round]!;
    perRound.push([
      String(round + 1),
      `gateway / ${PEER.name}`,
      ratio(g.callsPerSecond / p.callsPerSecond),
      "",
      ratio(g.p50Ms / p.p50Ms),
      ratio(g.p99Ms / p.p99Ms),
      "",
      ratio(g.loadP99Ms / p.loadP99Ms),
      ratio(g.peakRssKiB / p.peakRssKiB),
      ratio(g.serverCpuMicros / p.serverCpuMicros),
      ratio(g.serverAllocBytes / p.serverAllocBytes),
      "",
    ]);
  }

  const summary = (name: string, server: ServerProcess) => {
    const rounds = results.get(name)!;
    return {
      rps: median(rounds.map((r) => r.callsPerSecond)),
      p50: median(rounds.map((r) => r.p50Ms)),
      p99: median(rounds.map((r) => r.p99Ms)),
      loadP99: median(rounds.map((r) => r.loadP99Ms)),
      rest: server.restRssKiB,
      peak: median(rounds.map((r) => r.peakRssKiB)),
      serverCpu: median(rounds.map((r) => r.serverCpuMicros)),
      clientCpu: median(rounds.map((r) => r.clientCpuMicros)),
      alloc: median(rounds.map((r) => r.serverAllocBytes)),
      errors: rounds.reduce((sum, r) => sum + r.maxErrors + r.halfErrors + r.loadErrors, 0),
    };
  };
  const g = summary("gateway", gateway);
  const p = summary(PEER.name, plain);
  const row = (name: string, s: typeof g) => [
    name,
    fmt(s.rps),
    fmt(s.p50, 2),
    fmt(s.p99, 2),
    fmt(s.loadP99, 2),
    mib(s.rest),
    mib(s.peak),
    fmt(s.serverCpu),
    fmt(s.clientCpu),
    fmt(s.alloc / 1024, 1),
    String(s.errors),
  ];
  const medians = table(
    [
      "server",
      "calls/s",
      "half-rate p50 ms",
      "half-rate p99 ms",
      "p99 ms at the gateway's half rate",
      "RSS at rest MiB",
      "RSS peak MiB",
      "server CPU µs/call",
      "client CPU µs/call",
      "server heap KiB allocated/call",
      "errors",
    ],
    [
      row("gateway (dist/runtime/bin.js)", g),
      row(PEER.label, p),
      [
        `gateway / ${PEER.name}`,
        ratio(g.rps / p.rps),
        ratio(g.p50 / p.p50),
        ratio(g.p99 / p.p99),
        ratio(g.loadP99 / p.loadP99),
        ratio(g.rest / p.rest),
        ratio(g.peak / p.peak),
        ratio(g.serverCpu / p.serverCpu),
        "",
        ratio(g.alloc / p.alloc),
        "",
      ],
    ],
  );
  const rounds = table(
    [
      "round",
      "server",
      "calls/s",
      "half rate/s",
      "p50 ms",
      "p99 ms",
      "gateway's half rate/s",
      "p99 ms there",
      "peak RSS MiB",
      "server CPU µs/call",
      "heap KiB/call",
      "status",
    ],
    perRound,
  );
  console.log(
    BASELINE_BIN === undefined
      ? "\n## ExecuteCommand: gateway vs a plain grpc-js + ioredis implementation\n"
      : `\n## ExecuteCommand: gateway (this checkout) vs ${BASELINE_BIN}\n`,
  );
  console.log(MACHINE);
  for (const note of [
    `each server its own process pinned to core(s) ${SERVER_CORE}; client and redis-server on core ${CLIENT_CORE};` +
      ` ${FIRST_WARM_MS / 1000} s untimed warm-up per server first.`,
    `${ROUNDS} rounds A B A B; per round: ${CONCURRENCY} calls in flight over ${CONNECTIONS} HTTP/2 connections,` +
      ` ${WARM_MS / 1000} s warm-up then ${SECONDS} s measured;` +
      ` then open loop at half that rate, ${WARM_MS / 1000} s warm-up then ${SECONDS} s measured;` +
      ` then, for ${PEER.name}, the same at the gateway's half rate of the round (the same offered load).`,
    `${SESSIONS} device sessions, ${PAYLOAD.length}-byte payloads, unique request_ids, signed and framed before each phase.`,
    "Medians over rounds; RSS at rest is after start, before any call; CPU and heap allocated per call at full rate, warm-up included;",
    `ratios are gateway / ${PEER.name}.`,
  ]) {
    console.log(note);
  }
  console.log(`\n${medians}\n\n${rounds}\n`);
  const failed = [...results.values()]
    .flat()
    .some((r) => r.maxErrors + r.halfErrors + r.loadErrors > 0);
  if (failed) process.exitCode = 1;
} finally {
  await cleanUp();
}

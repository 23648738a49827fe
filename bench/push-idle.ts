import { fork } from "node:child_process";
import { createPrivateKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import type { Redis } from "ioredis";
import { publishClientEvent } from "../runtime/kit/publishers.js";
import { gatewayEnv, putSession } from "../test/support/gateway.js";
import { metricValue, scrapeMetrics } from "../test/support/push.js";
import type { TestRedis } from "../test/support/redis-server.js";
import type { ProbeCommand, ProbeDevice } from "./peer/revoke-probe.js";
import { cpuMicros, createRunCleanup, launchPinned, prepareRun, rssKiB } from "./processes.js";
import {
  closeDevices,
  type Device,
  OPEN_RETRIES,
  openDevices,
  type RevokeTimes,
  requireNoEnds,
  untilAll,
} from "./push-devices.js";
import {
  fmt,
  interleave,
  machineFacts,
  median,
  parseModes,
  percentile,
  settle,
  table,
  wholeNumbers,
} from "./report.js";

const KNOWN_MODES = ["read", "routed"] as const;
/** The first revokes of a run are not timed: they run the code paths cold. */
const REVOKE_WARM_UP = 5;
type Mode = (typeof KNOWN_MODES)[number];

const { values: options } = parseArgs({
  options: {
    modes: { type: "string", default: KNOWN_MODES.join(",") },
    rounds: { type: "string", default: "2" },
    devices: { type: "string", default: "10000" },
    batch: { type: "string", default: "500" },
    "idle-seconds": { type: "string", default: "30" },
    revokes: { type: "string", default: "200" },
    deliveries: { type: "string", default: "100" },
    "cpu-prof": { type: "string" },
  },
});
const { modes: modesText, "cpu-prof": cpuProfDir, ...numeric } = options;
/** Node flags that make the gateway write a CPU profile into `--cpu-prof DIR`. */
const PROFILE_ARGS = cpuProfDir === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", cpuProfDir];
const MODES = parseModes(modesText, KNOWN_MODES);
const {
  rounds: ROUNDS,
  devices: DEVICES,
  batch: BATCH,
  "idle-seconds": IDLE_SECONDS,
  revokes: REVOKES,
  deliveries: DELIVERIES,
} = wholeNumbers(numeric);
if (REVOKES <= REVOKE_WARM_UP) throw new Error(`--revokes must be more than ${REVOKE_WARM_UP}`);
if (REVOKES + DELIVERIES > DEVICES) {
  throw new Error("--revokes plus --deliveries must not exceed --devices");
}

/** The goals the project tracks for one node holding many idle devices. */
const GOALS = {
  idleCpuPercent: 2,
  revokeP99Ms: 10,
  kibPerDevice: 25,
  kibPerDeviceStretch: 15,
};
/** How long RSS is left to settle (GC, freed buffers) before it is read. */
const RSS_SETTLE_MS = 3000;
/** The sanity events must have arrived within this. */
const DELIVERY_TIMEOUT_MS = 10_000;
/** The server's HTTP/2 keepalive ping interval (runtime/grpc/server.ts). */
const KEEPALIVE_SECONDS = 30;
const SERVER_CORE = "0";
const CLIENT_CORE = availableParallelism() >= 2 ? "1" : "0";
const ROOT = new URL("..", import.meta.url).pathname;
// Taken before this process pins itself to one core, which would hide the others.
const MACHINE = machineFacts();

const run = createRunCleanup(
  "push-idle",
  120_000 + ROUNDS * MODES.length * (IDLE_SECONDS * 1000 + 90_000 + DEVICES * 10),
);

/** What one run (one gateway process, one mode) measured. */
interface RunResult {
  readonly rssBeforeKiB: number;
  readonly rssAfterKiB: number;
  /** From the first stream requested to the last bootstrap event. */
  readonly openMs: number;
  /** Gateway CPU over the idle window, in % of one core. */
  readonly idleCpuPercent: number;
  /** Publish → stream ended with FAILED_PRECONDITION, ms, one per revoke. */
  readonly revokeMs: readonly number[];
  /** Publish → Redis acknowledged the snapshot, ms, one per revoke. */
  readonly revokeAckMs: readonly number[];
  /** The revoke probe's event-loop delay while revoking (p99, max), ms: how much of a latency the client added. */
  readonly clientLoopDelayMs: { readonly p99: number; readonly max: number };
  /** This process's CPU (every thread) over the idle window, in % of one core. */
  readonly clientIdleCpuPercent: number;
  /** Devices that received the sanity event. */
  readonly delivered: number;
  /** Streams that ended UNAVAILABLE before their bootstrap event and were opened again: how each ended. */
  readonly openRetries: readonly string[];
  /** The gateway's longest event-loop delay while the streams opened (its own /metrics), ms. */
  readonly openLoopLagMaxMs: number;
  /** Warnings and errors the gateway logged once started. */
  readonly logProblems: readonly string[];
}

/** The revoke probe's process (bench/peer/revoke-probe.ts), asked one thing at a time. */
interface Probe {
  ask(command: ProbeCommand): Promise<unknown>;
  /** Closes its streams and waits for it to exit. */
  close(): Promise<void>;
}

/** Starts the revoke probe in its own process; the run's exit kills it if it is still there. */
function startProbe(): Probe {
  const child = fork(join(ROOT, "bench", "peer", "revoke-probe.ts"), {
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const running = () => child.exitCode === null && child.signalCode === null;
  run.atExit.push(() => {
    if (running()) child.kill("SIGKILL");
  });
  const ask = (command: ProbeCommand) =>
    new Promise<unknown>((resolve, reject) => {
      const onExit = (code: number | null) => {
        child.off("message", onMessage);
        reject(new Error(`the revoke probe exited (${code}) before answering ${command.type}`));
      };
      const onMessage = (answer: { type: string; message?: string }) => {
        child.off("exit", onExit);
        if (answer.type === "error") reject(new Error(`revoke probe: ${answer.message}`));
        else resolve(answer);
      };
      child.once("message", onMessage);
      child.once("exit", onExit);
      child.send(command);
    });
  return {
    ask,
    async close() {
      if (running()) await ask({ type: "close" }).catch(() => child.kill("SIGKILL"));
      await exited;
    },
  };
}

/** A device as the revoke probe takes it: its key as PKCS#8 DER. */
function probeDevice(device: Device): ProbeDevice {
  return {
    index: device.index,
    userId: device.userId,
    deviceSessionId: device.deviceSessionId,
    publicKeyText: device.publicKeyText,
    privateKeyDer: device.privateKey.export({ type: "pkcs8", format: "der" }).toString("base64"),
  };
}

/** Sends SIGTERM to `pid` and waits for it to be gone, SIGKILL after `ms`. */
async function stopProcess(pid: number, ms = 10_000): Promise<void> {
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (!alive()) return;
  process.kill(pid, "SIGTERM");
  const start = Date.now();
  while (alive()) {
    if (Date.now() - start > ms) process.kill(pid, "SIGKILL");
    await settle(50);
  }
}

/** `count` indices spread evenly over the devices, starting at `offset`. */
function spread(count: number, offset: number): number[] {
  const step = DEVICES / (REVOKES + DELIVERIES);
  return Array.from({ length: count }, (_, i) => Math.floor((offset + i) * step));
}

/**
 * `count` device keys. The public key comes out of the key generation as DER
 * rather than from exporting the key object as JWK (as `newDeviceKey` does):
 * on Node 20 that export can deadlock when a garbage collection runs inside
 * it, which this process, holding thousands of connections, hit while
 * writing sessions.
 */
function deviceKeys(count: number): { privateKey: KeyObject; publicKeyText: string }[] {
  return Array.from({ length: count }, () => {
    const { privateKey, publicKey } = generateKeyPairSync("ed25519", {
      privateKeyEncoding: { type: "pkcs8", format: "der" },
      publicKeyEncoding: { type: "spki", format: "der" },
    });
    return {
      privateKey: createPrivateKey({ key: privateKey, format: "der", type: "pkcs8" }),
      // An Ed25519 SPKI ends with the 32-byte raw key.
      publicKeyText: publicKey.subarray(-32).toString("base64url"),
    };
  });
}

/** Writes every device's session as active (the previous run revoked some of them). */
async function writeSessions(redis: Redis, devices: readonly Device[]): Promise<void> {
  await Promise.all(
    devices.map(({ deviceSessionId, userId, publicKeyText }) =>
      putSession(redis, { deviceSessionId, userId, publicKeyText }),
    ),
  );
}

/** One run: a fresh gateway in `mode`, D devices, memory, idle CPU, revokes, deliveries. */
async function measureRun(
  testRedis: TestRedis,
  redis: Redis,
  keys: readonly { privateKey: KeyObject; publicKeyText: string }[],
  mode: Mode,
  label: string,
): Promise<RunResult> {
  console.error(`${label}: writing ${fmt(DEVICES)} device sessions…`);
  const devices: Device[] = keys.map((key, index) => ({
    index,
    userId: `user-${index}`,
    deviceSessionId: `ds-bench-${index}`,
    ...key,
    open: false,
    events: [],
  }));
  await writeSessions(redis, devices);
  const log: string[] = [];
  const probe = startProbe();
  const gateway = await launchPinned(run, {
    label: `gateway (${mode})`,
    core: SERVER_CORE,
    cwd: ROOT,
    args: [...PROFILE_ARGS, join(ROOT, "dist", "runtime", "bin.js")],
    env: gatewayEnv(testRedis, { GATEWAY_PUSH_FANOUT: mode }),
    ready: /authenticated gRPC listening on (\S+)[\s\S]*gateway ready/,
    onOutput: (text) => log.push(text),
  });
  try {
    await settle(RSS_SETTLE_MS);
    const rssBeforeKiB = rssKiB(gateway.pid);

    const admin = /admin HTTP listening on (\S+)/.exec(log.join(""))?.[1];
    if (admin === undefined) throw new Error("the gateway did not log its admin address");
    // What it logs from here on: its start-up output (stdout and stderr, in either order) is in by now.
    const logFrom = log.length;
    // Each scrape resets the event-loop delay figures: the next one covers the opening alone.
    await scrapeMetrics(admin);
    console.error(`${label}: opening ${fmt(DEVICES)} streams, ${fmt(BATCH)} at a time…`);
    const openStart = performance.now();
    const revoked = new Set(spread(REVOKES, 0));
    const held = devices.filter((device) => !revoked.has(device.index));
    const openRetries = await openDevices(held, gateway.address, label, BATCH);
    const probed = await probe.ask({
      type: "open",
      address: gateway.address,
      label: `${label}-probe`,
      batch: BATCH,
      redis: { addr: testRedis.addr, password: testRedis.password },
      devices: devices.filter((device) => revoked.has(device.index)).map(probeDevice),
    });
    openRetries.push(...(probed as { openRetries: string[] }).openRetries);
    if (openRetries.length > 0) {
      console.error(
        `${label}: ${openRetries.length} stream(s) retried, e.g.:\n  ${openRetries.slice(0, 5).join("\n  ")}`,
      );
    }
    const openMs = performance.now() - openStart;
    const openLoopLagMaxMs =
      metricValue(await scrapeMetrics(admin), "nodejs_eventloop_lag_max_seconds") * 1000;
    console.error(`${label}: ${fmt(DEVICES)} streams open in ${fmt(openMs / 1000, 1)} s`);

    await settle(RSS_SETTLE_MS);
    const rssAfterKiB = rssKiB(gateway.pid);

    console.error(`${label}: idle for ${IDLE_SECONDS} s…`);
    const cpuBefore = cpuMicros(gateway.pid);
    const clientCpuBefore = process.cpuUsage();
    const idleStart = performance.now();
    await settle(IDLE_SECONDS * 1000);
    const idleMs = performance.now() - idleStart;
    const idleCpuPercent = ((cpuMicros(gateway.pid) - cpuBefore) / 1000 / idleMs) * 100;
    const clientCpu = process.cpuUsage(clientCpuBefore);
    const clientIdleCpuPercent = ((clientCpu.user + clientCpu.system) / 1000 / idleMs) * 100;
    requireNoEnds(held, "while idle");
    const { ended } = (await probe.ask({ type: "ends" })) as { ended: string[] };
    if (ended.length > 0)
      throw new Error(
        `${ended.length} probe stream(s) ended while idle:\n  ${ended.slice(0, 5).join("\n  ")}`,
      );

    console.error(`${label}: ${REVOKES} revokes, one after another…`);
    const {
      revokeMs,
      revokeAckMs,
      loopDelayMs: clientLoopDelayMs,
    } = (await probe.ask({
      type: "revoke",
      warmUp: REVOKE_WARM_UP,
    })) as RevokeTimes;
    requireNoEnds(held, "that were not revoked");

    console.error(`${label}: one event to each of ${DELIVERIES} devices…`);
    const targets = spread(DELIVERIES, REVOKES).map((index) => devices[index]!);
    const arrived = untilAll(
      targets,
      (device) => device.events.includes("bench.ping") || device.end !== undefined,
      DELIVERY_TIMEOUT_MS,
      "events not delivered",
    ).catch(() => undefined);
    await Promise.all(
      targets.map((device) =>
        publishClientEvent(redis, {
          userId: device.userId,
          eventType: "bench.ping",
          requestId: `${label}-ping-${device.index}`,
        }),
      ),
    );
    await arrived;
    const delivered = targets.filter((device) => device.events.includes("bench.ping")).length;
    requireNoEnds(targets, "before their event arrived");

    return {
      rssBeforeKiB,
      rssAfterKiB,
      openMs,
      openRetries,
      openLoopLagMaxMs,
      idleCpuPercent,
      revokeMs,
      revokeAckMs,
      clientLoopDelayMs,
      clientIdleCpuPercent,
      delivered,
      logProblems: logProblems(log.slice(logFrom).join("")),
    };
  } catch (error) {
    const lines = log.join("").trimEnd();
    console.error(`${label}: gateway output:\n${lines || "(none)"}`);
    throw error;
  } finally {
    await probe.close();
    await closeDevices(devices);
    await stopProcess(gateway.pid);
  }
}

/** The warnings and errors in a gateway's output. */
function logProblems(output: string): string[] {
  return output.split("\n").filter((line) => /\b(warn|error|fatal)\b/i.test(line));
}

const kibPerDevice = (r: RunResult) => (r.rssAfterKiB - r.rssBeforeKiB) / DEVICES;
const goal = (met: boolean) => (met ? "✓" : "✗");

try {
  // This process (devices, publishers), redis-server and the build run on the other core.
  const testRedis = await prepareRun(run, CLIENT_CORE, ROOT);
  const redis = testRedis.client();
  run.cleanups.push(() => redis.quit());

  console.error(`generating ${fmt(DEVICES)} device keys…`);
  const keys = deviceKeys(DEVICES);

  const variants = MODES.map((mode) => ({
    name: mode,
    round: (round: number) => measureRun(testRedis, redis, keys, mode, `${mode}-${round + 1}`),
  }));
  // A B A B: the modes alternate run by run, each run a fresh gateway process.
  const results = await interleave(variants, ROUNDS, (name, round, r) => {
    console.error(
      `round ${round + 1}/${ROUNDS} ${name}: RSS ${fmt(r.rssBeforeKiB / 1024, 1)} → ${fmt(r.rssAfterKiB / 1024, 1)} MiB` +
        ` (${fmt(kibPerDevice(r), 1)} KiB/device), open ${fmt(r.openMs / 1000, 1)} s,` +
        ` idle CPU ${fmt(r.idleCpuPercent, 2)}%, revoke p50 ${fmt(percentile(r.revokeMs, 50), 2)}` +
        ` p99 ${fmt(percentile(r.revokeMs, 99), 2)} max ${fmt(Math.max(...r.revokeMs), 2)} ms,` +
        ` delivered ${r.delivered}/${DELIVERIES}`,
    );
  });

  console.log(`\n## ${fmt(DEVICES)} idle devices on one gateway node\n`);
  console.log(MACHINE);
  for (const note of [
    `one gateway bin per run, pinned to core ${SERVER_CORE}, GATEWAY_PUSH_FANOUT=<mode>, history on (defaults); devices and publishers`,
    `(this process) and redis-server on core ${CLIENT_CORE}. ${fmt(DEVICES)} devices, each its own session (putSession), its own HTTP/2`,
    `connection and one SubscribeEvents stream, opened ${fmt(BATCH)} at a time, each batch waiting for every bootstrap event;
a stream that ends UNAVAILABLE before it is open is opened again (up to ${OPEN_RETRIES} times), as devices do, and counted under "retried".
"open loop lag max": the gateway's nodejs_eventloop_lag_max_seconds (its admin /metrics) over the opening; its Redis commands time out after 1 s.`,
    `memory: gateway RSS ${RSS_SETTLE_MS / 1000} s after start (no streams) and ${RSS_SETTLE_MS / 1000} s after the last stream opened; KiB/device = difference / ${fmt(DEVICES)}.`,
    `idle CPU: gateway user + system time (every thread, /proc/<pid>/stat, 10 ms ticks) over ${IDLE_SECONDS} s with every stream open and`,
    `nothing published, in % of one core. The server sends an HTTP/2 keepalive ping on every connection every ${KEEPALIVE_SECONDS} s: about one per connection falls in the window.`,
    `revoke: ${REVOKES} of the sessions, one after another, publishSessionSnapshot(status revoked), the first ${REVOKE_WARM_UP} untimed (cold code); time from just before the MULTI/XADD`,
    `to the client seeing its stream end with FAILED_PRECONDITION (and to Redis acknowledging it). The ${REVOKES} revoked devices and their publisher`,
    `run in a probe process of their own (bench/peer/revoke-probe.ts, same core): this process, holding thousands of`,
    `connections, stalls for up to 40 ms at times, which would count as revoke latency. delivery: one event to each of ${DELIVERIES} other devices (publishClientEvent).`,
    `${ROUNDS} round(s), modes alternating (A B A B), a fresh gateway per run; medians over rounds.`,
  ]) {
    console.log(note);
  }

  for (const mode of MODES) {
    const rounds = results.get(mode)!;
    const m = (f: (r: RunResult) => number) => median(rounds.map(f));
    const kib = m(kibPerDevice);
    const idle = m((r) => r.idleCpuPercent);
    const p99 = m((r) => percentile(r.revokeMs, 99));
    console.log(`\n### GATEWAY_PUSH_FANOUT=${mode}\n`);
    const rows = [
      ["RSS, no streams MiB", fmt(m((r) => r.rssBeforeKiB) / 1024, 1), ""],
      [`RSS, ${fmt(DEVICES)} streams MiB`, fmt(m((r) => r.rssAfterKiB) / 1024, 1), ""],
      [
        "memory per device KiB",
        fmt(kib, 1),
        `≤ ${GOALS.kibPerDevice} ${goal(kib <= GOALS.kibPerDevice)}, stretch ≤ ${GOALS.kibPerDeviceStretch} ${goal(kib <= GOALS.kibPerDeviceStretch)}`,
      ],
      [`time to open ${fmt(DEVICES)} streams s`, fmt(m((r) => r.openMs) / 1000, 1), ""],
      [
        `idle CPU, ${IDLE_SECONDS} s window, % of a core`,
        fmt(idle, 2),
        `< ${GOALS.idleCpuPercent} ${goal(idle < GOALS.idleCpuPercent)}`,
      ],
      [
        "revoke → closed p50 ms",
        fmt(
          m((r) => percentile(r.revokeMs, 50)),
          2,
        ),
        "",
      ],
      [
        "revoke → closed p99 ms",
        fmt(p99, 2),
        `< ${GOALS.revokeP99Ms} ${goal(p99 < GOALS.revokeP99Ms)}`,
      ],
      [
        "revoke → closed max ms",
        fmt(
          m((r) => Math.max(...r.revokeMs)),
          2,
        ),
        "",
      ],
      [
        "revoke → Redis acked p50 / p99 ms",
        `${fmt(
          m((r) => percentile(r.revokeAckMs, 50)),
          2,
        )} / ${fmt(
          m((r) => percentile(r.revokeAckMs, 99)),
          2,
        )}`,
        "",
      ],
      [
        "probe event-loop delay while revoking p99 / max ms",
        `${fmt(
          m((r) => r.clientLoopDelayMs.p99),
          1,
        )} / ${fmt(
          m((r) => r.clientLoopDelayMs.max),
          1,
        )}`,
        "",
      ],
      [
        `client CPU, ${IDLE_SECONDS} s window, % of a core`,
        fmt(
          m((r) => r.clientIdleCpuPercent),
          2,
        ),
        "",
      ],
      [
        `sanity events delivered of ${DELIVERIES}`,
        fmt(Math.min(...rounds.map((r) => r.delivered))),
        "all",
      ],
    ];
    console.log(table(["measure (median over rounds)", "value", "goal"], rows));
    const perRound = rounds.map((r, round) => [
      String(round + 1),
      fmt(r.rssBeforeKiB / 1024, 1),
      fmt(r.rssAfterKiB / 1024, 1),
      fmt(kibPerDevice(r), 1),
      fmt(r.openMs / 1000, 1),
      fmt(r.openRetries.length),
      fmt(r.openLoopLagMaxMs),
      fmt(r.idleCpuPercent, 2),
      fmt(percentile(r.revokeMs, 50), 2),
      fmt(percentile(r.revokeMs, 99), 2),
      fmt(Math.max(...r.revokeMs), 2),
      `${r.delivered}/${DELIVERIES}`,
    ]);
    console.log(
      `\n${table(
        [
          "round",
          "RSS before MiB",
          "RSS after MiB",
          "KiB/device",
          "open s",
          "retried",
          "open loop lag max ms",
          "idle CPU %",
          "revoke p50 ms",
          "p99 ms",
          "max ms",
          "delivered",
        ],
        perRound,
      )}`,
    );
    const retries = new Map<string, number>();
    for (const retry of rounds.flatMap((r) => r.openRetries)) {
      const how = retry.slice(retry.indexOf(": ") + 2);
      retries.set(how, (retries.get(how) ?? 0) + 1);
    }
    if (retries.size > 0) {
      console.log("\nstreams that ended before their bootstrap event and were opened again:");
      for (const [how, count] of retries) console.log(`${fmt(count)} × ${how}`);
    }
    const problems = rounds.flatMap((r) => r.logProblems);
    console.log(
      problems.length === 0
        ? "\ngateway log: no warnings or errors"
        : `\ngateway log warnings/errors (${problems.length}):\n${problems.slice(0, 20).join("\n")}`,
    );
  }
  console.log();
} finally {
  await run.cleanUp();
}

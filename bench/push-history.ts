import { randomUUID } from "node:crypto";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import type { Redis } from "ioredis";
import { type Channel, ChannelCredentials, createChannel, createClient } from "nice-grpc";
import { EdgeGatewayServiceDefinition } from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { signSubscribeEventsRequest } from "../runtime/kit/device-client.js";
import { gatewayEnv, putSession } from "../test/support/gateway.js";
import { newDeviceKey } from "../test/support/keys.js";
import { cpuMicros, createRunCleanup, launchPinned, prepareRun } from "./processes.js";
import { fmt, interleave, machineFacts, median, ratio, settle, table } from "./report.js";

const { values: options } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    events: { type: "string", default: "20000" },
    "fanout-events": { type: "string", default: "2000" },
  },
});
const ROUNDS = Number(options.rounds);
const EVENTS = Number(options.events);
const FANOUT_EVENTS = Number(options["fanout-events"]);
for (const [name, value] of [
  ["--rounds", ROUNDS],
  ["--events", EVENTS],
  ["--fanout-events", FANOUT_EVENTS],
] as const) {
  if (!(Number.isInteger(value) && value >= 1))
    throw new Error(`${name} must be a whole number ≥ 1`);
}

const FANOUT_STREAMS = 50;
const WARM_UP_EVENTS = 1000;
const PAYLOAD = Buffer.alloc(64, "x");
/** `XADD`s per pipeline: a burst goes out in a few large writes. */
const PIPELINE = 5000;
/** The memory measurement: users × events each, routed through the history-on gateway. */
const MEMORY_USERS = 1000;
const MEMORY_EVENTS_PER_USER = 100;
/** Every burst must be delivered (and routed) well within this, or the run fails. */
const ROUND_TIMEOUT_MS = 120_000;
const SERVER_CORE = "0";
const CLIENT_CORE = availableParallelism() >= 2 ? "1" : "0";
const ROOT = new URL("..", import.meta.url).pathname;
// Taken before this process pins itself to one core, which would hide the others.
const MACHINE = machineFacts();

/** A gateway bin under test, with what the bench needs to drive it. */
interface Gateway {
  readonly label: string;
  readonly pid: number;
  readonly grpc: string;
  readonly clientEvents: string;
  readonly keyPrefix: string;
  readonly historyOn: boolean;
}

/** What one burst measured. */
interface RoundResult {
  readonly events: number;
  readonly deliveries: number;
  /** From the first `XADD` until every stream had every event. */
  readonly deliveredMs: number;
  /** From the first `XADD` until the router had routed the burst (history on only). */
  readonly routedMs: number | undefined;
  /** The gateway process's CPU per event, routing included. */
  readonly gatewayCpuMicros: number;
}

const run = createRunCleanup("push-history", 240_000 + ROUNDS * 4 * 60_000);

/** Open streams of one user on one gateway, counting what they receive. */
interface StreamGroup {
  readonly userId: string;
  readonly received: number[];
  /** Set while a round waits for every stream to reach `target`. */
  round?: { target: number; remaining: number; resolve: () => void; reject: (e: Error) => void };
}

let closing = false;
const runId = randomUUID().slice(0, 8);

/** Opens `count` streams of a new user on `gateway`, each of its own device session. */
async function openGroup(
  redis: Redis,
  gateway: Gateway,
  channels: readonly Channel[],
  userId: string,
  count: number,
): Promise<StreamGroup> {
  const group: StreamGroup = { userId, received: [] };
  const consumers: Promise<void>[] = [];
  const aborts: AbortController[] = [];
  // Cleanups run last first: cancel the streams, then wait for their consumers.
  run.cleanups.push(() => Promise.allSettled(consumers));
  run.cleanups.push(() => {
    for (const abort of aborts) abort.abort();
  });
  for (let i = 0; i < count; i++) {
    const key = newDeviceKey();
    const deviceSessionId = `ds-${userId}-${i}`;
    await putSession(
      redis,
      { deviceSessionId, userId, publicKeyText: key.publicKeyText },
      gateway.keyPrefix,
    );
    const request = signSubscribeEventsRequest(
      { deviceSessionId, requestId: `${runId}-${userId}-${i}`, timestampMs: Date.now() },
      key.privateKey,
    );
    const client = createClient(EdgeGatewayServiceDefinition, channels[i % channels.length]!);
    const abort = new AbortController();
    aborts.push(abort);
    group.received.push(0);
    consumers.push(
      (async () => {
        let ended = "ended";
        try {
          for await (const _ of client.subscribeEvents(request, { signal: abort.signal })) {
            const received = ++group.received[i]!;
            const round = group.round;
            if (round !== undefined && received === round.target && --round.remaining === 0) {
              round.resolve();
            }
          }
        } catch (error) {
          ended = (error as Error).message;
        }
        if (!closing) {
          const error = new Error(`a stream of ${userId} on ${gateway.label} ended: ${ended}`);
          if (group.round) group.round.reject(error);
          else console.error(error.message);
        }
      })(),
    );
  }
  // Every stream has its bootstrap event: all are registered in the hub.
  const start = Date.now();
  while (group.received.some((count) => count < 1)) {
    if (Date.now() - start > ROUND_TIMEOUT_MS) throw new Error(`${userId}: no bootstrap event`);
    await settle(10);
  }
  return group;
}

/** Resolves once every stream of `group` received `events` more events. */
function allReceived(group: StreamGroup, events: number): Promise<void> {
  const target = group.received[0]! + events;
  if (group.received.some((count) => count !== target - events)) {
    throw new Error(`${group.userId}: streams out of step before a round`);
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => done(new Error(`${group.userId}: burst not delivered in ${ROUND_TIMEOUT_MS} ms`)),
      ROUND_TIMEOUT_MS,
    );
    function done(error?: Error): void {
      clearTimeout(timer);
      group.round = undefined;
      if (error) reject(error);
      else resolve();
    }
    group.round = { target, remaining: group.received.length, resolve: () => done(), reject: done };
  });
}

/** `XADD`s `count` events for `userIds` (round robin) to `stream`, pipelined; the last id. */
async function burst(
  redis: Redis,
  stream: string,
  userIds: readonly string[],
  count: number,
  label: string,
): Promise<string> {
  let last = "";
  for (let from = 0; from < count; from += PIPELINE) {
    const pipeline = redis.pipeline();
    for (let i = from; i < Math.min(count, from + PIPELINE); i++) {
      pipeline.xadd(
        stream,
        "*",
        ...["user_id", userIds[i % userIds.length]!, "event_type", "bench.tick"],
        ...["payload", PAYLOAD, "request_id", `${label}-${i}`],
      );
    }
    const replies = (await pipeline.exec()) ?? [];
    for (const [error] of replies) if (error) throw error;
    last = String(replies.at(-1)?.[1]);
  }
  return last;
}

function compareIds(a: string, b: string): number {
  const [aMs, aSeq] = a.split("-").map(BigInt) as [bigint, bigint];
  const [bMs, bSeq] = b.split("-").map(BigInt) as [bigint, bigint];
  if (aMs !== bMs) return aMs < bMs ? -1 : 1;
  return aSeq === bSeq ? 0 : aSeq < bSeq ? -1 : 1;
}

/** Resolves how long after `start` the gateway's router had routed through `id` (polled). */
async function routedAt(redis: Redis, gateway: Gateway, id: string, start: number) {
  const key = `${gateway.keyPrefix}history-router:${gateway.clientEvents}`;
  for (;;) {
    const position = await redis.hget(key, "position");
    if (position !== null && compareIds(position, id) >= 0) return performance.now() - start;
    if (performance.now() - start > ROUND_TIMEOUT_MS) throw new Error(`${id} not routed in time`);
    await settle(5);
  }
}

/** One burst of `events` to `group` on `gateway`: delivery, routing and the gateway's CPU. */
async function measureBurst(
  redis: Redis,
  poller: Redis,
  gateway: Gateway,
  group: StreamGroup,
  events: number,
  label: string,
): Promise<RoundResult> {
  await settle(200);
  const cpuBefore = cpuMicros(gateway.pid);
  const delivered = allReceived(group, events);
  const start = performance.now();
  const last = await burst(redis, gateway.clientEvents, [group.userId], events, label);
  const routed = gateway.historyOn ? routedAt(poller, gateway, last, start) : undefined;
  await delivered;
  const deliveredMs = performance.now() - start;
  const routedMs = await routed;
  return {
    events,
    deliveries: events * group.received.length,
    deliveredMs,
    routedMs,
    gatewayCpuMicros: (cpuMicros(gateway.pid) - cpuBefore) / events,
  };
}

/** `used_memory` from `INFO memory`, in bytes. */
async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info("memory");
  return Number(/^used_memory:(\d+)/m.exec(info)?.[1]);
}

/** `MEMORY USAGE` of every key in `keys`, summed (all elements counted). */
async function memoryUsage(redis: Redis, keys: readonly string[]): Promise<number> {
  const pipeline = redis.pipeline();
  for (const key of keys) pipeline.call("MEMORY", "USAGE", key, "SAMPLES", "0");
  const replies = (await pipeline.exec()) ?? [];
  return replies.reduce((sum, [error, value]) => {
    if (error) throw error;
    return sum + Number(value ?? 0);
  }, 0);
}

try {
  // This process (the client), redis-server and the build run on the other core from the gateways.
  const testRedis = await prepareRun(run, CLIENT_CORE, ROOT);
  const redis = testRedis.client();
  run.cleanups.push(() => redis.quit());
  // Polling the router's position on a connection of its own, never behind a burst.
  const poller = testRedis.client();
  run.cleanups.push(() => poller.quit());

  // Both gateways sign with the same key; each has streams and keys of its own.
  const baseEnv = gatewayEnv(testRedis);
  const gateways: Gateway[] = [];
  for (const historyOn of [true, false]) {
    const name = historyOn ? "on" : "off";
    const label = `history ${name}`;
    const clientEvents = `${name}:client_events`;
    const keyPrefix = `${name}:`;
    const { pid, address: grpc } = await launchPinned(run, {
      label,
      core: SERVER_CORE,
      args: [join(ROOT, "dist", "runtime", "bin.js")],
      env: {
        ...baseEnv,
        GATEWAY_CLIENT_EVENTS_REDIS_STREAM: clientEvents,
        GATEWAY_SESSION_EVENTS_REDIS_STREAM: `${name}:session_events`,
        GATEWAY_REDIS_KEY_PREFIX: keyPrefix,
        // A whole burst fits in each stream's queue however the writes are scheduled.
        GATEWAY_PUSH_STREAM_QUEUE_SIZE: String(Math.max(EVENTS, FANOUT_EVENTS) + 1000),
        ...(historyOn ? {} : { GATEWAY_PUSH_HISTORY_SIZE: "0" }),
      },
      ready: /authenticated gRPC listening on (\S+)[\s\S]*gateway ready/,
    });
    gateways.push({ label, pid, grpc, clientEvents, keyPrefix, historyOn });
  }
  const on = gateways[0]!;
  // The history-on gateway routes only once its router state exists.
  await routedAt(poller, on, "0-0", performance.now());

  const groups = new Map<Gateway, { single: StreamGroup; fan: StreamGroup }>();
  for (const gateway of gateways) {
    const channels = Array.from({ length: 2 }, () =>
      createChannel(gateway.grpc, ChannelCredentials.createInsecure(), {
        "grpc.use_local_subchannel_pool": 1,
      }),
    );
    run.cleanups.push(() => {
      for (const channel of channels) channel.close();
    });
    groups.set(gateway, {
      single: await openGroup(redis, gateway, channels, "user-single", 1),
      fan: await openGroup(redis, gateway, channels, "user-fan", FANOUT_STREAMS),
    });
  }

  const variants = gateways.flatMap((gateway) => [
    { gateway, workload: "1 stream", events: EVENTS, group: groups.get(gateway)!.single },
    {
      gateway,
      workload: `${FANOUT_STREAMS} streams of one user`,
      events: FANOUT_EVENTS,
      group: groups.get(gateway)!.fan,
    },
  ]);
  // A B A B within each workload: on, off for 1 stream, then on, off for 50 streams.
  const ordered = [variants[0]!, variants[2]!, variants[1]!, variants[3]!].map((variant) => ({
    ...variant,
    name: `${variant.workload}, ${variant.gateway.label}`,
    round: (round: number) =>
      measureBurst(
        redis,
        poller,
        variant.gateway,
        variant.group,
        round < 0 ? WARM_UP_EVENTS : variant.events,
        `${variant.gateway.keyPrefix}${round}`,
      ),
  }));

  // One shorter warm-up burst of each (round -1), not measured.
  for (const variant of ordered) await variant.round(-1);
  const results = await interleave(ordered, ROUNDS, (name, round, result) => {
    console.error(
      `round ${round + 1}/${ROUNDS} ${name}: ${fmt(result.events)} events delivered in ${fmt(result.deliveredMs, 1)} ms` +
        ` (${fmt(result.events / (result.deliveredMs / 1000))} events/s)` +
        (result.routedMs === undefined ? "" : `, routed in ${fmt(result.routedMs, 1)} ms`) +
        `, gateway CPU ${fmt(result.gatewayCpuMicros, 1)} µs/event`,
    );
  });

  const eventsPerSecond = (r: RoundResult) => r.events / (r.deliveredMs / 1000);
  const rows: string[][] = [];
  const perRound: string[][] = [];
  for (const workload of [ordered[0]!, ordered[2]!].map((variant) => variant.workload)) {
    const [a, b] = ordered.filter((variant) => variant.workload === workload);
    const ra = results.get(a!.name)!;
    const rb = results.get(b!.name)!;
    const summary = (rounds: RoundResult[]) => ({
      rate: median(rounds.map(eventsPerSecond)),
      deliveries: median(rounds.map((r) => r.deliveries / (r.deliveredMs / 1000))),
      routed: median(
        rounds.map((r) => (r.routedMs === undefined ? Number.NaN : r.events / (r.routedMs / 1000))),
      ),
      cpu: median(rounds.map((r) => r.gatewayCpuMicros)),
    });
    const sa = summary(ra);
    const sb = summary(rb);
    const row = (name: string, s: typeof sa, events: number) => [
      name,
      fmt(events),
      fmt(s.rate),
      fmt(s.deliveries),
      Number.isNaN(s.routed) ? "" : fmt(s.routed),
      fmt(s.cpu, 1),
    ];
    rows.push(row(a!.name, sa, a!.events), row(b!.name, sb, b!.events), [
      `${workload}: on / off`,
      "",
      ratio(sa.rate / sb.rate),
      ratio(sa.deliveries / sb.deliveries),
      "",
      ratio(sa.cpu / sb.cpu),
    ]);
    for (let round = 0; round < ROUNDS; round++) {
      const x = ra[round]!;
      const y = rb[round]!;
      perRound.push(
        [
          String(round + 1),
          a!.name,
          fmt(eventsPerSecond(x)),
          x.routedMs === undefined ? "" : fmt(x.routedMs, 1),
          fmt(x.gatewayCpuMicros, 1),
        ],
        [String(round + 1), b!.name, fmt(eventsPerSecond(y)), "", fmt(y.gatewayCpuMicros, 1)],
        [
          String(round + 1),
          `${workload}: on / off`,
          ratio(eventsPerSecond(x) / eventsPerSecond(y)),
          "",
          ratio(x.gatewayCpuMicros / y.gatewayCpuMicros),
        ],
      );
    }
  }

  // Memory: MEMORY_USERS users × MEMORY_EVENTS_PER_USER events through the history-on gateway.
  console.error(`memory: routing ${MEMORY_USERS} users × ${MEMORY_EVENTS_PER_USER} events…`);
  await settle(500);
  const memoryUsers = Array.from({ length: MEMORY_USERS }, (_, i) => `mem-user-${i}`);
  const historyKeys = memoryUsers.map((userId) => `${on.keyPrefix}history:{${userId}}`);
  const ingressBefore = await memoryUsage(redis, [on.clientEvents]);
  const usedBefore = await usedMemory(redis);
  const memoryStart = performance.now();
  const lastMemoryId = await burst(
    redis,
    on.clientEvents,
    memoryUsers,
    MEMORY_USERS * MEMORY_EVENTS_PER_USER,
    "mem",
  );
  await routedAt(poller, on, lastMemoryId, memoryStart);
  await settle(500);
  const usedAfter = await usedMemory(redis);
  const ingressGrowth = (await memoryUsage(redis, [on.clientEvents])) - ingressBefore;
  const historyUsage = await memoryUsage(redis, historyKeys);
  const lengths = await Promise.all(historyKeys.map((key) => redis.xlen(key)));
  const routedEvents = lengths.reduce((sum, length) => sum + length, 0);
  if (routedEvents !== MEMORY_USERS * MEMORY_EVENTS_PER_USER) {
    throw new Error(
      `memory: ${routedEvents} events in history, expected ${MEMORY_USERS * MEMORY_EVENTS_PER_USER}`,
    );
  }
  const usedDelta = usedAfter - usedBefore;
  const historyBytes = usedDelta - ingressGrowth;
  const memory = table(
    ["measure", "bytes", "per user", "per event"],
    [
      [
        "used_memory delta (INFO memory)",
        fmt(usedDelta),
        fmt(usedDelta / MEMORY_USERS),
        fmt(usedDelta / routedEvents, 1),
      ],
      [
        "− ingress stream growth (MEMORY USAGE)",
        fmt(ingressGrowth),
        "",
        fmt(ingressGrowth / routedEvents, 1),
      ],
      [
        "= history",
        fmt(historyBytes),
        fmt(historyBytes / MEMORY_USERS),
        fmt(historyBytes / routedEvents, 1),
      ],
      [
        "history keys, MEMORY USAGE summed",
        fmt(historyUsage),
        fmt(historyUsage / MEMORY_USERS),
        fmt(historyUsage / routedEvents, 1),
      ],
    ],
  );

  console.log("\n## Push delivery with history on vs off\n");
  console.log(MACHINE);
  for (const note of [
    `two gateway bins, each pinned to core ${SERVER_CORE}, on streams and a key prefix of their own in one redis-server;`,
    `client (this process) and redis-server on core ${CLIENT_CORE}. history on = defaults (1000 events, 10m); off = GATEWAY_PUSH_HISTORY_SIZE=0.`,
    `per round a burst of pipelined XADDs (${PAYLOAD.length}-byte payloads): ${fmt(EVENTS)} events to 1 stream, ${fmt(FANOUT_EVENTS)} events to ${FANOUT_STREAMS} streams of one user;`,
    `${ROUNDS} rounds, on and off alternating (A B A B), after one ${fmt(WARM_UP_EVENTS)}-event warm-up burst each; medians.`,
    "events/s = events / (first XADD → last event received on every stream); routed/s = events / (first XADD → router position at the last);",
    "gateway CPU per event counts every thread of the gateway process until delivered and routed.",
  ]) {
    console.log(note);
  }
  console.log(
    `\n${table(["run", "events/round", "events/s", "deliveries/s", "routed/s", "gateway CPU µs/event"], rows)}\n`,
  );
  console.log(
    `${table(["round", "run", "events/s", "routed ms", "gateway CPU µs/event"], perRound)}\n`,
  );
  console.log(
    `Redis memory for history: ${fmt(MEMORY_USERS)} users × ${MEMORY_EVENTS_PER_USER} events (${PAYLOAD.length}-byte payloads, fields user_id, event_type, payload, request_id) routed by the history-on gateway:\n`,
  );
  console.log(`${memory}\n`);
} finally {
  closing = true;
  await run.cleanUp();
}

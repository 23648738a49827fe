import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { createAdapter } from "@socket.io/redis-streams-adapter";
import type { Redis } from "ioredis";
import { Server } from "socket.io";
import { io as connectSocket, type Socket } from "socket.io-client";
import {
  SubscribeEventsRequest,
  SubscribeEventsResponse,
} from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { frameOf } from "../runtime/grpc/grpc-frames.js";
import { SUBSCRIBE_EVENTS_PATH } from "../runtime/grpc/subscribe-events.js";
import {
  importGatewayKey,
  signSubscribeEventsRequest,
  verifyEvent,
} from "../runtime/kit/device-client.js";
import { gatewayEnv, putSession } from "../test/support/gateway.js";
import { newDeviceKey, vectors } from "../test/support/keys.js";
import { WireClient } from "./h2-wire.js";
import { cpuMicros, createRunCleanup, launchPinned, prepareRun } from "./processes.js";
import {
  fmt,
  interleave,
  machineFacts,
  median,
  percentile,
  ratio,
  settle,
  table,
} from "./report.js";

const { values: options } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    devices: { type: "string", default: "500" },
    events: { type: "string", default: "20000" },
    "fanout-events": { type: "string", default: "2000" },
    "latency-seconds": { type: "string", default: "5" },
    "cpu-prof": { type: "string" },
  },
});
const ROUNDS = Number(options.rounds);
const DEVICES = Number(options.devices);
const EVENTS = Number(options.events);
const FANOUT_EVENTS = Number(options["fanout-events"]);
const LATENCY_SECONDS = Number(options["latency-seconds"]);
/** Node flags that make both servers write CPU profiles into `--cpu-prof DIR`. */
const PROFILE_ARGS =
  options["cpu-prof"] === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", options["cpu-prof"]];
const FANOUT_USERS = 10;
for (const [name, value] of [
  ["--rounds", ROUNDS],
  ["--devices", DEVICES],
  ["--events", EVENTS],
  ["--fanout-events", FANOUT_EVENTS],
  ["--latency-seconds", LATENCY_SECONDS],
] as const) {
  if (!(Number.isInteger(value) && value >= 1))
    throw new Error(`${name} must be a whole number ≥ 1`);
}
if (EVENTS % DEVICES !== 0) throw new Error("--events must be a multiple of --devices");
if (DEVICES % FANOUT_USERS !== 0)
  throw new Error(`--devices must be a multiple of ${FANOUT_USERS}`);
if (FANOUT_EVENTS % FANOUT_USERS !== 0) {
  throw new Error(`--fanout-events must be a multiple of ${FANOUT_USERS}`);
}

const PAYLOAD_BYTES = 64;
/** Warm-up bursts: a few events per device, to get both servers' code hot. */
const WARM_UP_PER_USER = 2;
/** `XADD`s per pipeline: a burst goes out in a few large writes. */
const PIPELINE = 5000;
/** How long RSS is left to settle (GC, freed buffers) before it is read. */
const RSS_SETTLE_MS = 3000;
/** Open-loop sends happen on this tick. */
const TICK_MS = 10;
const ROUND_TIMEOUT_MS = 120_000;
const SERVER_CORE = "0";
const CLIENT_CORE = availableParallelism() >= 2 ? "1" : "0";
const ROOT = new URL("..", import.meta.url).pathname;
const GATEWAY_STREAM = "bench:client_events";
const SOCKET_IO_STREAM = "bench:socket.io";
// Taken before this process pins itself to one core, which would hide the others.
const MACHINE = machineFacts();

const run = createRunCleanup("push-vs-socketio", 300_000 + ROUNDS * 4 * 60_000);

/** Resident set size of `pid` in bytes, from /proc. */
function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]) * 1024;
}

/** A 64-byte payload that starts with the send time, so the receiver can time it. */
function stampedPayload(): string {
  return performance.now().toFixed(3).padEnd(PAYLOAD_BYTES, "x");
}

/** Devices connected to one server: what each received, and the round being waited for. */
interface Fleet {
  readonly users: readonly string[];
  readonly received: number[];
  /** Publish → receipt times in ms while `timing` is set. */
  readonly latencies: number[];
  timing: boolean;
  /** Set while a round waits for every device to reach `target`. */
  round?: { target: number; remaining: number; resolve: () => void; reject: (e: Error) => void };
  /** A gateway event kept to check its signature, outside the timed part. */
  lastEvent?: SubscribeEventsResponse;
  /** Disconnects every device. */
  close(): Promise<void>;
}

/** Counts one received event on device `index` (and times it when asked). */
function onEvent(fleet: Fleet, index: number, payload: string): void {
  if (fleet.timing) fleet.latencies.push(performance.now() - Number.parseFloat(payload));
  const received = ++fleet.received[index]!;
  const round = fleet.round;
  if (round !== undefined && received === round.target && --round.remaining === 0) round.resolve();
}

function deviceFailed(fleet: Fleet, message: string): void {
  if (fleet.round) fleet.round.reject(new Error(message));
  else if (!closing) console.error(message);
}

/** Resolves once every device of `fleet` received `perDevice` more events. */
function allReceived(fleet: Fleet, perDevice: number): Promise<void> {
  const before = fleet.received[0]!;
  if (fleet.received.some((count) => count !== before)) {
    throw new Error("devices out of step before a round");
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => done(new Error(`burst not delivered in ${ROUND_TIMEOUT_MS} ms`)),
      ROUND_TIMEOUT_MS,
    );
    function done(error?: Error): void {
      clearTimeout(timer);
      fleet.round = undefined;
      if (error) reject(error);
      else resolve();
    }
    fleet.round = {
      target: before + perDevice,
      remaining: fleet.received.length,
      resolve: () => done(),
      reject: done,
    };
  });
}

let closing = false;
const runId = randomUUID().slice(0, 8);

/**
 * Opens `users × perUser` gateway streams, each device its own session and
 * HTTP/2 connection. The devices speak gRPC through the wire-level client
 * (`bench/h2-wire.ts`), which costs this process far less per event than
 * grpc-js: with grpc-js, fan-out rounds left the gateway a third idle while
 * this process, on the other core, kept up.
 */
async function openGatewayFleet(
  redis: Redis,
  address: string,
  users: readonly string[],
  perUser: number,
): Promise<Fleet> {
  const clients: WireClient[] = [];
  let closed = false;
  const fleet: Fleet = {
    users,
    received: [],
    latencies: [],
    timing: false,
    close: async () => {
      closed = true;
      for (const client of clients) client.close();
    },
  };
  run.cleanups.push(() => (closed ? undefined : fleet.close()));
  for (const userId of users) {
    for (let i = 0; i < perUser; i++) {
      const index = fleet.received.length;
      const key = newDeviceKey();
      const deviceSessionId = `ds-${runId}-${userId}-${i}`;
      await putSession(redis, { deviceSessionId, userId, publicKeyText: key.publicKeyText });
      const request = signSubscribeEventsRequest(
        { deviceSessionId, requestId: `${runId}-${userId}-${i}`, timestampMs: Date.now() },
        key.privateKey,
      );
      const client = await WireClient.connect(address, SUBSCRIBE_EVENTS_PATH, 1);
      clients.push(client);
      fleet.received.push(-1);
      client.call(
        frameOf(SubscribeEventsRequest.encode(request).finish()),
        (ok) => {
          const ended = ok ? "ended" : "ended with an error status or a reset";
          if (!closing && !closed) deviceFailed(fleet, `a gateway stream of ${userId}: ${ended}`);
        },
        false,
        (message) => {
          const event = SubscribeEventsResponse.decode(message);
          if (event.eventType === "bench.tick") {
            if (index === 0) fleet.lastEvent = event;
            onEvent(fleet, index, Buffer.from(event.payload).toString("latin1"));
          } else {
            // The bootstrap event: the stream is registered in the hub.
            fleet.received[index]!++;
          }
        },
      );
    }
  }
  await untilConnected(fleet);
  return fleet;
}

/** Connects `users × perUser` Socket.IO devices, each its own session and websocket. */
async function openSocketIoFleet(
  redis: Redis,
  url: string,
  users: readonly string[],
  perUser: number,
): Promise<Fleet> {
  const sockets: Socket[] = [];
  let closed = false;
  const fleet: Fleet = {
    users,
    received: [],
    latencies: [],
    timing: false,
    close: async () => {
      closed = true;
      for (const socket of sockets) socket.disconnect();
    },
  };
  run.cleanups.push(() => (closed ? undefined : fleet.close()));
  for (const userId of users) {
    for (let i = 0; i < perUser; i++) {
      const index = fleet.received.length;
      const deviceSessionId = `sio-${runId}-${userId}-${i}`;
      // The same session hash the gateway reads; Socket.IO only uses user_id and status.
      await putSession(redis, { deviceSessionId, userId, publicKeyText: "unused" });
      const socket = connectSocket(url, {
        transports: ["websocket"],
        forceNew: true,
        reconnection: false,
        auth: { session_id: deviceSessionId },
      });
      sockets.push(socket);
      fleet.received.push(-1);
      socket.once("connect", () => {
        fleet.received[index]!++;
      });
      socket.on("push", (event: { payload: string }) => onEvent(fleet, index, event.payload));
      socket.on("connect_error", (error) => deviceFailed(fleet, `socket.io ${userId}: ${error}`));
      socket.on("disconnect", (reason) => {
        if (!closing && !closed) deviceFailed(fleet, `socket.io ${userId} disconnected: ${reason}`);
      });
    }
  }
  await untilConnected(fleet);
  // The rooms are joined in the server's connection handler, just after the client hears "connect".
  await settle(500);
  return fleet;
}

/** Waits until every device of `fleet` is connected and subscribed (its count reached 0). */
async function untilConnected(fleet: Fleet): Promise<void> {
  const start = Date.now();
  while (fleet.received.some((count) => count < 0)) {
    if (Date.now() - start > ROUND_TIMEOUT_MS) throw new Error("devices did not connect in time");
    await settle(20);
  }
}

/** Something that publishes an event for a user. */
interface Publisher {
  /** Publishes `count` events round robin over `users`; resolves once they are handed to Redis. */
  burst(users: readonly string[], count: number): Promise<void>;
  /** Publishes one event for `userId` now, stamped with the send time. */
  one(userId: string): void;
}

function gatewayPublisher(redis: Redis): Publisher {
  let sequence = 0;
  const fields = (userId: string) => [
    ...["user_id", userId, "event_type", "bench.tick"],
    ...["payload", stampedPayload(), "request_id", `${runId}-${sequence++}`],
  ];
  return {
    async burst(users, count) {
      for (let from = 0; from < count; from += PIPELINE) {
        const pipeline = redis.pipeline();
        for (let i = from; i < Math.min(count, from + PIPELINE); i++) {
          pipeline.xadd(GATEWAY_STREAM, "*", ...fields(users[i % users.length]!));
        }
        const replies = (await pipeline.exec()) ?? [];
        for (const [error] of replies) if (error) throw error;
      }
    },
    one(userId) {
      void redis.xadd(GATEWAY_STREAM, "*", ...fields(userId));
    },
  };
}

function socketIoPublisher(io: Server, redis: Redis): Publisher {
  let sequence = 0;
  const emit = (userId: string) =>
    io.to(`user:${userId}`).emit("push", {
      event_type: "bench.tick",
      payload: stampedPayload(),
      request_id: `${runId}-${sequence++}`,
    });
  return {
    async burst(users, count) {
      for (let i = 0; i < count; i++) emit(users[i % users.length]!);
      // The adapter sends each emit as an XADD without waiting: a PING behind them answers once all are in.
      await redis.ping();
    },
    one: emit,
  };
}

/** A server under test with its devices and publisher. */
interface Side {
  readonly label: string;
  readonly pid: number;
  readonly publisher: Publisher;
  fleet?: Fleet;
}

/** What one burst measured. */
interface RoundResult {
  readonly events: number;
  readonly deliveries: number;
  readonly deliveredMs: number;
  /** The server process's CPU per event, every thread. */
  readonly serverCpuMicros: number;
}

async function measureBurst(side: Side, events: number): Promise<RoundResult> {
  const fleet = side.fleet!;
  await settle(300);
  const cpuBefore = cpuMicros(side.pid);
  const delivered = allReceived(fleet, events / fleet.users.length);
  const start = performance.now();
  await side.publisher.burst(fleet.users, events);
  await delivered;
  const deliveredMs = performance.now() - start;
  return {
    events,
    deliveries: (events / fleet.users.length) * fleet.received.length,
    deliveredMs,
    serverCpuMicros: (cpuMicros(side.pid) - cpuBefore) / events,
  };
}

/** Sends `rate` events/s round robin over the fleet's users for `seconds`, timing every receipt. */
async function measureLatency(side: Side, rate: number, seconds: number): Promise<number[]> {
  const fleet = side.fleet!;
  const users = fleet.users;
  const total = Math.max(users.length, Math.round((rate * seconds) / users.length) * users.length);
  await settle(300);
  fleet.latencies.length = 0;
  fleet.timing = true;
  const delivered = allReceived(fleet, total / users.length);
  const start = performance.now();
  let sent = 0;
  while (sent < total) {
    // Open loop: catch up to the schedule, whatever the receipts are doing.
    const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate) + 1);
    for (; sent < due; sent++) side.publisher.one(users[sent % users.length]!);
    await settle(TICK_MS);
  }
  await delivered;
  fleet.timing = false;
  return fleet.latencies.slice();
}

const eventsPerSecond = (r: RoundResult) => r.events / (r.deliveredMs / 1000);
const deliveriesPerSecond = (r: RoundResult) => r.deliveries / (r.deliveredMs / 1000);
/** The share of its core the server was busy during a burst: well under 100% means the devices' side set the pace. */
const serverBusy = (r: RoundResult) => (r.serverCpuMicros * r.events) / (r.deliveredMs * 1000);

try {
  // This process (devices, publishers), redis-server and the build run on the other core.
  const testRedis = await prepareRun(run, CLIENT_CORE, ROOT);
  const redis = testRedis.client();
  run.cleanups.push(() => redis.quit());
  const gatewayRedis = testRedis.client();
  run.cleanups.push(() => gatewayRedis.quit());
  const socketIoRedis = testRedis.client();
  run.cleanups.push(() => socketIoRedis.disconnect());

  const gatewayServer = await launchPinned(run, {
    label: "gateway",
    core: SERVER_CORE,
    cwd: ROOT,
    args: [...PROFILE_ARGS, join(ROOT, "dist", "runtime", "bin.js")],
    env: gatewayEnv(testRedis, {
      GATEWAY_CLIENT_EVENTS_REDIS_STREAM: GATEWAY_STREAM,
      GATEWAY_SESSION_EVENTS_REDIS_STREAM: "bench:session_events",
      // A whole burst fits in each stream's queue however the writes are scheduled.
      GATEWAY_PUSH_STREAM_QUEUE_SIZE: String(Math.max(EVENTS, FANOUT_EVENTS) + 1000),
    }),
    ready: /authenticated gRPC listening on (\S+)[\s\S]*gateway ready/,
  });
  const socketIoServer = await launchPinned(run, {
    label: "socket.io",
    core: SERVER_CORE,
    cwd: ROOT,
    args: [...PROFILE_ARGS, "--import", "tsx", join(ROOT, "bench", "peer", "socketio-server.ts")],
    env: {
      REDIS_ADDR: testRedis.addr,
      REDIS_PASSWORD: testRedis.password,
      STREAM_NAME: SOCKET_IO_STREAM,
    },
    ready: /socket\.io listening on (\S+)/,
  });
  // The publisher is a Socket.IO server without a listener: its emits go only to the adapter's stream.
  const publisherIo = new Server({
    adapter: createAdapter(socketIoRedis, {
      streamName: SOCKET_IO_STREAM,
      maxLen: 1_000_000,
      onlyPlaintext: true,
      // It reads the stream too (and skips its own messages): a short block lets it stop soon.
      blockTimeInMs: 1000,
    }),
  });
  // Not attached to a listener, so `close()` has no engine to stop: closing the adapter ends its reads.
  run.cleanups.push(() => publisherIo.of("/").adapter.close());

  const gateway: Side = {
    label: "gateway",
    pid: gatewayServer.pid,
    publisher: gatewayPublisher(gatewayRedis),
  };
  const socketIo: Side = {
    label: "Socket.IO",
    pid: socketIoServer.pid,
    publisher: socketIoPublisher(publisherIo, socketIoRedis),
  };
  const sides = [gateway, socketIo];
  const open = (side: Side, users: readonly string[], perUser: number) =>
    side === gateway
      ? openGatewayFleet(redis, gatewayServer.address, users, perUser)
      : openSocketIoFleet(redis, `http://${socketIoServer.address}`, users, perUser);

  // (a): one device per user. Memory per device is read around connecting these.
  const singleUsers = Array.from({ length: DEVICES }, (_, i) => `user-a${i}`);
  const memory = new Map<Side, { before: number; after: number }>();
  await settle(RSS_SETTLE_MS);
  const rssBefore = sides.map((side) => rssBytes(side.pid));
  for (const side of sides) {
    console.error(`connecting ${fmt(DEVICES)} devices to ${side.label}…`);
    side.fleet = await open(side, singleUsers, 1);
  }
  await settle(RSS_SETTLE_MS);
  sides.forEach((side, i) => {
    memory.set(side, { before: rssBefore[i]!, after: rssBytes(side.pid) });
  });

  const onRound = (name: string, round: number, result: RoundResult) => {
    console.error(
      `round ${round + 1}/${ROUNDS} ${name}: ${fmt(result.events)} events in ${fmt(result.deliveredMs, 1)} ms` +
        ` (${fmt(eventsPerSecond(result))} events/s, ${fmt(deliveriesPerSecond(result))} deliveries/s)` +
        `, server CPU ${fmt(result.serverCpuMicros, 1)} µs/event`,
    );
  };
  const runWorkload = async (workload: string, users: readonly string[], events: number) => {
    const variants = sides.map((side) => ({
      name: `${workload}, ${side.label}`,
      round: (round: number) =>
        measureBurst(side, round < 0 ? WARM_UP_PER_USER * users.length : events),
    }));
    for (const variant of variants) await variant.round(-1);
    return { variants, results: await interleave(variants, ROUNDS, onRound) };
  };

  const workloadA = `(a) ${fmt(DEVICES)} users × 1 stream`;
  const a = await runWorkload(workloadA, singleUsers, EVENTS);
  // Half of each server's median rate, open loop, A B A B.
  const halfRates = a.variants.map(
    (variant) => median(a.results.get(variant.name)!.map(eventsPerSecond)) / 2,
  );
  const latency = await interleave(
    sides.map((side, i) => ({
      name: side.label,
      round: () => measureLatency(side, halfRates[i]!, LATENCY_SECONDS),
    })),
    ROUNDS,
    (name, round, latencies) =>
      console.error(
        `latency round ${round + 1}/${ROUNDS} ${name}: ${fmt(latencies.length)} events,` +
          ` p50 ${fmt(percentile(latencies, 50), 2)} ms, p99 ${fmt(percentile(latencies, 99), 2)} ms`,
      ),
  );
  const gatewayKey = importGatewayKey(vectors.gateway_key.public_key_base64url);
  await verifyEvent(gateway.fleet!.lastEvent!, gatewayKey);
  for (const side of sides) await side.fleet!.close();

  const fanoutUsers = Array.from({ length: FANOUT_USERS }, (_, i) => `user-b${i}`);
  const perUser = DEVICES / FANOUT_USERS;
  for (const side of sides) {
    console.error(`connecting ${FANOUT_USERS} users × ${perUser} devices to ${side.label}…`);
    side.fleet = await open(side, fanoutUsers, perUser);
  }
  const workloadB = `(b) ${FANOUT_USERS} users × ${perUser} streams`;
  const b = await runWorkload(workloadB, fanoutUsers, FANOUT_EVENTS);
  await verifyEvent(gateway.fleet!.lastEvent!, gatewayKey);

  const rows: string[][] = [];
  const perRound: string[][] = [];
  for (const [workload, { variants, results }] of [
    [workloadA, a],
    [workloadB, b],
  ] as const) {
    const [rg, rs] = variants.map((variant) => results.get(variant.name)!) as [
      RoundResult[],
      RoundResult[],
    ];
    const summary = (rounds: RoundResult[]) => ({
      events: rounds[0]!.events,
      rate: median(rounds.map(eventsPerSecond)),
      deliveries: median(rounds.map(deliveriesPerSecond)),
      cpu: median(rounds.map((r) => r.serverCpuMicros)),
      busy: median(rounds.map(serverBusy)),
    });
    const sg = summary(rg);
    const ss = summary(rs);
    for (const [name, s] of [
      [variants[0]!.name, sg],
      [variants[1]!.name, ss],
    ] as const) {
      rows.push([
        name,
        fmt(s.events),
        fmt(s.rate),
        fmt(s.deliveries),
        fmt(s.cpu, 1),
        `${fmt(s.busy * 100)}%`,
      ]);
    }
    const roundRatios = rg.map((r, i) => eventsPerSecond(r) / eventsPerSecond(rs[i]!));
    rows.push([
      `${workload}: gateway / Socket.IO`,
      "",
      ratio(median(roundRatios)),
      "",
      ratio(sg.cpu / ss.cpu),
      "",
    ]);
    for (let round = 0; round < ROUNDS; round++) {
      const g = rg[round]!;
      const s = rs[round]!;
      perRound.push(
        [String(round + 1), workload, fmt(eventsPerSecond(g)), fmt(eventsPerSecond(s))].concat(
          ratio(eventsPerSecond(g) / eventsPerSecond(s)),
          ratio(g.serverCpuMicros / s.serverCpuMicros),
        ),
      );
    }
  }

  const memoryRows = sides.map((side) => {
    const { before, after } = memory.get(side)!;
    return [
      side.label,
      fmt(before / 2 ** 20, 1),
      fmt(after / 2 ** 20, 1),
      fmt((after - before) / DEVICES / 1024, 1),
    ];
  });
  const [mg, ms] = sides.map((side) => {
    const { before, after } = memory.get(side)!;
    return (after - before) / DEVICES;
  }) as [number, number];
  memoryRows.push(["gateway / Socket.IO", "", "", ratio(mg / ms)]);

  const latencyRows: string[][] = sides.map((side, i) => {
    const rounds = latency.get(side.label)!;
    return [
      side.label,
      fmt(halfRates[i]!),
      fmt(median(rounds.map((l) => percentile(l, 50))), 2),
      fmt(median(rounds.map((l) => percentile(l, 99))), 2),
      rounds.map((l) => fmt(percentile(l, 99), 1)).join(" / "),
    ];
  });

  console.log("\n## Push: gateway vs Socket.IO 4 + redis-streams-adapter\n");
  console.log(MACHINE);
  for (const note of [
    `the gateway bin (history on, the default) and bench/peer/socketio-server.ts, each pinned to core ${SERVER_CORE}, on one redis-server;`,
    `devices and publishers (this process) and redis-server on core ${CLIENT_CORE}. Each device is its own connection with one stream:`,
    "a gRPC SubscribeEvents stream on its own HTTP/2 connection (bench/h2-wire.ts, a wire-level gRPC client), or a socket.io-client websocket.",
    "Gateway events are signed (and decoded by the devices); Socket.IO's are not.",
    `${ROUNDS} rounds per workload, gateway and Socket.IO alternating (A B A B), after one warm-up burst each; medians (ratio: median of the rounds' ratios).`,
    `events/s = events / (first publish → every device had its share); ${PAYLOAD_BYTES}-byte payloads; server CPU counts every thread of the server process;`,
    "server busy = server CPU / wall time of the burst: well under 100% means the devices' core, not the server, set the pace.",
  ]) {
    console.log(note);
  }
  console.log(
    `\n${table(["run", "events/round", "events/s", "deliveries/s", "server CPU µs/event", "server busy"], rows)}\n`,
  );
  console.log(
    `${table(["round", "workload", "gateway events/s", "Socket.IO events/s", "events/s ratio", "CPU/event ratio"], perRound)}\n`,
  );
  console.log(
    `Memory per device: server RSS with the ${fmt(DEVICES)} devices of (a) connected, minus RSS before, / ${fmt(DEVICES)}; each read ${RSS_SETTLE_MS / 1000} s after the last change:\n`,
  );
  console.log(
    `${table(["server", "RSS before MiB", "RSS after MiB", "KiB per device"], memoryRows)}\n`,
  );
  console.log(
    `Latency, (a), open loop at half of each server's median rate for ${LATENCY_SECONDS} s per round, every event timed publish → receipt; ${ROUNDS} rounds A B A B, medians:\n`,
  );
  console.log(
    `${table(["server", "events/s sent", "p50 ms", "p99 ms", "p99 by round ms"], latencyRows)}\n`,
  );
} finally {
  closing = true;
  await run.cleanUp();
}

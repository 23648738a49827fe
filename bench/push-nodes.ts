import { randomUUID } from "node:crypto";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import type { Redis } from "ioredis";
import { ChannelCredentials, createChannel, createClient } from "nice-grpc";
import { EdgeGatewayServiceDefinition } from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { signSubscribeEventsRequest } from "../runtime/kit/device-client.js";
import { publishClientEvent } from "../runtime/kit/publishers.js";
import { gatewayEnv, putSession } from "../test/support/gateway.js";
import { newDeviceKey } from "../test/support/keys.js";
import { metricValue, scrapeMetrics } from "../test/support/push.js";
import { startRedisCluster } from "../test/support/redis-cluster.js";
import { freePort } from "../test/support/redis-server.js";
import { cpuMicros, createRunCleanup, launchPinned, prepareRun } from "./processes.js";
import {
  fmt,
  interleave,
  machineFacts,
  median,
  parseModes,
  ratio,
  settle,
  table,
  wholeNumbers,
} from "./report.js";

const KNOWN_MODES = ["read", "routed"] as const;
type Mode = (typeof KNOWN_MODES)[number];

const { values: options } = parseArgs({
  options: {
    modes: { type: "string", default: KNOWN_MODES.join(",") },
    rounds: { type: "string", default: "3" },
    events: { type: "string", default: "5000" },
    rate: { type: "string", default: "1000" },
    streams: { type: "string", default: "200" },
    cluster: { type: "boolean", default: false },
  },
});
/** `--cluster`: the nodes share a Redis Cluster (3 masters) instead of one redis-server. */
const ON_CLUSTER = options.cluster;
const MODES = parseModes(options.modes, KNOWN_MODES);
const {
  rounds: ROUNDS,
  events: EVENTS,
  rate: RATE,
  streams: STREAMS,
} = wholeNumbers({
  rounds: options.rounds,
  events: options.events,
  rate: options.rate,
  streams: options.streams,
});
if (EVENTS % STREAMS !== 0) throw new Error("--events must be a multiple of --streams");

const NODE_LABELS = ["A", "B", "C"] as const;
const PAYLOAD = new Uint8Array(64).fill(0x78);
/** The warm-up round: a fifth of a round, at least one event per stream. */
const WARM_UP_EVENTS = Math.max(STREAMS, Math.round(EVENTS / 5 / STREAMS) * STREAMS);
/** gRPC connections the streams of node A are spread over. */
const CHANNELS = 4;
/** Publishing happens on this tick, open loop. */
const TICK_MS = 10;
/** Every round must be delivered well within this, or the run fails. */
const ROUND_TIMEOUT_MS = 120_000;
/** How long the history router gets to catch up after a round before its count is read anyway. */
const ROUTED_WAIT_MS = 15_000;
const SERVER_CORE = "0";
const CLIENT_CORE = availableParallelism() >= 2 ? "1" : "0";
const ROOT = new URL("..", import.meta.url).pathname;
const DELIVERED = "gateway_push_events_delivered_total";
const ROUTED = "gateway_history_entries_routed_total";
// Taken before this process pins itself to one core, which would hide the others.
const MACHINE = machineFacts();

const run = createRunCleanup("push-nodes", 180_000 + ROUNDS * MODES.length * 45_000);

/** A gateway node process under test. */
interface GatewayNode {
  readonly label: (typeof NODE_LABELS)[number];
  readonly pid: number;
  readonly grpc: string;
  readonly admin: string;
}

/** The streams open on node A: one per user, and what each received. */
interface StreamSet {
  readonly users: readonly string[];
  readonly received: number[];
  /** Set while a round waits for every stream to reach `target`. */
  round?: { target: number; remaining: number; resolve: () => void; reject: (e: Error) => void };
}

/** Three nodes of one mode sharing one ingress stream and key prefix. */
interface Cluster {
  readonly mode: Mode;
  readonly clientEvents: string;
  readonly nodes: readonly GatewayNode[];
  readonly streams: StreamSet;
}

/** One node's figures over one round. */
interface NodeRound {
  /** CPU time (every thread) from the first publish to the last delivery, in µs. */
  readonly cpuMicros: number;
  /** `gateway_push_events_delivered_total` growth over the round. */
  readonly delivered: number;
  /** `gateway_history_entries_routed_total` growth over the round (and its catch-up). */
  readonly routed: number;
}

/** What one round of one mode measured. */
interface RoundResult {
  /** From the first publish to the last delivery. */
  readonly windowMs: number;
  /** Nodes A, B, C in order. */
  readonly nodes: readonly NodeRound[];
}

let closing = false;
const runId = randomUUID().slice(0, 8);

/** Opens one stream per user on `node`, each of its own device session. */
async function openStreams(
  redis: Redis,
  node: GatewayNode,
  mode: Mode,
  keyPrefix: string,
): Promise<StreamSet> {
  const users = Array.from({ length: STREAMS }, (_, i) => `user-${i}`);
  const set: StreamSet = { users, received: users.map(() => -1) };
  const channels = Array.from({ length: CHANNELS }, () =>
    createChannel(node.grpc, ChannelCredentials.createInsecure(), {
      "grpc.use_local_subchannel_pool": 1,
    }),
  );
  const consumers: Promise<void>[] = [];
  const aborts: AbortController[] = [];
  // Cleanups run last first: cancel the streams, wait for their consumers, close the channels.
  run.cleanups.push(() => {
    for (const channel of channels) channel.close();
  });
  run.cleanups.push(() => Promise.allSettled(consumers));
  run.cleanups.push(() => {
    for (const abort of aborts) abort.abort();
  });
  for (const [index, userId] of users.entries()) {
    const key = newDeviceKey();
    const deviceSessionId = `ds-${runId}-${mode}-${index}`;
    await putSession(
      redis,
      { deviceSessionId, userId, publicKeyText: key.publicKeyText },
      keyPrefix,
    );
    const request = signSubscribeEventsRequest(
      { deviceSessionId, requestId: `${runId}-${mode}-${index}`, timestampMs: Date.now() },
      key.privateKey,
    );
    const client = createClient(EdgeGatewayServiceDefinition, channels[index % CHANNELS]!);
    const abort = new AbortController();
    aborts.push(abort);
    consumers.push(
      (async () => {
        let ended = "ended";
        try {
          for await (const event of client.subscribeEvents(request, { signal: abort.signal })) {
            if (event.eventType !== "bench.tick") {
              // The bootstrap event: the stream is registered in the hub.
              set.received[index]!++;
              continue;
            }
            const received = ++set.received[index]!;
            const round = set.round;
            if (round !== undefined && received === round.target && --round.remaining === 0) {
              round.resolve();
            }
          }
        } catch (error) {
          ended = (error as Error).message;
        }
        if (!closing) {
          const error = new Error(`the stream of ${userId} (${mode}) ended: ${ended}`);
          if (set.round) set.round.reject(error);
          else console.error(error.message);
        }
      })(),
    );
  }
  const start = Date.now();
  while (set.received.some((count) => count < 0)) {
    if (Date.now() - start > ROUND_TIMEOUT_MS) throw new Error(`${mode}: streams did not open`);
    await settle(20);
  }
  return set;
}

/** Resolves once every stream received `perStream` more events; rejects if one ends or time runs out. */
function allReceived(set: StreamSet, perStream: number): Promise<void> {
  const before = set.received[0]!;
  if (set.received.some((count) => count !== before)) {
    throw new Error("streams out of step before a round (an event was lost or duplicated)");
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      const short = set.received.filter((count) => count < before + perStream).length;
      done(new Error(`${short} stream(s) short of their events after ${ROUND_TIMEOUT_MS} ms`));
    }, ROUND_TIMEOUT_MS);
    function done(error?: Error): void {
      clearTimeout(timer);
      set.round = undefined;
      if (error) reject(error);
      else resolve();
    }
    set.round = {
      target: before + perStream,
      remaining: set.received.length,
      resolve: () => done(),
      reject: done,
    };
  });
}

/** Publishes `events` events round robin over the users at `RATE` per second, open loop. */
async function publishSteady(
  redis: Redis,
  cluster: Cluster,
  events: number,
  label: string,
): Promise<void> {
  const users = cluster.streams.users;
  const pending: Promise<unknown>[] = [];
  let failure: unknown;
  const start = performance.now();
  let sent = 0;
  while (sent < events) {
    const due = Math.min(events, Math.floor(((performance.now() - start) / 1000) * RATE) + 1);
    for (; sent < due; sent++) {
      const published = publishClientEvent(
        redis,
        {
          userId: users[sent % users.length]!,
          eventType: "bench.tick",
          payload: PAYLOAD,
          requestId: `${runId}-${label}-${sent}`,
        },
        { stream: cluster.clientEvents },
      );
      pending.push(published.catch((error: unknown) => (failure ??= error)));
    }
    if (sent < events) await settle(TICK_MS);
  }
  await Promise.all(pending);
  if (failure !== undefined) throw failure;
}

/** The two counters every node exposes, read from its admin `/metrics`. */
async function counters(node: GatewayNode): Promise<{ delivered: number; routed: number }> {
  const text = await scrapeMetrics(node.admin);
  return { delivered: metricValue(text, DELIVERED), routed: metricValue(text, ROUTED) };
}

/** One round: `events` events at `RATE`/s, every node's CPU over the event window, and the counters. */
async function measureRound(
  redis: Redis,
  cluster: Cluster,
  events: number,
  label: string,
): Promise<RoundResult> {
  const { nodes, streams } = cluster;
  await settle(500);
  const countersBefore = await Promise.all(nodes.map(counters));
  const delivered = allReceived(streams, events / streams.users.length);
  const cpuBefore = nodes.map((node) => cpuMicros(node.pid));
  const start = performance.now();
  const windowEnd = delivered.then(() => ({
    cpuAfter: nodes.map((node) => cpuMicros(node.pid)),
    windowMs: performance.now() - start,
  }));
  // A failed publish fails the round at once rather than at the delivery timeout.
  const [{ cpuAfter, windowMs }] = await Promise.all([
    windowEnd,
    publishSteady(redis, cluster, events, label),
  ]);
  // The history router may trail delivery: give it time, so its work stays out of the next round.
  const waitStart = Date.now();
  let countersAfter = await Promise.all(nodes.map(counters));
  const routedSum = () =>
    countersAfter.reduce((sum, after, i) => sum + after.routed - countersBefore[i]!.routed, 0);
  while (routedSum() < events && Date.now() - waitStart < ROUTED_WAIT_MS) {
    await settle(100);
    countersAfter = await Promise.all(nodes.map(counters));
  }
  // A stream that received more than its events shows here, not only at the next round.
  const expected = streams.received[0]!;
  if (streams.received.some((count) => count !== expected)) {
    throw new Error(`${cluster.mode}: a stream received an event twice`);
  }
  return {
    windowMs,
    nodes: nodes.map((_, i) => ({
      cpuMicros: cpuAfter[i]! - cpuBefore[i]!,
      delivered: countersAfter[i]!.delivered - countersBefore[i]!.delivered,
      routed: countersAfter[i]!.routed - countersBefore[i]!.routed,
    })),
  };
}

/** Which nodes routed into history over `rounds`, e.g. `B` or `A 1,000 / B 14,000`. */
function routedBy(rounds: readonly RoundResult[]): string {
  const totals = NODE_LABELS.map((_, i) => rounds.reduce((sum, r) => sum + r.nodes[i]!.routed, 0));
  const routers = NODE_LABELS.flatMap((label, i) =>
    totals[i]! > 0 ? [{ label, n: totals[i]! }] : [],
  );
  if (routers.length === 0) return "none";
  if (routers.length === 1) return routers[0]!.label;
  return routers.map(({ label, n }) => `${label} ${fmt(n)}`).join(" / ");
}

try {
  // This process (publisher, devices), redis-server and the build run on the other core from the nodes.
  const testRedis = await prepareRun(run, CLIENT_CORE, ROOT);
  // On a cluster its redis-server processes start from this process, so on its core.
  const redisCluster = ON_CLUSTER ? await startRedisCluster({ replicas: 0 }) : undefined;
  if (redisCluster !== undefined) run.cleanups.push(() => redisCluster.stop());
  const target = redisCluster ?? testRedis;
  // A Cluster client takes the same commands here (putSession's HSET, publishClientEvent's XADD).
  const redis = target.client() as Redis;
  run.cleanups.push(() => redis.quit());
  const publisher = target.client() as Redis;
  run.cleanups.push(() => publisher.quit());

  // All nodes sign with the same key; each mode's three nodes have an ingress stream and key prefix of their own.
  const baseEnv = gatewayEnv(target, ON_CLUSTER ? { GATEWAY_REDIS_CLUSTER: "true" } : {});
  const clusters: Cluster[] = [];
  for (const mode of MODES) {
    const clientEvents = `${mode}:client_events`;
    const keyPrefix = `${mode}:`;
    const nodes: GatewayNode[] = [];
    for (const label of NODE_LABELS) {
      const admin = `127.0.0.1:${await freePort()}`;
      const { pid, address: grpc } = await launchPinned(run, {
        label: `${mode} node ${label}`,
        core: SERVER_CORE,
        args: [join(ROOT, "dist", "runtime", "bin.js")],
        env: {
          ...baseEnv,
          GATEWAY_PUSH_FANOUT: mode,
          GATEWAY_ADMIN_HTTP_ADDR: admin,
          GATEWAY_CLIENT_EVENTS_REDIS_STREAM: clientEvents,
          GATEWAY_SESSION_EVENTS_REDIS_STREAM: `${mode}:session_events`,
          GATEWAY_REDIS_KEY_PREFIX: keyPrefix,
        },
        ready: /authenticated gRPC listening on (\S+)[\s\S]*gateway ready/,
      });
      nodes.push({ label, pid, grpc, admin });
    }
    const streams = await openStreams(redis, nodes[0]!, mode, keyPrefix);
    clusters.push({ mode, clientEvents, nodes, streams });
  }

  const variants = clusters.map((cluster) => ({
    name: cluster.mode,
    round: (round: number) =>
      measureRound(
        publisher,
        cluster,
        round < 0 ? WARM_UP_EVENTS : EVENTS,
        `${cluster.mode}-${round}`,
      ),
  }));
  // One shorter warm-up round of each (round -1), not measured.
  for (const variant of variants) await variant.round(-1);
  // A B A B: the modes alternate round by round.
  const results = await interleave(variants, ROUNDS, (name, round, result) => {
    const [a, b, c] = result.nodes;
    console.error(
      `round ${round + 1}/${ROUNDS} ${name}: ${fmt(EVENTS)} events in ${fmt(result.windowMs, 1)} ms;` +
        ` CPU A ${fmt(a!.cpuMicros / 1000, 1)} ms, B ${fmt(b!.cpuMicros / 1000, 1)} ms, C ${fmt(c!.cpuMicros / 1000, 1)} ms;` +
        ` routed A/B/C ${result.nodes.map((n) => fmt(n.routed)).join("/")}`,
    );
  });

  const cpuMs = (r: RoundResult, i: number) => r.nodes[i]!.cpuMicros / 1000;
  const cpuRatio = (r: RoundResult, i: number) => r.nodes[i]!.cpuMicros / r.nodes[0]!.cpuMicros;
  const rows: string[][] = [];
  const perRound: string[][] = [];
  const counterRows: string[][] = [];
  const ratioLines: string[] = [];
  for (const { mode } of clusters) {
    const rounds = results.get(mode)!;
    const bA = median(rounds.map((r) => cpuRatio(r, 1)));
    const cA = median(rounds.map((r) => cpuRatio(r, 2)));
    rows.push([
      mode,
      fmt(median(rounds.map((r) => r.windowMs)), 1),
      ...NODE_LABELS.map((_, i) => fmt(median(rounds.map((r) => cpuMs(r, i))), 1)),
      fmt(median(rounds.map((r) => r.nodes[0]!.cpuMicros / EVENTS)), 1),
      ratio(bA),
      ratio(cA),
      routedBy(rounds),
    ]);
    for (const [round, r] of rounds.entries()) {
      perRound.push([
        String(round + 1),
        mode,
        fmt(r.windowMs, 1),
        ...NODE_LABELS.map((_, i) => fmt(cpuMs(r, i), 1)),
        ratio(cpuRatio(r, 1)),
        ratio(cpuRatio(r, 2)),
        r.nodes.map((n) => fmt(n.routed)).join(" / "),
      ]);
    }
    for (const [i, label] of NODE_LABELS.entries()) {
      counterRows.push([
        mode,
        label,
        i === 0 ? fmt(STREAMS) : "0",
        fmt(rounds.reduce((sum, r) => sum + r.nodes[i]!.delivered, 0)),
        fmt(rounds.reduce((sum, r) => sum + r.nodes[i]!.routed, 0)),
      ]);
    }
    ratioLines.push(`${mode}: B/A cpu ratio: ${bA.toFixed(2)}, C/A: ${cA.toFixed(2)}`);
  }

  console.log(
    `\n## Push fan-out cost per gateway node, three nodes on ${ON_CLUSTER ? "a Redis Cluster (3 masters)" : "one Redis"}\n`,
  );
  console.log(MACHINE);
  for (const note of [
    `per mode three gateway bins (A, B, C), all pinned to core ${SERVER_CORE}, on an ingress stream and key prefix of their own in ${ON_CLUSTER ? "a 3-master Redis Cluster" : "one redis-server"};`,
    `publisher and devices (this process) and Redis on core ${CLIENT_CORE}. GATEWAY_PUSH_FANOUT=<mode> on all three; history on (defaults).`,
    `${fmt(STREAMS)} SubscribeEvents streams of ${fmt(STREAMS)} distinct users, all on node A (${CHANNELS} connections); B and C have none.`,
    `per round ${fmt(EVENTS)} events (${PAYLOAD.length}-byte payloads, round robin over the users) published with publishClientEvent at ${fmt(RATE)}/s, open loop;`,
    `every event must reach its stream, or the run fails. ${ROUNDS} rounds, modes alternating (A B A B), after one ${fmt(WARM_UP_EVENTS)}-event warm-up round each.`,
    "node CPU = user + system time of every thread of the node (/proc/<pid>/stat, 10 ms ticks) from the first publish to the last delivery;",
    "medians over rounds; B/A and C/A are medians of each round's ratio. history router = the node(s) whose gateway_history_entries_routed_total grew.",
  ]) {
    console.log(note);
  }
  console.log(
    `\n${table(["mode", "event window ms", "CPU A ms", "CPU B ms", "CPU C ms", "A CPU µs/event", "B/A", "C/A", "history router"], rows)}\n`,
  );
  console.log(
    `${table(["round", "mode", "window ms", "CPU A ms", "CPU B ms", "CPU C ms", "B/A", "C/A", "routed A / B / C"], perRound)}\n`,
  );
  console.log("Counters over the measured rounds (growth of each node's admin /metrics):\n");
  console.log(`${table(["mode", "node", "streams", DELIVERED, ROUTED], counterRows)}\n`);
  for (const line of ratioLines) console.log(line);
} finally {
  closing = true;
  await run.cleanUp();
}

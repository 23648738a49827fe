/**
 * Push fan-out on the real gateway: S open SubscribeEvents streams of one
 * user, over real gRPC connections, receive E events published with
 * `publishClientEvent`; the baseline is the same E events delivered to one
 * stream of another user. A third interleaved variant signs E events the way
 * the gateway does, as the reference for what one signature costs.
 *
 *   npx tsx bench/push-fanout.ts
 *
 * Each event is signed once however many streams receive it, so the cost per
 * delivery with S streams should be a small fraction of the single-stream
 * cost, and far below one signature.
 */
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { ChannelCredentials, createChannel, createClient } from "nice-grpc";
import { signEvent } from "../handlers/subscribe-events.js";
import {
  EdgeGatewayServiceDefinition,
  type SubscribeEventsResponse,
} from "../proto/gen/edgegateway/v1/edge_gateway.js";
import {
  importGatewayKey,
  signSubscribeEventsRequest,
  verifyEvent,
} from "../runtime/kit/device-client.js";
import { publishClientEvent } from "../runtime/kit/publishers.js";
import { putSession, startGateway } from "../test/support/gateway.js";
import { newDeviceKey, vectors } from "../test/support/keys.js";
import { startRedis } from "../test/support/redis-server.js";
import { removeTempDirs } from "../test/support/temp-dir.js";
import {
  fmt,
  interleave,
  mainThreadCpuMicros,
  median,
  printReport,
  ratio,
  settle,
  table,
  watchdog,
} from "./report.js";

const STREAMS = 200;
const EVENTS = 500;
const WARM_UP_EVENTS = 100;
const ROUNDS = 5;
/** Client connections the streams are spread over. */
const CHANNELS = 4;
/** Every round must finish well within this, or the benchmark fails. */
const ROUND_TIMEOUT_MS = 30_000;
const PAYLOAD = Buffer.alloc(64, "x");
/** The whole run is abandoned after this. */
const WATCHDOG_MS = 180_000;

/** One round's deliveries and what they cost. */
interface RoundResult {
  readonly deliveries: number;
  readonly wallMs: number;
  readonly processCpuMicros: number;
  readonly mainCpuMicros: number | undefined;
}

/** Streams of one user, counting what they receive. */
interface StreamGroup {
  readonly userId: string;
  readonly streams: StreamState[];
  /** Set while a round waits for every stream to reach its target. */
  round?: { remaining: number; resolve: () => void; reject: (error: Error) => void };
}

interface StreamState {
  received: number;
  target: number;
  last: SubscribeEventsResponse | undefined;
  ended: string | undefined;
}

async function measure(body: () => Promise<number>): Promise<RoundResult> {
  const mainBefore = mainThreadCpuMicros();
  const cpuBefore = process.cpuUsage();
  const start = performance.now();
  const deliveries = await body();
  const wallMs = performance.now() - start;
  const cpu = process.cpuUsage(cpuBefore);
  const mainAfter = mainThreadCpuMicros();
  return {
    deliveries,
    wallMs,
    processCpuMicros: cpu.user + cpu.system,
    mainCpuMicros:
      mainBefore === undefined || mainAfter === undefined ? undefined : mainAfter - mainBefore,
  };
}

const testRedis = await startRedis();
// Run last to first: the temporary directories (the signer key) go last.
const cleanups: (() => unknown)[] = [removeTempDirs, () => testRedis.stop()];
watchdog("push-fanout", WATCHDOG_MS, () => testRedis.stop());

try {
  const gateway = await startGateway(testRedis, {
    // The whole burst of one round fits in each stream's queue.
    env: { GATEWAY_PUSH_STREAM_QUEUE_SIZE: String(Math.max(256, 2 * EVENTS)) },
  });
  cleanups.push(() => gateway.stop());
  const publisher = testRedis.client();
  cleanups.push(() => publisher.quit());

  const channels = Array.from({ length: CHANNELS }, () =>
    createChannel(gateway.addresses.grpc, ChannelCredentials.createInsecure(), {
      "grpc.use_local_subchannel_pool": 1,
    }),
  );
  const clients = channels.map((channel) => createClient(EdgeGatewayServiceDefinition, channel));
  const consumers: Promise<void>[] = [];
  const aborts: AbortController[] = [];
  let closing = false;
  // Cleanups run last first: cancel every stream, wait for its consumer, close the connections.
  cleanups.push(() => {
    for (const channel of channels) channel.close();
  });
  cleanups.push(() => Promise.allSettled(consumers));
  cleanups.push(() => {
    closing = true;
    for (const abort of aborts) abort.abort();
  });
  const gatewayKey = importGatewayKey(vectors.gateway_key.public_key_base64url);
  const runId = randomUUID().slice(0, 8);
  let opened = 0;

  /** Opens `count` streams for a new user, each of its own device session. */
  async function openGroup(userId: string, count: number): Promise<StreamGroup> {
    const group: StreamGroup = { userId, streams: [] };
    for (let i = 0; i < count; i++) {
      const key = newDeviceKey();
      const deviceSessionId = `ds-${userId}-${i}`;
      await putSession(publisher, { deviceSessionId, userId, publicKeyText: key.publicKeyText });
      const request = signSubscribeEventsRequest(
        { deviceSessionId, requestId: `${runId}-sub-${userId}-${i}`, timestampMs: Date.now() },
        key.privateKey,
      );
      const state: StreamState = { received: 0, target: 1, last: undefined, ended: undefined };
      group.streams.push(state);
      const client = clients[opened++ % CHANNELS]!;
      const abort = new AbortController();
      aborts.push(abort);
      consumers.push(
        (async () => {
          try {
            for await (const event of client.subscribeEvents(request, { signal: abort.signal })) {
              state.received++;
              state.last = event;
              if (state.received === state.target && group.round !== undefined) {
                if (--group.round.remaining === 0) group.round.resolve();
              }
            }
            state.ended = "ended";
          } catch (error) {
            state.ended = (error as Error).message;
          }
          if (!closing) {
            group.round?.reject(new Error(`a stream of ${userId} ended: ${state.ended}`));
          }
        })(),
      );
    }
    return group;
  }

  /** Resolves once every stream of `group` received `events` more events. */
  function expect(group: StreamGroup, events: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => done(new Error(`${group.userId}: round not delivered in ${ROUND_TIMEOUT_MS} ms`)),
        ROUND_TIMEOUT_MS,
      );
      function done(error?: Error): void {
        clearTimeout(timer);
        group.round = undefined;
        if (error) reject(error);
        else resolve();
      }
      group.round = { remaining: group.streams.length, resolve: () => done(), reject: done };
      for (const state of group.streams) {
        if (state.ended !== undefined) done(new Error(`a stream ended: ${state.ended}`));
        state.target = state.received + events;
      }
    });
  }

  const fan = await openGroup("user-fanout", STREAMS);
  const single = await openGroup("user-single", 1);
  // Every stream has its bootstrap event: all are registered in the hub.
  await Promise.all(
    [...fan.streams, ...single.streams].map(async (state) => {
      const start = Date.now();
      while (state.received < 1) {
        if (Date.now() - start > ROUND_TIMEOUT_MS) throw new Error("bootstrap event missing");
        await settle(10);
      }
    }),
  );

  /** Publishes `events` events for the group's user and waits until every stream has them. */
  async function deliverRound(group: StreamGroup, round: number, events: number): Promise<number> {
    const delivered = expect(group, events);
    await Promise.all(
      Array.from({ length: events }, (_, i) =>
        publishClientEvent(publisher, {
          userId: group.userId,
          eventType: "bench.tick",
          payload: PAYLOAD,
          requestId: `${runId}-r${round}-${i}`,
        }),
      ),
    );
    await delivered;
    return group.streams.length * events;
  }

  const variants = [
    {
      name: `${STREAMS} streams of one user`,
      round: (round: number) =>
        measure(() => deliverRound(fan, round, round < 0 ? WARM_UP_EVENTS : EVENTS)),
    },
    {
      name: "1 stream (baseline)",
      round: (round: number) =>
        measure(() => deliverRound(single, round, round < 0 ? WARM_UP_EVENTS : EVENTS)),
    },
    {
      name: "Ed25519 event signing alone (reference)",
      round: (round: number) =>
        measure(async () => {
          for (let i = 0; i < EVENTS; i++) {
            signEvent(gateway.signer, {
              eventId: `${1_700_000_000_000 + i}-${round}`,
              eventType: "bench.tick",
              requestId: `${runId}-sign-${i}`,
              timestampMs: Date.now(),
              payload: PAYLOAD,
            });
          }
          return EVENTS;
        }),
    },
  ].map((variant) => ({
    ...variant,
    round: async (round: number) => {
      await settle(100);
      return variant.round(round);
    },
  }));

  // A shorter warm-up round of each (round -1), not measured.
  for (const variant of variants) await variant.round(-1);

  const results = await interleave(variants, ROUNDS, (name, round, result) => {
    console.error(
      `round ${round + 1}/${ROUNDS} ${name}: ${fmt(result.deliveries)} in ${fmt(result.wallMs, 1)} ms`,
    );
  });

  // Outside the timed part: the last event each stream got is correctly signed.
  for (const state of [...fan.streams, ...single.streams]) {
    if (state.last === undefined) throw new Error("a stream got no event");
    await verifyEvent(state.last, gatewayKey);
  }

  const perDelivery = (name: string) => {
    const rounds = results.get(name) ?? [];
    return {
      deliveries: rounds[0]?.deliveries ?? 0,
      wallMs: median(rounds.map((r) => r.wallMs)),
      rate: median(rounds.map((r) => r.deliveries / (r.wallMs / 1000))),
      wall: median(rounds.map((r) => (r.wallMs * 1000) / r.deliveries)),
      cpu: median(rounds.map((r) => r.processCpuMicros / r.deliveries)),
      main: median(rounds.map((r) => (r.mainCpuMicros ?? Number.NaN) / r.deliveries)),
    };
  };
  const many = perDelivery(variants[0]!.name);
  const one = perDelivery(variants[1]!.name);
  const signing = perDelivery(variants[2]!.name);
  const row = (name: string, m: typeof many) => [
    name,
    fmt(m.deliveries),
    fmt(m.wallMs, 1),
    fmt(m.rate),
    fmt(m.wall, 2),
    fmt(m.cpu, 2),
    fmt(m.main, 2),
  ];
  const ratioRow = (name: string, a: typeof many, b: typeof many) => [
    name,
    "",
    "",
    ratio(a.rate / b.rate),
    ratio(a.wall / b.wall, 3),
    ratio(a.cpu / b.cpu, 3),
    ratio(a.main / b.main, 3),
  ];
  const rows = [
    row(variants[0]!.name, many),
    row(variants[1]!.name, one),
    ratioRow(`${STREAMS} streams / 1 stream`, many, one),
    row("Ed25519 event signing alone (per signature)", signing),
    ratioRow(`${STREAMS} streams per delivery / one signature`, many, signing),
  ];

  printReport(
    "Push fan-out: one event to many streams",
    [
      `${EVENTS} events per round published with publishClientEvent; ${STREAMS} streams over ${CHANNELS} connections vs 1 stream;`,
      `${ROUNDS} interleaved rounds per variant; medians. Clients, gateway and redis-server on one machine:`,
      "per-delivery CPU includes the receiving clients' work; event-loop CPU is the one thread both share.",
    ],
    table(
      [
        "run",
        "deliveries/round",
        "wall ms/round",
        "deliveries/s",
        "wall µs/delivery",
        "process CPU µs/delivery",
        "event-loop CPU µs/delivery",
      ],
      rows,
    ),
  );
} finally {
  for (const cleanup of cleanups.reverse()) {
    try {
      await cleanup();
    } catch {
      // Best effort: everything else still gets stopped.
    }
  }
}

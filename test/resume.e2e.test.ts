/**
 * Resume (contract §12) against real Redis and real gRPC: a stream opened with
 * `last_event_id` gets, after its bootstrap, exactly the events addressed to
 * its session that it missed, in order, then live events — on the node it left
 * or on another — or a bootstrap that says continuity was lost.
 */
import * as http2 from "node:http2";
import type { Redis } from "ioredis";
import { Status } from "nice-grpc";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  SubscribeEventsRequest,
  SubscribeEventsResponse,
} from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { SUBSCRIBE_EVENTS_PATH } from "../runtime/grpc/subscribe-events.js";
import { publishClientEvent, publishSessionSnapshot } from "../runtime/kit/publishers.js";
import { createCleanup } from "./support/cleanup.js";
import { grpcFrame, grpcRequestHeaders } from "./support/grpc-wire.js";
import {
  hasValidGatewaySignature,
  metric,
  newDevice,
  type Outcome,
  pausedSubscription,
  type Subscription,
  startPushGateway,
  subscribe,
  subscribeRequest,
  type TestDevice,
  uniqueName,
} from "./support/push.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";
import { waitFor } from "./support/wait.js";

let redis: TestRedis;
let publisher: Redis;
const cleanup = createCleanup();

beforeAll(async () => {
  redis = await startRedis();
  publisher = redis.client();
});

afterEach(() => cleanup.run());

afterAll(async () => {
  publisher?.disconnect();
  await redis?.stop();
});

type PushGateway = Awaited<ReturnType<typeof startPushGateway>>;

/** Payload texts of the non-bootstrap events. */
function payloads(events: readonly SubscribeEventsResponse[]): string[] {
  return events
    .filter((event) => event.eventType !== "gateway.server_time")
    .map((event) => Buffer.from(event.payload).toString());
}

/** Publishes `texts` for the device's user (or only its session) and returns their ids. */
async function publishAll(
  node: PushGateway,
  device: TestDevice,
  texts: readonly string[],
  options: { onlySession?: string } = {},
): Promise<string[]> {
  const ids: string[] = [];
  for (const text of texts) {
    ids.push(
      await node.publish({
        userId: device.userId,
        ...(options.onlySession === undefined ? {} : { deviceSessionId: options.onlySession }),
        eventType: "test.note",
        payload: Buffer.from(text),
      }),
    );
  }
  return ids;
}

/** Opens a stream, waits for its bootstrap and returns it with the subscription. */
async function open(
  node: PushGateway,
  device: TestDevice,
  lastEventId = "",
): Promise<{ stream: Subscription; bootstrap: SubscribeEventsResponse }> {
  const stream = subscribe(node.grpc, subscribeRequest(device, { lastEventId }), cleanup);
  const [bootstrap] = await stream.received(1);
  expect(bootstrap!.eventType).toBe("gateway.server_time");
  expect(hasValidGatewaySignature(bootstrap!)).toBe(true);
  return { stream, bootstrap: bootstrap! };
}

/**
 * {@link open} as the device client does after its connections dropped: while
 * the node's own Redis connections are still coming back the call ends
 * `UNAVAILABLE replay store unavailable` (fail closed), and the device tries
 * again. Any other ending fails the test.
 */
async function openOnceRedisIsBack(
  node: PushGateway,
  device: TestDevice,
  lastEventId: string,
): Promise<{ stream: Subscription; bootstrap: SubscribeEventsResponse }> {
  for (let attempt = 1; ; attempt += 1) {
    const stream = subscribe(node.grpc, subscribeRequest(device, { lastEventId }), cleanup);
    const [bootstrap] = await stream.received(1).catch(() => []);
    if (bootstrap !== undefined) {
      expect(bootstrap.eventType).toBe("gateway.server_time");
      expect(hasValidGatewaySignature(bootstrap)).toBe(true);
      return { stream, bootstrap };
    }
    const ended = await stream.terminal();
    expect(ended).toEqual({ status: "UNAVAILABLE", details: "replay store unavailable" });
    if (attempt === 50) throw new Error("the node's Redis connections never came back");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * The device receives one event live on `node` and disconnects: resolves the
 * id of that event, the `last_event_id` it resumes with.
 */
async function receiveOneAndLeave(node: PushGateway, device: TestDevice): Promise<string> {
  const first = await open(node, device);
  const [seen] = await publishAll(node, device, ["seen"]);
  await first.stream.received(2);
  first.stream.cancel();
  await first.stream.terminal();
  return seen!;
}

/**
 * A device that received one event and left, `count` missed events of
 * 16 KiB, and a resume from its event whose client does not read; the
 * bootstrap echoed the resume point (recovered).
 */
async function stalledReplay(env: Record<string, string>, count: number) {
  const node = await startPushGateway(redis, publisher, cleanup, { env });
  const device = newDevice(uniqueName("user"));
  await node.snapshot(device, "active");
  const seen = await receiveOneAndLeave(node, device);
  const big = Array.from({ length: count }, (_, index) => `${index}`.padEnd(16_384, "."));
  const missedIds = await publishAll(node, device, big);
  await routed(node, missedIds.at(-1)!);
  const paused = pausedSubscription(
    node.grpc,
    subscribeRequest(device, { lastEventId: seen }),
    cleanup,
  );
  expect((await paused.bootstrap).eventId).toBe(seen);
  return { node, device, seen, missedIds, paused };
}

/** Waits until `node` has routed `id` into history (its router's position). */
async function routed(node: PushGateway, id: string, client: Redis = publisher): Promise<void> {
  await waitFor(`history routed through ${id}`, async () => {
    const position = await client.hget(`gateway:history-router:${node.clientEvents}`, "position");
    return position !== null && compareIds(position, id) >= 0;
  });
}

function compareIds(a: string, b: string): number {
  const [aMs, aSeq] = a.split("-").map(BigInt) as [bigint, bigint];
  const [bMs, bSeq] = b.split("-").map(BigInt) as [bigint, bigint];
  if (aMs !== bMs) return aMs < bMs ? -1 : 1;
  return aSeq === bSeq ? 0 : aSeq < bSeq ? -1 : 1;
}

/** The node's debug lines on how each resume went (§12), in order. */
function resumeLog(node: PushGateway): string[] {
  return node.gateway.logger.lines.filter((line) => line.startsWith("debug push resume "));
}

/**
 * SubscribeEvents on a bare HTTP/2 connection of its own that reads only when
 * the test says so: until then it takes no data, so its stream window runs
 * out and the gateway cannot send more (`windowLeft()` 0). `events` are the
 * ones read so far, the bootstrap first.
 */
function throttledSubscription(address: string, request: SubscribeEventsRequest) {
  const session = http2.connect(`http://${address}`);
  session.on("error", () => {});
  cleanup.defer(() => session.destroy());
  const stream = session.request(grpcRequestHeaders(SUBSCRIBE_EVENTS_PATH));
  stream.on("error", () => {});
  stream.end(grpcFrame(SubscribeEventsRequest.encode(request).finish()));
  const events: SubscribeEventsResponse[] = [];
  let readUpTo = 0;
  let unread = Buffer.alloc(0);
  stream.on("data", (chunk: Buffer) => {
    unread = Buffer.concat([unread, chunk]);
    while (unread.length >= 5 && unread.length >= 5 + unread.readUInt32BE(1)) {
      const end = 5 + unread.readUInt32BE(1);
      events.push(SubscribeEventsResponse.decode(unread.subarray(5, end)));
      unread = unread.subarray(end);
    }
    if (events.length >= readUpTo) stream.pause();
  });
  stream.pause();
  let ended: Outcome | undefined;
  stream.on("trailers", (trailers) => {
    const code = Number(trailers["grpc-status"]);
    const details = decodeURIComponent(String(trailers["grpc-message"] ?? ""));
    ended = { status: Status[code] ?? String(code), details };
  });
  stream.on("close", () => {
    ended ??= { status: "closed without a status", details: `RST_STREAM ${stream.rstCode}` };
  });
  return {
    events,
    /** The terminal status, once the stream ended. */
    get ended() {
      return ended;
    },
    /** Reads until at least `count` events arrived (a few more may come with the last chunk), then stops. */
    async readUntil(count: number): Promise<void> {
      readUpTo = count;
      stream.resume();
      await waitFor(`${count} events read`, () => events.length >= count);
    },
    /** Reads from now on. */
    readOn(): void {
      readUpTo = Number.POSITIVE_INFINITY;
      stream.resume();
    },
    /** Bytes the gateway may still send on this stream until the client reads more. */
    windowLeft: () => stream.state.localWindowSize,
  };
}

describe("a stream resumed with last_event_id", () => {
  it("replays exactly the missed events addressed to its session, then goes live", async () => {
    const node = await startPushGateway(redis, publisher, cleanup);
    const device = newDevice(uniqueName("user"));
    const sibling = newDevice(device.userId);
    const stranger = newDevice(uniqueName("user"));
    for (const one of [device, sibling, stranger]) await node.snapshot(one, "active");

    const seen = await receiveOneAndLeave(node, device);

    await publishAll(node, device, ["a", "b"]);
    await publishAll(node, sibling, ["only-sibling"], { onlySession: sibling.deviceSessionId });
    await publishAll(node, stranger, ["stranger"]);
    await publishAll(node, device, ["c"], { onlySession: device.deviceSessionId });
    const [lastMissed] = await publishAll(node, device, ["d"]);
    await routed(node, lastMissed!);

    const resumed = await open(node, device, seen);
    expect(resumed.bootstrap.eventId).toBe(seen);
    await resumed.stream.received(5);
    await publishAll(node, device, ["live"]);
    const events = await resumed.stream.received(6);
    expect(payloads(events)).toEqual(["a", "b", "c", "d", "live"]);
    expect(events.every(hasValidGatewaySignature)).toBe(true);
    expect(events.at(-2)!.eventId).toBe(lastMissed);
    expect(await metric(node.admin, 'gateway_push_resumes_total{result="recovered"}')).toBe(1);
    expect(resumeLog(node)).toEqual([
      expect.stringMatching(
        new RegExp(
          `^debug push resume recovered \\(user ${device.userId} session ${device.deviceSessionId} from ${seen}\\): history through \\d+-\\d+$`,
        ),
      ),
    ]);
  });

  it("recovers on another node that never saw the device", async () => {
    const name = uniqueName("pair");
    const left = await startPushGateway(redis, publisher, cleanup, { name });
    const right = await startPushGateway(redis, publisher, cleanup, { name });
    const device = newDevice(uniqueName("user"));
    await left.snapshot(device, "active");

    const first = await open(left, device);
    const [seen] = await publishAll(left, device, ["one"]);
    await first.stream.received(2);
    first.stream.cancel();
    await publishAll(left, device, ["two", "three"]);

    const resumed = await open(right, device, seen);
    expect(resumed.bootstrap.eventId).toBe(seen);
    await publishAll(left, device, ["four"]);
    expect(payloads(await resumed.stream.received(4))).toEqual(["two", "three", "four"]);
  });

  it("recovers at the live position with nothing missed, also with history off", async () => {
    const node = await startPushGateway(redis, publisher, cleanup, {
      env: { GATEWAY_PUSH_HISTORY_SIZE: "0" },
    });
    const device = newDevice(uniqueName("user"));
    await node.snapshot(device, "active");
    const seen = await receiveOneAndLeave(node, device);

    const resumed = await open(node, device, seen);
    expect(resumed.bootstrap.eventId).toBe(seen);
    await publishAll(node, device, ["y"]);
    expect(payloads(await resumed.stream.received(2))).toEqual(["y"]);
  });

  it("says continuity was lost with history off, and goes on live from its position", async () => {
    const node = await startPushGateway(redis, publisher, cleanup, {
      env: { GATEWAY_PUSH_HISTORY_SIZE: "0" },
    });
    const device = newDevice(uniqueName("user"));
    const watcher = newDevice(device.userId);
    for (const one of [device, watcher]) await node.snapshot(one, "active");
    const watching = await open(node, watcher);
    const seen = await receiveOneAndLeave(node, device);
    const [missed] = await publishAll(node, device, ["missed"]);
    // The node has read the missed event once another stream of the user got it.
    await watching.stream.received(3);

    const resumed = await open(node, device, seen);
    expect(resumed.bootstrap.eventId).not.toBe(seen);
    expect(resumed.bootstrap.eventId).toBe(missed);
    await publishAll(node, device, ["after"]);
    expect(payloads(await resumed.stream.received(2))).toEqual(["after"]);
    expect(await metric(node.admin, 'gateway_push_resumes_total{result="not_recovered"}')).toBe(1);
  });

  it("says continuity was lost when history was trimmed past last_event_id", async () => {
    const node = await startPushGateway(redis, publisher, cleanup, {
      env: { GATEWAY_PUSH_HISTORY_SIZE: "3" },
    });
    const device = newDevice(uniqueName("user"));
    await node.snapshot(device, "active");
    const seen = await receiveOneAndLeave(node, device);
    const ids = await publishAll(node, device, ["1", "2", "3", "4", "5"]);
    await routed(node, ids.at(-1)!);

    const resumed = await open(node, device, seen);
    expect(resumed.bootstrap.eventId).not.toBe(seen);
    expect(compareIds(resumed.bootstrap.eventId, ids.at(-1)!)).toBeGreaterThanOrEqual(0);
    await publishAll(node, device, ["live"]);
    expect(payloads(await resumed.stream.received(2))).toEqual(["live"]);
    // The history keeps the last 3 of the 6 events; its floor is the last one trimmed.
    expect(resumeLog(node)).toEqual([
      `debug push resume not recovered (user ${device.userId} session ${device.deviceSessionId} from ${seen}): ` +
        `the user's history was trimmed past ${seen} (floor ${ids[1]}); live from ${resumed.bootstrap.eventId}`,
    ]);
  });

  it("says continuity was lost for an id the gateway never issued", async () => {
    const node = await startPushGateway(redis, publisher, cleanup);
    const device = newDevice(uniqueName("user"));
    await node.snapshot(device, "active");
    const future = `${Date.now() + 3_600_000}-0`;
    const resumed = await open(node, device, future);
    expect(resumed.bootstrap.eventId).not.toBe(future);
    await publishAll(node, device, ["live"]);
    expect(payloads(await resumed.stream.received(2))).toEqual(["live"]);
    expect(resumeLog(node)).toEqual([
      `debug push resume not recovered (user ${device.userId} session ${device.deviceSessionId} from ${future}): ` +
        `${future} is after this node's position and not in the ingress stream; live from ${resumed.bootstrap.eventId}`,
    ]);
  });

  it("says continuity was lost once the history expired", async () => {
    const node = await startPushGateway(redis, publisher, cleanup, {
      env: { GATEWAY_PUSH_HISTORY_TTL: "300ms" },
    });
    const device = newDevice(uniqueName("user"));
    await node.snapshot(device, "active");
    const seen = await receiveOneAndLeave(node, device);
    const [missed] = await publishAll(node, device, ["missed"]);
    await routed(node, missed!);
    await waitFor("the history to expire", async () => {
      return (await publisher.exists(`gateway:history:{${device.userId}}`)) === 0;
    });

    const resumed = await open(node, device, seen);
    expect(resumed.bootstrap.eventId).not.toBe(seen);
  });

  it("says continuity was lost after Redis restarted without its data", async () => {
    const own = await startRedis();
    cleanup.defer(() => own.stop());
    let client = own.client();
    cleanup.defer(() => client.disconnect());
    const node = await startPushGateway(own, client, cleanup);
    const device = newDevice(uniqueName("user"));
    await node.snapshot(device, "active");
    const seen = await receiveOneAndLeave(node, device);
    await routed(node, seen, client);

    client.disconnect();
    await own.kill();
    await own.restart();
    client = own.client();
    const snapshot = (one: TestDevice) =>
      publishSessionSnapshot(
        client,
        {
          deviceSessionId: one.deviceSessionId,
          userId: one.userId,
          clientPublicKey: one.publicKeyText,
          status: "active",
        },
        { stream: node.sessionEvents },
      );
    await snapshot(device);
    const republish = (text: string) =>
      publishClientEvent(
        client,
        { userId: device.userId, eventType: "test.note", payload: Buffer.from(text) },
        { stream: node.clientEvents },
      );
    const [lost] = [await republish("after-restart")];

    // The node reads again (its reader reconnects); resumes from before the
    // restart are never presented as recovered.
    const watcher = newDevice(device.userId);
    await snapshot(watcher);
    await expect
      .poll(
        async () => {
          const probe = subscribe(node.grpc, subscribeRequest(watcher), cleanup);
          const [bootstrap] = await probe.received(1).catch(() => [undefined]);
          probe.cancel();
          return bootstrap?.eventId;
        },
        { timeout: 15_000, interval: 100 },
      )
      .toBe(lost);
    const resumed = await open(node, device, seen);
    expect(resumed.bootstrap.eventId).not.toBe(seen);
    const [live] = [await republish("live")];
    const events = await resumed.stream.received(2);
    expect(events[1]!.eventId).toBe(live);
  });

  it("ends open streams UNAVAILABLE when client events were trimmed before the node read them, and the device then resumes", async () => {
    const node = await startPushGateway(redis, publisher, cleanup);
    const device = newDevice(uniqueName("user"));
    await node.snapshot(device, "active");
    const { stream, bootstrap } = await open(node, device);

    // Every connection but this one drops; before the node's reader is back,
    // events are added and trimmed away on the same connection.
    const admin = redis.client();
    cleanup.defer(() => admin.disconnect());
    await admin.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes");
    const fields = ["user_id", device.userId, "event_type", "test.note", "payload", "gone"];
    await admin
      .multi()
      .xadd(node.clientEvents, "*", ...fields)
      .xadd(node.clientEvents, "*", ...fields)
      .xtrim(node.clientEvents, "MAXLEN", 0)
      .exec();

    expect(await stream.terminal()).toEqual({
      status: "UNAVAILABLE",
      details: "push stream interrupted: events may have been lost; reconnect to resume",
    });
    expect(await metric(node.admin, 'gateway_push_stream_closes_total{reason="interrupted"}')).toBe(
      1,
    );
    // The history router copied them (it reads the ingress too): the device
    // resumes and gets them, or is told it cannot; never a silent gap.
    const resumed = await openOnceRedisIsBack(node, device, bootstrap.eventId);
    if (resumed.bootstrap.eventId === bootstrap.eventId) {
      expect(payloads(await resumed.stream.received(3))).toEqual(["gone", "gone"]);
    }
  });

  // Replay is paced by the transport (§12): 160 events of 8 KiB are many
  // HTTP/2 windows. Each time the client stops reading, the gateway's writes
  // wait until it reads again, and live events published meanwhile wait in
  // the stream's queue behind the replay (fewer than the queue holds).
  it("paces a replay of ten times the queue size to a client that reads intermittently", async () => {
    const node = await startPushGateway(redis, publisher, cleanup, {
      env: { GATEWAY_PUSH_STREAM_QUEUE_SIZE: "16" },
    });
    const device = newDevice(uniqueName("user"));
    await node.snapshot(device, "active");
    const seen = await receiveOneAndLeave(node, device);
    const texts = Array.from({ length: 160 }, (_, index) => `m${index}:`.padEnd(8_192, "."));
    const missedIds = await publishAll(node, device, texts);
    await routed(node, missedIds.at(-1)!);

    const client = throttledSubscription(
      node.grpc,
      subscribeRequest(device, { lastEventId: seen }),
    );
    /** Live events published while the gateway cannot write to the client, once queued. */
    const publishWhileBlocked = async (prefix: string) => {
      await waitFor("the gateway's writes to wait on the client", () => client.windowLeft() === 0);
      const queued = await metric(node.admin, "gateway_push_events_delivered_total");
      const live = Array.from({ length: 5 }, (_, index) => `${prefix}${index}`);
      const ids = await publishAll(node, device, live);
      await waitFor("the live events queued behind the replay", async () => {
        return (
          (await metric(node.admin, "gateway_push_events_delivered_total")) >= queued + ids.length
        );
      });
      return { live, ids };
    };

    // Nothing read at first, not even the bootstrap.
    const first = await publishWhileBlocked("stalled");
    expect(client.events).toEqual([]);
    // Part of the replay, then another stall in the middle of it.
    await client.readUntil(41);
    const second = await publishWhileBlocked("mid-replay");
    expect(client.events.length).toBeLessThan(1 + texts.length);
    client.readOn();
    // A last event: once it arrived, any repeat of an earlier one would have too.
    const [lastId] = await publishAll(node, device, ["last"]);
    await waitFor("the last event", () => client.events.at(-1)?.eventId === lastId);

    const [bootstrap, ...got] = client.events;
    expect(bootstrap!.eventType).toBe("gateway.server_time");
    expect(bootstrap!.eventId).toBe(seen);
    expect(got.map((event) => event.eventId)).toEqual([
      ...missedIds,
      ...first.ids,
      ...second.ids,
      lastId,
    ]);
    expect(payloads(got)).toEqual([...texts, ...first.live, ...second.live, "last"]);
    expect(client.events.every(hasValidGatewaySignature)).toBe(true);
    expect(client.ended).toBeUndefined();
    expect(await metric(node.admin, 'gateway_push_stream_closes_total{reason="overflow"}')).toBe(0);
    expect(await metric(node.admin, 'gateway_push_resumes_total{result="recovered"}')).toBe(1);
  });

  it("overflows a replay whose client stops reading, and that client can resume again", async () => {
    // More than an HTTP/2 window of missed events: the replay cannot all be written.
    const { node, device, missedIds, paused } = await stalledReplay(
      { GATEWAY_PUSH_STREAM_QUEUE_SIZE: "16" },
      24,
    );
    // Live events wait in the stream's queue behind the stalled replay, until it overflows.
    const live: string[] = [];
    while (
      (await metric(node.admin, 'gateway_push_stream_closes_total{reason="overflow"}')) === 0
    ) {
      if (live.length > 200) throw new Error("the stalled stream never overflowed");
      live.push(...(await publishAll(node, device, [`live${live.length}`])));
    }
    paused.resume();
    expect(await paused.status).toEqual({
      status: "RESOURCE_EXHAUSTED",
      details: "push stream overflowed",
    });
    const got = paused.events.slice(1);
    const all = [...missedIds, ...live];
    expect(got.map((event) => event.eventId)).toEqual(all.slice(0, got.length));

    const again = await open(node, device, paused.events.at(-1)!.eventId);
    expect(again.bootstrap.eventId).toBe(paused.events.at(-1)!.eventId);
    const rest = await again.stream.received(1 + all.length - got.length);
    expect(rest.slice(1).map((event) => event.eventId)).toEqual(all.slice(got.length));
  });

  // The replay is read from history page by page as the client takes it.
  // Events for another session of the same user are in the same history
  // (and trim it) but never in this stream's queue, so the only thing that
  // can end this stream is the trim overtaking its replay.
  it("ends a replay that history was trimmed past as interrupted, and the next resume says so", async () => {
    // 2.4 MiB, far more than the HTTP/2 windows and buffers between the
    // gateway and a client that does not read: the replay stalls on flow
    // control. Recovered when it began: every missed event was in history then.
    const { node, device, seen, missedIds, paused } = await stalledReplay(
      { GATEWAY_PUSH_STREAM_QUEUE_SIZE: "4", GATEWAY_PUSH_HISTORY_SIZE: "200" },
      150,
    );
    const others = await publishAll(
      node,
      device,
      Array.from({ length: 250 }, (_, index) => `other${index}`),
      { onlySession: "another-session" },
    );
    await routed(node, others.at(-1)!);
    paused.resume();
    expect(await paused.status).toEqual({
      status: "UNAVAILABLE",
      details: "push stream interrupted: events may have been lost; reconnect to resume",
    });
    // What it got is a gapless start of the missed events, and not all of them.
    const got = paused.events.slice(1).map((event) => event.eventId);
    expect(got).toEqual(missedIds.slice(0, got.length));
    expect(got.length).toBeLessThan(missedIds.length);
    const closes = (reason: string) =>
      metric(node.admin, `gateway_push_stream_closes_total{reason="${reason}"}`);
    expect(await closes("interrupted")).toBe(1);
    expect(await closes("overflow")).toBe(0);
    const warning = `warn push replay interrupted: history trimmed past ${got.at(-1) ?? seen} during replay (user ${device.userId} session ${device.deviceSessionId})`;
    expect(node.gateway.logger.lines).toContain(warning);

    // Resuming after the last event it got cannot be recovered: the rest is gone.
    const last = got.at(-1) ?? seen;
    const again = await open(node, device, last);
    expect(again.bootstrap.eventId).not.toBe(last);
  });

  it("never misses or repeats an event at the seam while events keep coming", async () => {
    const name = uniqueName("seam");
    const nodes = [
      await startPushGateway(redis, publisher, cleanup, { name }),
      await startPushGateway(redis, publisher, cleanup, { name }),
    ];
    const device = newDevice(uniqueName("user"));
    await nodes[0]!.snapshot(device, "active");

    let published = 0;
    let publishing = true;
    const publisherLoop = (async () => {
      while (publishing) {
        await nodes[0]!.publish({
          userId: device.userId,
          eventType: "test.seq",
          payload: Buffer.from(String(published)),
        });
        published++;
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();

    const received: number[] = [];
    let last = "";
    for (let round = 0; round < 12; round++) {
      const node = nodes[round % 2]!;
      const { stream, bootstrap } = await open(node, device, last);
      if (last !== "") expect(bootstrap.eventId).toBe(last);
      const before = stream.events.length;
      await stream.received(before + 5);
      stream.cancel();
      await stream.terminal();
      const got = stream.events.slice(1);
      for (const event of got) received.push(Number(Buffer.from(event.payload).toString()));
      last = stream.events.at(-1)!.eventId;
    }
    publishing = false;
    await publisherLoop;
    expect(received).toEqual(
      Array.from({ length: received.length }, (_, index) => index + received[0]!),
    );
  });
});

/** A small deterministic PRNG, so a failing sequence can be replayed from its seed. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("resume under a random schedule", () => {
  const seed = Number(process.env.RESUME_SEED ?? Date.now() % 1_000_000);

  it(`recovered means exactly the missing events, in order; otherwise the signal (seed ${seed})`, async () => {
    const random = mulberry32(seed);
    const name = uniqueName("random");
    // Small history and a short TTL, so trims and expiry happen within the run.
    const env = { GATEWAY_PUSH_HISTORY_SIZE: "12", GATEWAY_PUSH_HISTORY_TTL: "700ms" };
    const nodes = [
      await startPushGateway(redis, publisher, cleanup, { name, env }),
      await startPushGateway(redis, publisher, cleanup, { name, env }),
    ];
    const device = newDevice(uniqueName("user"));
    const sibling = newDevice(device.userId);
    const other = newDevice(uniqueName("user"));
    for (const one of [device, sibling, other]) await nodes[0]!.snapshot(one, "active");

    /** Every event published for the device's session (user-wide or its own), in id order. */
    const addressed: { id: string; text: string }[] = [];
    let counter = 0;
    const publishSome = async (count: number) => {
      for (let index = 0; index < count; index++) {
        const text = `e${counter++}`;
        const pick = random();
        if (pick < 0.15) {
          await nodes[0]!.publish({
            userId: other.userId,
            eventType: "test.n",
            payload: Buffer.from(text),
          });
        } else if (pick < 0.3) {
          await nodes[1]!.publish({
            userId: device.userId,
            deviceSessionId: sibling.deviceSessionId,
            eventType: "test.n",
            payload: Buffer.from(text),
          });
        } else {
          const own = pick < 0.45;
          const id = await nodes[0]!.publish({
            userId: device.userId,
            ...(own ? { deviceSessionId: device.deviceSessionId } : {}),
            eventType: "test.n",
            payload: Buffer.from(text),
          });
          addressed.push({ id, text });
        }
      }
    };
    const after = (position: string) =>
      addressed.filter((event) => compareIds(event.id, position) > 0).map((event) => event.text);

    let last = "";
    const outcomes = { recovered: 0, lost: 0 };
    for (let round = 0; round < 16; round++) {
      const node = nodes[Math.floor(random() * nodes.length)]!;
      const { stream, bootstrap } = await open(node, device, last);
      const reference = bootstrap.eventId;
      if (last !== "") {
        if (reference === last) outcomes.recovered++;
        else outcomes.lost++;
      }
      // Live events while connected, then everything after the reference point
      // must have arrived, exactly, in order.
      await publishSome(Math.floor(random() * 6));
      const expected = after(reference);
      const got = await stream.received(1 + expected.length);
      expect(payloads(got)).toEqual(expected);
      stream.cancel();
      await stream.terminal();
      expect(payloads(stream.events)).toEqual(expected);
      last = stream.events.at(-1)!.eventId;

      // Away: maybe events (sometimes more than the history holds), maybe long
      // enough for the history to expire.
      await publishSome(Math.floor(random() * 18));
      if (random() < 0.2) {
        await new Promise((resolve) => setTimeout(resolve, 900));
      }
    }
    // Both paths ran (the schedule makes trims and expiry likely, not certain).
    console.info(
      `resume schedule seed ${seed}: ${outcomes.recovered} recovered, ${outcomes.lost} lost`,
    );
    expect(outcomes.recovered).toBeGreaterThan(0);
    expect(outcomes.recovered + outcomes.lost).toBe(15);
  }, 120_000);
});

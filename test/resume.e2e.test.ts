/**
 * Resume (contract §12) against real Redis and real gRPC: a stream opened with
 * `last_event_id` gets, after its bootstrap, exactly the events addressed to
 * its session that it missed, in order, then live events — on the node it left
 * or on another — or a bootstrap that says continuity was lost.
 */
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { SubscribeEventsResponse } from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { createCleanup } from "./support/cleanup.js";
import {
  hasValidGatewaySignature,
  metric,
  newDevice,
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

/** Waits until `node` has routed `id` into history (its router's position). */
async function routed(node: PushGateway, id: string): Promise<void> {
  await waitFor(`history routed through ${id}`, async () => {
    const position = await publisher.hget(
      `gateway:history-router:${node.clientEvents}`,
      "position",
    );
    return position !== null && compareIds(position, id) >= 0;
  });
}

function compareIds(a: string, b: string): number {
  const [aMs, aSeq] = a.split("-").map(BigInt) as [bigint, bigint];
  const [bMs, bSeq] = b.split("-").map(BigInt) as [bigint, bigint];
  if (aMs !== bMs) return aMs < bMs ? -1 : 1;
  return aSeq === bSeq ? 0 : aSeq < bSeq ? -1 : 1;
}

describe("a stream resumed with last_event_id", () => {
  it("replays exactly the missed events addressed to its session, then goes live", async () => {
    const node = await startPushGateway(redis, publisher, cleanup);
    const device = newDevice(uniqueName("user"));
    const sibling = newDevice(device.userId);
    const stranger = newDevice(uniqueName("user"));
    for (const one of [device, sibling, stranger]) await node.snapshot(one, "active");

    const first = await open(node, device);
    const [seen] = await publishAll(node, device, ["before"]);
    await first.stream.received(2);
    first.stream.cancel();
    await first.stream.terminal();

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
    const first = await open(node, device);
    const [seen] = await publishAll(node, device, ["x"]);
    await first.stream.received(2);
    first.stream.cancel();

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
    const first = await open(node, device);
    const [seen] = await publishAll(node, device, ["x"]);
    await first.stream.received(2);
    first.stream.cancel();
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
    const first = await open(node, device);
    const [seen] = await publishAll(node, device, ["kept?"]);
    await first.stream.received(2);
    first.stream.cancel();
    const ids = await publishAll(node, device, ["1", "2", "3", "4", "5"]);
    await routed(node, ids.at(-1)!);

    const resumed = await open(node, device, seen);
    expect(resumed.bootstrap.eventId).not.toBe(seen);
    expect(compareIds(resumed.bootstrap.eventId, ids.at(-1)!)).toBeGreaterThanOrEqual(0);
    await publishAll(node, device, ["live"]);
    expect(payloads(await resumed.stream.received(2))).toEqual(["live"]);
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
  });

  it("says continuity was lost once the history expired", async () => {
    const node = await startPushGateway(redis, publisher, cleanup, {
      env: { GATEWAY_PUSH_HISTORY_TTL: "300ms" },
    });
    const device = newDevice(uniqueName("user"));
    await node.snapshot(device, "active");
    const first = await open(node, device);
    const [seen] = await publishAll(node, device, ["x"]);
    await first.stream.received(2);
    first.stream.cancel();
    await first.stream.terminal();
    const [missed] = await publishAll(node, device, ["missed"]);
    await routed(node, missed!);
    await waitFor("the history to expire", async () => {
      return (await publisher.exists(`gateway:history:{${device.userId}}`)) === 0;
    });

    const resumed = await open(node, device, seen);
    expect(resumed.bootstrap.eventId).not.toBe(seen);
  });

  it("paces a replay of ten times the queue size to a client that reads", async () => {
    const node = await startPushGateway(redis, publisher, cleanup, {
      env: { GATEWAY_PUSH_STREAM_QUEUE_SIZE: "16" },
    });
    const device = newDevice(uniqueName("user"));
    await node.snapshot(device, "active");
    const first = await open(node, device);
    const [seen] = await publishAll(node, device, ["start"]);
    await first.stream.received(2);
    first.stream.cancel();
    const texts = Array.from({ length: 160 }, (_, index) => `m${index}`);
    const ids = await publishAll(node, device, texts);
    await routed(node, ids.at(-1)!);

    const resumed = await open(node, device, seen);
    expect(resumed.bootstrap.eventId).toBe(seen);
    expect(payloads(await resumed.stream.received(161))).toEqual(texts);
    expect(resumed.stream.ended).toBeUndefined();
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

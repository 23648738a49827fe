/**
 * Routed fan-out (contract §13, `GATEWAY_PUSH_FANOUT=routed`) against real
 * Redis and real gRPC: the history router publishes each event on its user's
 * channel and only nodes holding that user's streams receive it; a stream's
 * seam meets history and live with no gap and no duplicate; a missed message
 * or a lost subscriber connection ends the streams it concerns, to resume.
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

const INTERRUPTED = {
  status: "UNAVAILABLE",
  details: "push stream interrupted: events may have been lost; reconnect to resume",
};

/** `count` nodes sharing one pair of streams (routed unless told). */
async function startNodes(count: number, fanout = "routed"): Promise<PushGateway[]> {
  const name = uniqueName(fanout);
  const nodes: PushGateway[] = [];
  for (let index = 0; index < count; index++) {
    nodes.push(
      await startPushGateway(redis, publisher, cleanup, {
        name,
        env: { GATEWAY_PUSH_FANOUT: fanout },
      }),
    );
  }
  return nodes;
}

/** Opens a stream, waits for its signed bootstrap and returns both. */
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

async function publishAll(
  node: PushGateway,
  device: TestDevice,
  texts: readonly string[],
): Promise<string[]> {
  const ids: string[] = [];
  for (const text of texts) {
    ids.push(
      await node.publish({
        userId: device.userId,
        eventType: "test.note",
        payload: Buffer.from(text),
      }),
    );
  }
  return ids;
}

function payloads(events: readonly SubscribeEventsResponse[]): string[] {
  return events
    .filter((event) => event.eventType !== "gateway.server_time")
    .map((event) => Buffer.from(event.payload).toString());
}

/** Sum of a series over the nodes. */
async function total(nodes: readonly PushGateway[], series: string): Promise<number> {
  let sum = 0;
  for (const node of nodes) sum += await metric(node.admin, series);
  return sum;
}

describe("routed fan-out on one Redis", () => {
  it("delivers each event once, signed and in order, and only to the node holding the user's stream", async () => {
    const nodes = await startNodes(3);
    const [holder, ...others] = nodes as [PushGateway, PushGateway, PushGateway];
    const device = newDevice(uniqueName("user"));
    await holder.snapshot(device, "active");
    const { stream } = await open(holder, device);

    const texts = Array.from({ length: 20 }, (_, index) => `e${index}`);
    const ids = await publishAll(holder, device, texts);
    const events = (await stream.received(21)).slice(1);
    expect(events.map((event) => event.eventId)).toEqual(ids);
    expect(payloads(events)).toEqual(texts);
    expect(events.every(hasValidGatewaySignature)).toBe(true);

    // Written into history once, by whichever node routes.
    await waitFor(
      "all routed",
      async () => (await total(nodes, "gateway_history_entries_routed_total")) === 20,
    );
    expect(await metric(holder.admin, 'gateway_push_events_received_total{via="channel"}')).toBe(
      20,
    );
    for (const other of others) {
      // Nothing read from the ingress, nothing received from a channel.
      expect(await metric(other.admin, 'gateway_push_events_received_total{via="channel"}')).toBe(
        0,
      );
      expect(await metric(other.admin, 'gateway_push_events_received_total{via="ingress"}')).toBe(
        0,
      );
      expect(await metric(other.admin, "gateway_push_events_delivered_total")).toBe(0);
    }
    expect(stream.ended).toBeUndefined();

    // Each node's Redis connections by role: no client-events reader anywhere,
    // a subscriber only where a user is subscribed, one router.
    const connections = async (node: PushGateway, role: string) =>
      metric(node.admin, `gateway_redis_connections{role="${role}"}`);
    for (const node of nodes) {
      expect(await connections(node, "commands")).toBe(1);
      expect(await connections(node, "session_events")).toBe(1);
      expect(await connections(node, "client_events")).toBe(0);
    }
    expect(await connections(holder, "events_subscriber")).toBe(1);
    for (const other of others) expect(await connections(other, "events_subscriber")).toBe(0);
    let routers = 0;
    for (const node of nodes) routers += await connections(node, "history_router");
    expect(routers).toBe(1);
  });

  it("drops a malformed entry once, counted and logged by the routing node, and delivers the valid one after it", async () => {
    const nodes = await startNodes(2);
    const [holder] = nodes as [PushGateway, PushGateway];
    const device = newDevice(uniqueName("user"));
    await holder.snapshot(device, "active");
    const { stream } = await open(holder, device);
    const bad = (await publisher.xadd(
      holder.clientEvents,
      "*",
      "user_id",
      device.userId,
    )) as string;
    const [valid] = await publishAll(holder, device, ["ok"]);
    expect((await stream.received(2))[1]!.eventId).toBe(valid);

    expect(await total(nodes, 'gateway_client_events_total{result="malformed"}')).toBe(1);
    const warned = nodes.flatMap((node) =>
      node.gateway.logger.lines.filter((line) => line.startsWith("warn") && line.includes(bad)),
    );
    expect(warned).toEqual([
      `warn client event ${bad} dropped as malformed: event_type is missing or empty`,
    ]);
  });

  it("starts a fresh stream at the user's last routed event, and a resume there on another node recovers", async () => {
    const [first, second] = (await startNodes(2)) as [PushGateway, PushGateway];
    const device = newDevice(uniqueName("user"));
    await first.snapshot(device, "active");
    const before = await publishAll(first, device, ["old"]);
    await waitFor(
      "routed",
      async () => (await publisher.xlen(`gateway:history:{${device.userId}}`)) === 1,
    );

    const fresh = await open(first, device);
    expect(fresh.bootstrap.eventId).toBe(before[0]);
    const seen = await publishAll(first, device, ["a", "b"]);
    expect(payloads(await fresh.stream.received(3))).toEqual(["a", "b"]);
    fresh.stream.cancel();
    await fresh.stream.terminal();

    const missed = await publishAll(first, device, ["c", "d", "e"]);
    const resumed = await open(second, device, seen.at(-1)!);
    expect(resumed.bootstrap.eventId).toBe(seen.at(-1));
    const live = await publishAll(first, device, ["f"]);
    const events = (await resumed.stream.received(5)).slice(1);
    expect(events.map((event) => event.eventId)).toEqual([...missed, ...live]);
    expect(await metric(second.admin, 'gateway_push_resumes_total{result="recovered"}')).toBe(1);
  });

  it("meets history and live with no gap and no duplicate while events keep coming", async () => {
    const [node] = (await startNodes(1)) as [PushGateway];
    const device = newDevice(uniqueName("user"));
    await node.snapshot(device, "active");
    const first = await open(node, device);
    const [seen] = await publishAll(node, device, ["seen"]);
    await first.stream.received(2);
    first.stream.cancel();
    await first.stream.terminal();

    // Publish 60 events while a resumed stream is opening, some before its
    // seam and some after: it must get each once, in order.
    const texts = Array.from({ length: 60 }, (_, index) => `m${index}`);
    const publishing = publishAll(node, device, texts);
    await new Promise((resolve) => setTimeout(resolve, 5));
    const resumed = await open(node, device, seen!);
    expect(resumed.bootstrap.eventId).toBe(seen);
    const ids = await publishing;
    const events = (await resumed.stream.received(61)).slice(1);
    expect(events.map((event) => event.eventId)).toEqual(ids);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(resumed.stream.events).toHaveLength(61);
  });

  it("ends a user's streams when a message of its channel went missing, and the device recovers from history", async () => {
    const [node] = (await startNodes(1)) as [PushGateway];
    const device = newDevice(uniqueName("user"));
    const bystander = newDevice(uniqueName("user"));
    await node.snapshot(device, "active");
    await node.snapshot(bystander, "active");
    const { stream } = await open(node, device);
    const other = await open(node, bystander);
    const [seen] = await publishAll(node, device, ["one"]);
    await stream.received(2);

    // A message whose predecessor is not the last one this node got: as if
    // one was lost on the way (it names the last real event as its own id,
    // so the chain goes on from there).
    const forged = Buffer.from(`e0-1\0${seen}\0`);
    await publisher.call("SPUBLISH", `gateway:events:{${device.userId}}`, forged);
    expect(await stream.terminal()).toEqual(INTERRUPTED);
    expect(other.stream.ended).toBeUndefined();

    const ids = await publishAll(node, device, ["two"]);
    const resumed = await open(node, device, seen!);
    expect(resumed.bootstrap.eventId).toBe(seen);
    expect((await resumed.stream.received(2))[1]!.eventId).toBe(ids[0]);
  });

  it("ends every stream when its subscriber connection drops, then serves resumes on a new one", async () => {
    const [node] = (await startNodes(1)) as [PushGateway];
    const device = newDevice(uniqueName("user"));
    await node.snapshot(device, "active");
    const { stream } = await open(node, device);
    const [seen] = await publishAll(node, device, ["one"]);
    await stream.received(2);

    const admin = redis.client();
    cleanup.defer(() => admin.disconnect());
    const clients = String(await admin.call("CLIENT", "LIST"));
    const subscriber = clients
      .split("\n")
      .find((line) => / name=\S*:events /.test(line) && / flags=\S*P/.test(` ${line}`));
    expect(subscriber).toBeDefined();
    const id = /\bid=(\d+)/.exec(subscriber!)![1]!;
    await admin.call("CLIENT", "KILL", "ID", id);
    expect(await stream.terminal()).toEqual(INTERRUPTED);

    const missed = await publishAll(node, device, ["two"]);
    const resumed = await open(node, device, seen!);
    expect(resumed.bootstrap.eventId).toBe(seen);
    expect((await resumed.stream.received(2))[1]!.eventId).toBe(missed[0]);
    const live = await publishAll(node, device, ["three"]);
    expect((await resumed.stream.received(3))[2]!.eventId).toBe(live[0]);
  });

  it("ends a revoked session's streams on every node", async () => {
    const [first, second] = (await startNodes(2)) as [PushGateway, PushGateway];
    const device = newDevice(uniqueName("user"));
    await first.snapshot(device, "active");
    const onFirst = await open(first, device);
    const onSecond = await open(second, device);
    await first.snapshot(device, "revoked");
    const revoked = { status: "FAILED_PRECONDITION", details: "device session is revoked" };
    expect(await onFirst.stream.terminal()).toEqual(revoked);
    expect(await onSecond.stream.terminal()).toEqual(revoked);
  });
});

describe("nodes of both fan-out modes on one ingress, as while a deployment changes mode", () => {
  it("feeds a routed node's streams when a read node routes", async () => {
    const name = uniqueName("mixed");
    // The first node takes the router lease.
    const reader = await startPushGateway(redis, publisher, cleanup, {
      name,
      env: { GATEWAY_PUSH_FANOUT: "read" },
    });
    await waitFor("the read node to route", async () => {
      return (await metric(reader.admin, 'gateway_redis_connections{role="history_router"}')) === 1;
    });
    const routed = await startPushGateway(redis, publisher, cleanup, {
      name,
      env: { GATEWAY_PUSH_FANOUT: "routed" },
    });
    const device = newDevice(uniqueName("user"));
    await reader.snapshot(device, "active");
    const onRouted = await open(routed, device);
    const onReader = await open(reader, device);
    const ids = await publishAll(reader, device, ["a", "b"]);
    for (const { stream } of [onRouted, onReader]) {
      expect((await stream.received(3)).slice(1).map((event) => event.eventId)).toEqual(ids);
    }
    expect(await metric(routed.admin, 'gateway_redis_connections{role="history_router"}')).toBe(0);
  });
});

describe("fan-out read, for comparison", () => {
  it("has every node read every ingress entry, streams or not", async () => {
    const [holder, other] = (await startNodes(2, "read")) as [PushGateway, PushGateway];
    const device = newDevice(uniqueName("user"));
    await holder.snapshot(device, "active");
    const { stream } = await open(holder, device);
    const ids = await publishAll(holder, device, ["a", "b", "c"]);
    expect((await stream.received(4)).slice(1).map((event) => event.eventId)).toEqual(ids);
    await waitFor(
      "read by the other node",
      async () =>
        (await metric(other.admin, 'gateway_push_events_received_total{via="ingress"}')) === 3,
    );
    expect(await metric(holder.admin, 'gateway_push_events_received_total{via="ingress"}')).toBe(3);
    for (const node of [holder, other]) {
      expect(await metric(node.admin, 'gateway_redis_connections{role="client_events"}')).toBe(1);
      expect(await metric(node.admin, 'gateway_redis_connections{role="events_subscriber"}')).toBe(
        0,
      );
    }
  });
});

/**
 * Two gateway processes (the real bin) on one Redis: every node reads every
 * stream entry, so a client event reaches the user's streams on both nodes and
 * a revoke closes the session's streams, and refuses its calls, on both.
 */
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { SubscribeEventsResponse } from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { publishClientEvent, publishSessionSnapshot } from "../runtime/kit/publishers.js";
import { createCleanup } from "./support/cleanup.js";
import { startGatewayBin } from "./support/gateway.js";
import {
  execute,
  hasValidGatewaySignature,
  metric,
  newDevice,
  subscribe,
  subscribeRequest,
  type TestDevice,
} from "./support/push.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";

let redis: TestRedis;
let publisher: Redis;
/** Lives as long as the file: the two gateway processes. */
const nodes = createCleanup();
/** Lives as long as one test: its clients. */
const cleanup = createCleanup();
let first: Awaited<ReturnType<typeof startGatewayBin>>;
let second: Awaited<ReturnType<typeof startGatewayBin>>;

beforeAll(async () => {
  redis = await startRedis();
  publisher = redis.client();
  [first, second] = await Promise.all([
    startGatewayBin(redis, nodes),
    startGatewayBin(redis, nodes),
  ]);
});

afterEach(() => cleanup.run());

afterAll(async () => {
  await nodes.run();
  publisher?.disconnect();
  await redis?.stop();
});

const REVOKED = { status: "FAILED_PRECONDITION", details: "device session is revoked" };

/** Publishes the device's session snapshot as the auth/session side does. */
function snapshot(device: TestDevice, status: "active" | "revoked") {
  return publishSessionSnapshot(publisher, {
    deviceSessionId: device.deviceSessionId,
    userId: device.userId,
    clientPublicKey: device.publicKeyText,
    status,
    ...(status === "revoked" ? { revokedAtMs: Date.now() } : {}),
  });
}

function eventIds(events: readonly SubscribeEventsResponse[]): string[] {
  return events.map((event) => event.eventId);
}

describe("two gateway nodes on one Redis", () => {
  it("deliver a client event to the user's streams on both nodes", async () => {
    const phone = newDevice("alice");
    const laptop = newDevice("alice");
    const bob = newDevice("bob");
    for (const device of [phone, laptop, bob]) await snapshot(device, "active");
    const phoneOnFirst = subscribe(first.grpc, subscribeRequest(phone), cleanup);
    const laptopOnSecond = subscribe(second.grpc, subscribeRequest(laptop), cleanup);
    const bobOnSecond = subscribe(second.grpc, subscribeRequest(bob), cleanup);
    await Promise.all([
      phoneOnFirst.received(1),
      laptopOnSecond.received(1),
      bobOnSecond.received(1),
    ]);

    const payload = Buffer.from([0, 1, 2, 253, 254, 255]);
    const id = await publishClientEvent(publisher, {
      userId: "alice",
      eventType: "chat.message",
      payload,
      requestId: "corr-both",
    });
    const [, onFirst] = await phoneOnFirst.received(2);
    const [, onSecond] = await laptopOnSecond.received(2);
    for (const event of [onFirst!, onSecond!]) {
      expect(event).toMatchObject({
        eventId: id,
        eventType: "chat.message",
        requestId: "corr-both",
      });
      expect(Buffer.from(event.payload).equals(payload)).toBe(true);
      expect(hasValidGatewaySignature(event)).toBe(true);
    }

    // Bob's next event is his own: nothing of Alice's reached him on either node.
    const forBob = await publishClientEvent(publisher, { userId: "bob", eventType: "demo.bob" });
    expect(eventIds((await bobOnSecond.received(2)).slice(1))).toEqual([forBob]);

    for (const node of [first, second]) {
      expect(await metric(node.admin, 'gateway_client_events_total{result="delivered"}')).toBe(
        node === first ? 1 : 2,
      );
    }
  });

  it("close a revoked session's streams on both nodes, and both refuse its new calls", async () => {
    const phone = newDevice("carol");
    const laptop = newDevice("carol");
    await snapshot(phone, "active");
    await snapshot(laptop, "active");
    const phoneOnFirst = subscribe(first.grpc, subscribeRequest(phone), cleanup);
    const phoneOnSecond = subscribe(second.grpc, subscribeRequest(phone), cleanup);
    const laptopOnSecond = subscribe(second.grpc, subscribeRequest(laptop), cleanup);
    await Promise.all([
      phoneOnFirst.received(1),
      phoneOnSecond.received(1),
      laptopOnSecond.received(1),
    ]);
    // Authenticated on both nodes before the revoke; the bin has no routes.
    for (const node of [first, second]) {
      expect(await execute(node.grpc, phone, cleanup)).toEqual({
        status: "UNIMPLEMENTED",
        details: "no route for message_type demo.echo",
      });
    }

    await snapshot(phone, "revoked");
    expect(await phoneOnFirst.terminal()).toEqual(REVOKED);
    expect(await phoneOnSecond.terminal()).toEqual(REVOKED);

    for (const node of [first, second]) {
      expect(await execute(node.grpc, phone, cleanup)).toEqual(REVOKED);
      const reopened = subscribe(node.grpc, subscribeRequest(phone), cleanup);
      expect(await reopened.terminal()).toEqual(REVOKED);
      expect(reopened.events).toEqual([]);
      expect(await metric(node.admin, 'gateway_push_stream_closes_total{reason="revoked"}')).toBe(
        1,
      );
    }

    // The user's other session keeps its stream.
    const later = await publishClientEvent(publisher, { userId: "carol", eventType: "demo.later" });
    expect(eventIds((await laptopOnSecond.received(2)).slice(1))).toEqual([later]);
    expect(laptopOnSecond.ended).toBeUndefined();
  });
});

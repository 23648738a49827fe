/**
 * Revocation is at-least-once on every node (contract §13): a revoke published
 * while a node's Redis connections are down still ends that session's open
 * streams on every node once the node reconnects — never silently missed.
 */
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createCleanup } from "./support/cleanup.js";
import {
  newDevice,
  startPushGateway,
  subscribe,
  subscribeRequest,
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

const REVOKED = { status: "FAILED_PRECONDITION", details: "device session is revoked" };

describe("a revoke published while the nodes' Redis connections are down", () => {
  it("ends the session's streams on every node once they reconnect", async () => {
    const name = uniqueName("revoke");
    const nodes = [
      await startPushGateway(redis, publisher, cleanup, { name }),
      await startPushGateway(redis, publisher, cleanup, { name }),
    ];
    const device = newDevice(uniqueName("user"));
    await nodes[0]!.snapshot(device, "active");
    const streams = nodes.map((node) => subscribe(node.grpc, subscribeRequest(device), cleanup));
    await Promise.all(streams.map((stream) => stream.received(1)));

    // Every connection but this one is dropped, the revoke is written at once
    // on the same connection, so no node's reader can have read it first.
    const admin = redis.client();
    cleanup.defer(() => admin.disconnect());
    const id = (await admin.client("ID")) as number;
    await admin.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes");
    expect(await admin.client("ID")).toBe(id);
    await admin
      .multi()
      .hset(`gateway:session:${device.deviceSessionId}`, { status: "revoked" })
      .xadd(
        nodes[0]!.sessionEvents,
        "*",
        "device_session_id",
        device.deviceSessionId,
        "user_id",
        device.userId,
        "client_public_key",
        device.publicKeyText,
        "status",
        "revoked",
        "revoked_at_ms",
        String(Date.now()),
      )
      .exec();

    for (const stream of streams) expect(await stream.terminal()).toEqual(REVOKED);
    await waitFor("both nodes to report their session-events reader back", () =>
      nodes.every((node) =>
        node.gateway.logger.lines.some((line) => line.includes("reading again after")),
      ),
    );
  });
});

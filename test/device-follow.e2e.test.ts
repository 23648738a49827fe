/**
 * The kit's device client following its events across streams (contract
 * §12) against real gateways over real sockets: the built bin stopped with
 * SIGTERM and started again on the same port, a connection cut under the
 * stream, an app that stops reading until its stream overflowed and was
 * reset, and a revoke.
 */
import type { Redis } from "ioredis";
import { ClientError, Status } from "nice-grpc";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createDeviceClient, type FollowedItem } from "../runtime/kit/device-client.js";
import { publishClientEvent } from "../runtime/kit/publishers.js";
import type { ReconnectInfo } from "../runtime/kit/resumable-subscription.js";
import { createCleanup } from "./support/cleanup.js";
import { cuttableProxy } from "./support/cuttable-proxy.js";
import { startGatewayBin, storeSession } from "./support/gateway.js";
import { vectors } from "./support/keys.js";
import { metric, newDevice, startPushGateway, type TestDevice } from "./support/push.js";
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

/**
 * Follows `device`'s events through the kit's device client on `address`,
 * recording every item, every reconnect and how the subscription ended.
 */
function follow(address: string, device: TestDevice) {
  const client = createDeviceClient({
    address,
    deviceSessionId: device.deviceSessionId,
    devicePrivateKey: device.privateKey,
    gatewayPublicKey: vectors.gateway_key.public_key_base64url,
  });
  const abort = new AbortController();
  const items: FollowedItem[] = [];
  const reconnects: ReconnectInfo[] = [];
  let ended: { error: unknown } | undefined;
  const done = (async () => {
    try {
      const subscription = client.subscribe({
        signal: abort.signal,
        // Short delays keep the test quick; the doubling and jitter are the defaults' own.
        follow: { minDelayMs: 20, maxDelayMs: 400, onReconnect: (info) => reconnects.push(info) },
      });
      for await (const item of subscription) items.push(item);
      ended = { error: undefined };
    } catch (error) {
      ended = { error };
    }
  })();
  cleanup.defer(async () => {
    abort.abort();
    await done;
    client.close();
  });
  return {
    items,
    reconnects,
    get ended() {
      return ended;
    },
    /** Resolves the event with `eventId` received at or after item `from`. */
    async event(eventId: string, from = 0) {
      const find = () =>
        items.slice(from).find((item) => item.kind === "event" && item.event.eventId === eventId);
      await waitFor(`event ${eventId}`, () => find() !== undefined || ended !== undefined);
      expect(find(), `event ${eventId}; ended: ${String(ended?.error)}`).toBeDefined();
    },
    /** Resolves once a bootstrap event arrived at or after item `from`. */
    async bootstrap(from = 0) {
      await waitFor("a bootstrap event", () =>
        items
          .slice(from)
          .some((item) => item.kind === "event" && item.event.eventType === "gateway.server_time"),
      );
    },
  };
}

/** Items as compact text: `type id` for events, `lost after A, at B` for lost continuity. */
function seen(items: readonly FollowedItem[]): string[] {
  return items.map((item) =>
    item.kind === "event"
      ? `${item.event.eventType} ${item.event.eventId}`
      : `lost after ${item.lastEventId}, at ${item.position}`,
  );
}

describe("a device client with follow", () => {
  it("reconnects by itself when its gateway stops (SIGTERM) and starts again on the same port, resuming after the last event id it received", async () => {
    const device = newDevice("u-follow");
    await storeSession(redis, {
      deviceSessionId: device.deviceSessionId,
      userId: device.userId,
      publicKeyText: device.publicKeyText,
    });
    const first = await startGatewayBin(redis, cleanup);
    const following = follow(first.grpc, device);
    await following.bootstrap();
    const received = await publishClientEvent(publisher, {
      userId: device.userId,
      eventType: "demo.note",
    });
    await following.event(received);

    first.bin.child.kill("SIGTERM");
    expect(await first.bin.exited).toBe(0);
    await waitFor("a reconnect", () => following.reconnects.length > 0);
    expect(following.reconnects[0]!.error).toBeInstanceOf(ClientError);
    expect(following.reconnects[0]!.error).toMatchObject({
      code: Status.UNAVAILABLE,
      details: "gateway is shutting down",
    });
    const afterStop = following.items.length;
    await startGatewayBin(redis, cleanup, { GATEWAY_AUTHENTICATED_GRPC_ADDR: first.grpc });
    await following.bootstrap(afterStop);

    // Nothing was published while the gateway was away, so the new stream
    // resumes without a gap under any rule: its bootstrap carries exactly the
    // event id the device sent, and no continuity notice comes.
    expect(seen(following.items.slice(afterStop))).toEqual([`gateway.server_time ${received}`]);
    expect(following.reconnects.map((info) => info.lastEventId)).toEqual(
      following.reconnects.map(() => received),
    );
    expect(following.ended).toBeUndefined();
  });

  it.each<{ history: string; env: Record<string, string> }>([
    { history: "on", env: {} },
    { history: "off", env: { GATEWAY_PUSH_HISTORY_SIZE: "0" } },
  ])(
    "never leaves a silent gap after events published while its gateway was away (history $history)",
    async ({ history, env }) => {
      const name = `missed-${history}`;
      const first = await startPushGateway(redis, publisher, cleanup, { name, env });
      const device = newDevice(`u-missed-${history}`);
      await first.snapshot(device, "active");
      const following = follow(first.grpc, device);
      await following.bootstrap();
      const received = await first.publish({ userId: device.userId, eventType: "demo.note" });
      await following.event(received);

      await first.gateway.stop();
      await waitFor("a reconnect", () => following.reconnects.length > 0);
      const missed = [
        await first.publish({ userId: device.userId, eventType: "demo.note" }),
        await first.publish({ userId: device.userId, eventType: "demo.note" }),
      ];
      const afterStop = following.items.length;
      const second = await startPushGateway(redis, publisher, cleanup, {
        name,
        env: { ...env, GATEWAY_AUTHENTICATED_GRPC_ADDR: first.grpc },
      });
      await following.bootstrap(afterStop);
      const live = await second.publish({ userId: device.userId, eventType: "demo.live" });
      await following.event(live, afterStop);

      // With history the new stream replays the missed events after a
      // bootstrap equal to the id the device sent (recovered, contract §12);
      // without it the bootstrap carries the live position and the device is
      // told, before that bootstrap, that continuity was lost.
      expect(seen(following.items.slice(afterStop))).toEqual(
        history === "on"
          ? [
              `gateway.server_time ${received}`,
              `demo.note ${missed[0]}`,
              `demo.note ${missed[1]}`,
              `demo.live ${live}`,
            ]
          : [
              `lost after ${received}, at ${missed[1]}`,
              `gateway.server_time ${missed[1]}`,
              `demo.live ${live}`,
            ],
      );
      expect(following.reconnects.map((info) => info.lastEventId)).toEqual(
        following.reconnects.map(() => received),
      );
      expect(following.ended).toBeUndefined();
    },
  );

  it("reconnects after its connection is cut under the stream and replays what it missed", async () => {
    const gateway = await startPushGateway(redis, publisher, cleanup);
    const proxy = await cuttableProxy(gateway.grpc, cleanup);
    const device = newDevice("u-cut");
    await gateway.snapshot(device, "active");
    const following = follow(proxy.address, device);
    await following.bootstrap();
    const received = await gateway.publish({ userId: device.userId, eventType: "demo.note" });
    await following.event(received);

    proxy.cut();
    await waitFor("a reconnect", () => following.reconnects.length > 0);
    const missed = await gateway.publish({ userId: device.userId, eventType: "demo.note" });
    const afterCut = following.items.length;
    await following.event(missed, afterCut);

    expect(following.reconnects[0]!.lastEventId).toBe(received);
    expect(seen(following.items)).toEqual([
      expect.stringMatching(/^gateway\.server_time /),
      `demo.note ${received}`,
      // Later reconnects, if the first one raced the cut, resume after the same id.
      ...following.items.slice(2, afterCut).map(() => `gateway.server_time ${received}`),
      `gateway.server_time ${received}`,
      `demo.note ${missed}`,
    ]);
    expect(following.ended).toBeUndefined();
  });

  // A device app that stops taking events (a busy or suspended page): its
  // stream overflows, and its status waits behind the data the client has
  // not read (contract §7). An app that reads again soon gets that status
  // (RESOURCE_EXHAUSTED); one that stays away past GATEWAY_SHUTDOWN_TIMEOUT
  // finds the stream reset (CANCELLED). Either way the client reconnects and
  // history fills the gap.
  it.each([
    { away: "until the status", shutdownTimeout: "60s", code: Status.RESOURCE_EXHAUSTED },
    { away: "past the reset", shutdownTimeout: "1s", code: Status.CANCELLED },
  ])(
    "resumes without a gap after the app stopped reading $away of its overflowed stream",
    async ({ shutdownTimeout, code }) => {
      const gateway = await startPushGateway(redis, publisher, cleanup, {
        env: { GATEWAY_PUSH_STREAM_QUEUE_SIZE: "4", GATEWAY_SHUTDOWN_TIMEOUT: shutdownTimeout },
      });
      const device = newDevice("u-stalled");
      await gateway.snapshot(device, "active");
      const client = createDeviceClient({
        address: gateway.grpc,
        deviceSessionId: device.deviceSessionId,
        devicePrivateKey: device.privateKey,
        gatewayPublicKey: vectors.gateway_key.public_key_base64url,
      });
      const abort = new AbortController();
      const reconnects: ReconnectInfo[] = [];
      const subscription = client.subscribe({
        signal: abort.signal,
        follow: { minDelayMs: 20, maxDelayMs: 400, onReconnect: (info) => reconnects.push(info) },
      });
      cleanup.defer(async () => {
        abort.abort();
        await subscription.return(undefined);
        client.close();
      });
      const next = async () => (await subscription.next()).value as FollowedItem;
      expect(await next()).toMatchObject({
        kind: "event",
        event: { eventType: "gateway.server_time" },
      });

      // Events of 16 KiB while the app takes nothing, until they fill the
      // HTTP/2 windows and buffers (how much those hold differs between Node
      // releases) and then the stream's queue.
      const published: string[] = [];
      const overflows = () =>
        metric(gateway.admin, 'gateway_push_stream_closes_total{reason="overflow"}');
      while ((await overflows()) === 0) {
        if (published.length >= 1024) throw new Error("16 MiB went out and nothing overflowed");
        for (let index = 0; index < 8; index += 1) {
          published.push(
            await gateway.publish({
              userId: device.userId,
              eventType: "demo.note",
              payload: Buffer.alloc(16_384, published.length),
            }),
          );
        }
      }
      expect(await overflows()).toBe(1);
      if (code === Status.CANCELLED) {
        await waitFor("the reset of the stalled stream", () =>
          gateway.gateway.logger.lines.some((line) => line.includes("push stream reset")),
        );
      }

      const items: FollowedItem[] = [];
      while (
        !items.some((item) => item.kind === "event" && item.event.eventId === published.at(-1))
      ) {
        items.push(await next());
      }
      const events = items.filter((item) => item.kind === "event");
      const notes = events.filter((item) => item.event.eventType === "demo.note");
      // Every event once, in order; the bootstraps of reconnected streams sit between them.
      expect(notes.map((item) => item.event.eventId)).toEqual(published);
      expect(items.filter((item) => item.kind === "continuity_lost")).toEqual([]);
      expect(reconnects.length).toBeGreaterThan(0);
      expect(reconnects[0]!.error).toBeInstanceOf(ClientError);
      expect(reconnects[0]!.error).toMatchObject({ code });
    },
  );

  it("ends with FAILED_PRECONDITION when its session is revoked, and does not reconnect", async () => {
    const gateway = await startPushGateway(redis, publisher, cleanup);
    const device = newDevice("u-revoked");
    await gateway.snapshot(device, "active");
    const following = follow(gateway.grpc, device);
    await following.bootstrap();

    await gateway.snapshot(device, "revoked");
    await waitFor("the end of the subscription", () => following.ended !== undefined);
    expect(following.ended!.error).toBeInstanceOf(ClientError);
    expect(following.ended!.error).toMatchObject({
      code: Status.FAILED_PRECONDITION,
      details: "device session is revoked",
    });
    expect(following.reconnects).toEqual([]);
    expect(following.items).toHaveLength(1);
    expect(following.items[0]).toMatchObject({
      kind: "event",
      event: { eventType: "gateway.server_time" },
    });
  });
});

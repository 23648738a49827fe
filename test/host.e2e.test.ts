/**
 * The gateway host's edges: a stop that arrives during startup, routes from
 * GATEWAY_ROUTES_MODULE without a bin, startup errors that name their cause
 * and leave nothing open, the admin listener turned off, the session cache's
 * TTL, and sessions whose user or key changes under an open stream.
 */
import { writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../runtime/config/config.js";
import { createGateway } from "../runtime/host/gateway.js";
import { createKeyspace } from "../runtime/redis/keyspace.js";
import { createCleanup } from "./support/cleanup.js";
import { createMemoryLogger, gatewayEnv, putSession } from "./support/gateway.js";
import {
  execute,
  metric,
  newDevice,
  SAFETY_MS,
  startPushGateway,
  subscribe,
  subscribeRequest,
} from "./support/push.js";
import { freePort, startRedis, type TestRedis } from "./support/redis-server.js";
import { tempDir } from "./support/temp-dir.js";

let redis: TestRedis;
let publisher: Redis;
const cleanup = createCleanup();

/** A plain TCP server listening on `127.0.0.1:port` (0: any free port); rejects when it cannot bind. */
function listenOn(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      server.off("error", reject);
      resolve(server);
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

beforeAll(async () => {
  redis = await startRedis();
  publisher = redis.client();
});

afterEach(() => cleanup.run());

afterAll(async () => {
  publisher?.disconnect();
  await redis?.stop();
});

describe("the gateway host", () => {
  // SIGTERM during startup: startup finishes, but readiness never turns 200.
  it("never becomes ready when stop() begins while start() is running", async () => {
    const logger = createMemoryLogger();
    const gateway = createGateway({ config: loadConfig(gatewayEnv(redis)), logger });
    const starting = gateway.start();
    const stopping = gateway.stop();
    await starting.catch(() => {});
    expect(gateway.ready).toBe(false);
    await stopping;
    expect(gateway.ready).toBe(false);
    expect(logger.lines.some((line) => line.includes("gateway ready"))).toBe(false);
    expect(logger.lines.some((line) => line.includes("shutdown: HTTP listeners closed"))).toBe(
      true,
    );
  });

  it("loads GATEWAY_ROUTES_MODULE when embedding code passes no routes", async () => {
    const dir = tempDir("routes");
    const module = join(dir, "routes.mjs");
    writeFileSync(
      module,
      'export const routes = { "demo.module": async () => ({ resultCode: "from-module" }) };\n',
    );
    const gateway = createGateway({
      config: loadConfig(gatewayEnv(redis, { GATEWAY_ROUTES_MODULE: module })),
      logger: createMemoryLogger(),
    });
    cleanup.defer(() => gateway.stop());
    await gateway.start();
    const device = newDevice("u-module");
    await putSession(publisher, device);
    const outcome = await execute(gateway.addresses.grpc, device, cleanup, {
      messageType: "demo.module",
    });
    expect(outcome).toEqual({ status: "OK", details: "from-module" });
  });

  it("fails startup naming GATEWAY_GRPC_TLS_CERT_PATH when the certificate cannot be read", async () => {
    const gateway = createGateway({
      config: loadConfig(
        gatewayEnv(redis, {
          GATEWAY_GRPC_TLS_CERT_PATH: "/nonexistent/cert.pem",
          GATEWAY_GRPC_TLS_KEY_PATH: "/nonexistent/key.pem",
        }),
      ),
      logger: createMemoryLogger(),
    });
    await expect(gateway.start()).rejects.toThrow(
      "GATEWAY_GRPC_TLS_CERT_PATH: cannot read /nonexistent/cert.pem (ENOENT)",
    );
  });

  it("says WRONGPASS when the Redis password is wrong", async () => {
    const env = gatewayEnv(redis, { GATEWAY_REDIS_PASSWORD: "not-the-password" });
    const gateway = createGateway({ config: loadConfig(env), logger: createMemoryLogger() });
    const error = await gateway.start().then(
      () => undefined,
      (caught: Error) => caught,
    );
    expect(error?.message).toMatch(/^Redis PING to 127\.0\.0\.1:\d+ failed: WRONGPASS/);
    expect(error?.message).not.toContain("not-the-password");
  });

  it("starts no admin listener and says so when GATEWAY_ADMIN_HTTP_ADDR is empty", async () => {
    const logger = createMemoryLogger();
    const gateway = createGateway({
      config: loadConfig(gatewayEnv(redis, { GATEWAY_ADMIN_HTTP_ADDR: "" })),
      logger,
    });
    cleanup.defer(() => gateway.stop());
    await gateway.start();
    expect(gateway.addresses.adminHttp).toBeUndefined();
    expect(logger.lines.some((line) => line.includes("admin HTTP disabled"))).toBe(true);
    expect(logger.lines.some((line) => line.includes("admin HTTP listening on"))).toBe(false);
  });

  // The admin listener is bound last: when it fails, the gRPC and public
  // listeners already bound must be closed again before start() rejects.
  it("closes the listeners it already bound when a later one cannot bind", async () => {
    const occupied = await listenOn(0);
    cleanup.defer(() => closeServer(occupied));
    const { port: adminPort } = occupied.address() as { port: number };
    const grpcPort = await freePort();
    const publicPort = await freePort();
    const gateway = createGateway({
      config: loadConfig(
        gatewayEnv(redis, {
          GATEWAY_AUTHENTICATED_GRPC_ADDR: `127.0.0.1:${grpcPort}`,
          GATEWAY_PUBLIC_HTTP_ADDR: `127.0.0.1:${publicPort}`,
          GATEWAY_ADMIN_HTTP_ADDR: `127.0.0.1:${adminPort}`,
        }),
      ),
      logger: createMemoryLogger(),
    });
    cleanup.defer(() => gateway.stop());

    await expect(gateway.start()).rejects.toThrow(/EADDRINUSE/);
    for (const port of [grpcPort, publicPort]) {
      await closeServer(await listenOn(port));
    }
  });

  // Without a session-events entry nothing tells the node that the hash
  // changed: the cached session must still expire after the TTL.
  it("refuses a session revoked by a plain HSET once its cached copy is older than GATEWAY_SESSION_CACHE_TTL", async () => {
    const { gateway } = await startPushGateway(redis, publisher, cleanup, {
      env: { GATEWAY_SESSION_CACHE_TTL: "200ms" },
      routes: { "demo.echo": async () => ({ resultCode: "echoed" }) },
    });
    const device = newDevice("u-ttl");
    await putSession(publisher, device);
    expect(await execute(gateway.addresses.grpc, device, cleanup)).toEqual({
      status: "OK",
      details: "echoed",
    });

    await publisher.hset(createKeyspace().sessionKey(device.deviceSessionId), "status", "revoked");
    await expect
      .poll(() => execute(gateway.addresses.grpc, device, cleanup), {
        timeout: SAFETY_MS,
        interval: 50,
      })
      .toEqual({ status: "FAILED_PRECONDITION", details: "device session is revoked" });
  });

  it("treats a session hash whose user_id is not an identifier as no session", async () => {
    const { gateway } = await startPushGateway(redis, publisher, cleanup);
    const device = newDevice("bad user!");
    await putSession(publisher, device);
    const outcome = await execute(gateway.addresses.grpc, device, cleanup);
    expect(outcome).toEqual({ status: "UNAUTHENTICATED", details: "device session not found" });
  });
});

describe("a session that changes under an open stream", () => {
  it("ends the stream when a snapshot moves the session to another user, and it gets no event of either", async () => {
    const gw = await startPushGateway(redis, publisher, cleanup);
    const alice = newDevice("alice");
    await putSession(publisher, alice);
    const stream = subscribe(gw.grpc, subscribeRequest(alice), cleanup);
    await stream.received(1);

    await gw.snapshot({ ...alice, userId: "bob" }, "active");
    expect(await stream.terminal()).toEqual({
      status: "UNAVAILABLE",
      details: "device session changed; reconnect",
    });
    await gw.publish({ userId: "alice", eventType: "demo.for_alice" });
    await gw.publish({ userId: "bob", eventType: "demo.for_bob" });
    await expect
      .poll(() => metric(gw.admin, 'gateway_client_events_total{result="no_subscriber"}'), {
        timeout: SAFETY_MS,
      })
      .toBe(2);
    expect(stream.events.map((event) => event.eventType)).toEqual(["gateway.server_time"]);
    expect(
      await metric(gw.admin, 'gateway_push_stream_closes_total{reason="session_changed"}'),
    ).toBe(1);
  });

  it("ends the stream when a snapshot rotates the session key, and keeps it for an unchanged snapshot", async () => {
    const gw = await startPushGateway(redis, publisher, cleanup);
    const carol = newDevice("carol");
    await putSession(publisher, carol);
    const stream = subscribe(gw.grpc, subscribeRequest(carol), cleanup);
    await stream.received(1);

    await gw.snapshot(carol, "active");
    await gw.publish({ userId: "carol", eventType: "demo.still_here" });
    await stream.received(2);

    const rotated = { ...carol, publicKeyText: newDevice("carol").publicKeyText };
    await gw.snapshot(rotated, "active");
    expect(await stream.terminal()).toEqual({
      status: "UNAVAILABLE",
      details: "device session changed; reconnect",
    });
  });
});

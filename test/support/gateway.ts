/**
 * Runs a gateway for a test: in-process through the kit, or as the real bin in
 * a child process. Everything started here is stopped by the returned handle.
 */
import type { KeyObject } from "node:crypto";
import type { Redis } from "ioredis";
import type { AuthUpstream, Routes } from "../../handlers/ports.js";
import { type GatewayConfig, loadConfig } from "../../runtime/config/config.js";
import { createGateway, type Gateway } from "../../runtime/host/gateway.js";
import { createKeyspace } from "../../runtime/redis/keyspace.js";
import type { Cleanup } from "./cleanup.js";
import { newDeviceKey, writeGatewayKeyFile } from "./keys.js";
import { createMemoryLogger } from "./logger.js";
import { BIN, type NodeProcess, spawnNode } from "./node-process.js";
import type { TestRedis } from "./redis-server.js";

// Also offered here, next to the gateways it records the logs of.
export { createMemoryLogger };

/** Environment for a gateway on loopback ephemeral ports against `redis`. */
export function gatewayEnv(
  redis: Pick<TestRedis, "addr" | "password">,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    GATEWAY_REDIS_MASTER_ADDR: redis.addr,
    GATEWAY_REDIS_PASSWORD: redis.password,
    GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH: writeGatewayKeyFile(),
    GATEWAY_PUBLIC_HTTP_ADDR: "127.0.0.1:0",
    GATEWAY_AUTHENTICATED_GRPC_ADDR: "127.0.0.1:0",
    GATEWAY_ADMIN_HTTP_ADDR: "127.0.0.1:0",
    GATEWAY_SHUTDOWN_TIMEOUT: "3s",
    ...extra,
  };
}

/** Starts an in-process gateway; the caller stops it. */
export async function startGateway(
  redis: Pick<TestRedis, "addr" | "password">,
  options: {
    env?: Record<string, string>;
    routes?: Routes;
    authUpstream?: AuthUpstream;
    now?: () => number;
  } = {},
): Promise<Gateway & { logger: ReturnType<typeof createMemoryLogger>; config: GatewayConfig }> {
  const logger = createMemoryLogger();
  const config = loadConfig(gatewayEnv(redis, options.env));
  const gateway = createGateway({
    config,
    routes: options.routes,
    ...(options.authUpstream ? { authUpstream: options.authUpstream } : {}),
    logger,
    ...(options.now ? { clock: { now: options.now } } : {}),
  });
  await gateway.start();
  return Object.assign(gateway, { logger, config });
}

/** A device session as the auth/session side stores it. */
export interface StoredSession {
  deviceSessionId: string;
  userId: string;
  publicKeyText: string;
  status?: "active" | "revoked";
}

/**
 * Writes a session hash field by field, as an auth/session service that does
 * not use the publisher helpers does (the key text is stored as given).
 */
export async function putSession(
  client: Redis,
  session: StoredSession,
  keyPrefix?: string,
): Promise<void> {
  await client.hset(createKeyspace(keyPrefix).sessionKey(session.deviceSessionId), {
    user_id: session.userId,
    client_public_key: session.publicKeyText,
    status: session.status ?? "active",
    updated_at_ms: String(Date.now()),
  });
}

/** A device with an active session: its session id and Ed25519 private key. */
export interface SeededDevice {
  readonly deviceSessionId: string;
  readonly privateKey: KeyObject;
}

/**
 * Writes `count` active sessions `ds-bench-{i}` of users `user-{i}`, each with
 * a new device key, and returns the devices.
 */
export function seedDevices(client: Redis, count: number): Promise<SeededDevice[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const key = newDeviceKey();
      const deviceSessionId = `ds-bench-${i}`;
      await putSession(client, {
        deviceSessionId,
        userId: `user-${i}`,
        publicKeyText: key.publicKeyText,
      });
      return { deviceSessionId, privateKey: key.privateKey };
    }),
  );
}

/** Writes a session hash under the default key prefix through a client of its own. */
export async function storeSession(redis: TestRedis, session: StoredSession): Promise<void> {
  const admin = redis.client();
  try {
    await putSession(admin, session);
  } finally {
    admin.disconnect();
  }
}

/** A gateway bin running as a child process. */
export type GatewayProcess = NodeProcess;

/** Spawns the built bin (`npm run build` first) with exactly `env` plus PATH. */
export function spawnGateway(env: Record<string, string>): GatewayProcess {
  return spawnNode(BIN, [], { env, waitTimeoutMs: 15_000 });
}

/** The gateway bin in a child process, ready, with its bound addresses. */
export async function startGatewayBin(
  redis: TestRedis,
  cleanup: Cleanup,
  env: Record<string, string> = {},
): Promise<{ bin: GatewayProcess; grpc: string; admin: string }> {
  const bin = spawnGateway(gatewayEnv(redis, env));
  cleanup.defer(() => bin.kill());
  const [, grpcAddress] = await bin.waitFor(/authenticated gRPC listening on (\S+)/);
  const [, adminAddress] = await bin.waitFor(/admin HTTP listening on (\S+)/);
  await bin.waitFor(/gateway ready/);
  return { bin, grpc: grpcAddress!, admin: adminAddress! };
}

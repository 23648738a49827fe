/**
 * Session lookup through the gateway's session store (`createRedisSessionStore`)
 * against a real redis-server: a local cache hit versus a miss (Redis `HMGET`
 * plus the device-key import), and a re-read after the entry's TTL, which
 * reuses the imported key.
 *
 *   npx tsx bench/session-cache.ts
 *
 * Variants alternate round by round; medians are reported with the cost of
 * each relative to a cache hit.
 */
import { performance } from "node:perf_hooks";
import type { DeviceSession } from "../handlers/ports.js";
import { loadConfig } from "../runtime/config/config.js";
import { connectRedis } from "../runtime/redis/connection.js";
import { createKeyspace } from "../runtime/redis/keyspace.js";
import { createRedisSessionStore } from "../runtime/redis/session-store.js";
import { createMemoryLogger, gatewayEnv } from "../test/support/gateway.js";
import { newDeviceKey } from "../test/support/keys.js";
import { startRedis } from "../test/support/redis-server.js";
import { fmt, interleave, median, printReport, ratio, settle, table, watchdog } from "./report.js";

const ROUNDS = 9;
const ROUND_MS = 300;
const SESSIONS = 2_000;
/** Concurrent misses on distinct sessions, as many gRPC calls of different devices would cause. */
const IN_FLIGHT = 64;
const TTL_MS = 30_000;

const testRedis = await startRedis();
watchdog("session-cache", 120_000, () => testRedis.stop());
const logger = createMemoryLogger();
const config = loadConfig(gatewayEnv(testRedis));
// The gateway's own request-path connection: fail-closed options, command timeout.
const redis = await connectRedis(config.redis, logger);

try {
  const ids = Array.from(
    { length: SESSIONS },
    (_, i) => `ds-bench-${i.toString().padStart(5, "0")}`,
  );
  const keys = createKeyspace(config.redis.keyPrefix);
  const write = redis.pipeline();
  for (const deviceSessionId of ids) {
    write.hset(keys.sessionKey(deviceSessionId), {
      user_id: "user-bench",
      client_public_key: newDeviceKey().publicKeyText,
      status: "active",
      updated_at_ms: String(Date.now()),
    });
  }
  await write.exec();

  const store = createRedisSessionStore({
    redis,
    keyPrefix: config.redis.keyPrefix,
    ttlMs: TTL_MS,
    maxEntries: 100_000,
    logger,
  });
  // A second store whose clock the benchmark moves past the TTL before each
  // lookup: every lookup re-reads Redis but finds the key it imported before.
  let fakeNow = Date.now();
  const expiringStore = createRedisSessionStore({
    redis,
    keyPrefix: config.redis.keyPrefix,
    ttlMs: TTL_MS,
    maxEntries: 100_000,
    clock: { now: () => fakeNow },
    logger,
  });
  for (const deviceSessionId of ids) {
    await store.get(deviceSessionId);
    await expiringStore.get(deviceSessionId);
  }

  let cursor = 0;
  const nextId = () => ids[cursor++ % SESSIONS]!;
  const check = (session: DeviceSession | undefined) => {
    if (session === undefined || session.status !== "active") {
      throw new Error("session lookup returned no active session");
    }
  };

  /** Awaits `lookup` one at a time for ROUND_MS; returns ops/s. */
  async function sequential(lookup: (id: string) => Promise<DeviceSession | undefined>) {
    let ops = 0;
    const start = performance.now();
    while (performance.now() - start < ROUND_MS) {
      for (let i = 0; i < 16; i++) check(await lookup(nextId()));
      ops += 16;
    }
    return ops / ((performance.now() - start) / 1000);
  }

  /** Keeps IN_FLIGHT lookups of distinct sessions running for ROUND_MS; returns ops/s. */
  async function concurrent(lookup: (id: string) => Promise<DeviceSession | undefined>) {
    let ops = 0;
    const start = performance.now();
    const worker = async () => {
      while (performance.now() - start < ROUND_MS) {
        check(await lookup(nextId()));
        ops++;
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    return ops / ((performance.now() - start) / 1000);
  }

  const variants = [
    { name: "hit (local cache)", round: () => sequential((id) => store.get(id)) },
    {
      name: "miss: HMGET + key import, 1 at a time",
      round: () => sequential((id) => store.refresh(id)),
    },
    {
      name: "TTL re-read: HMGET, key reused, 1 at a time",
      round: () =>
        sequential((id) => {
          fakeNow += TTL_MS + 1;
          return expiringStore.get(id);
        }),
    },
    {
      name: `miss: HMGET + key import, ${IN_FLIGHT} in flight`,
      round: () => concurrent((id) => store.refresh(id)),
    },
  ].map((variant) => ({
    ...variant,
    round: async () => {
      await settle(20);
      return variant.round();
    },
  }));

  for (const variant of variants) await variant.round();
  const results = await interleave(variants, ROUNDS);
  const hit = median(results.get(variants[0]!.name) ?? []);
  const rows = variants.map((variant) => {
    const ops = median(results.get(variant.name) ?? []);
    return [variant.name, fmt(ops), `${fmt(1e6 / ops, 2)} µs`, ratio(hit / ops, 1)];
  });

  printReport(
    "Session lookup: cache hit vs miss",
    [
      `redis-server on loopback; ${SESSIONS} sessions; ${ROUNDS} interleaved rounds of ${ROUND_MS} ms; medians.`,
      "µs/op is wall time per lookup (for the in-flight row: 1 / throughput).",
    ],
    table(["lookup", "ops/s", "µs/op", "cost vs hit"], rows),
  );
} finally {
  redis.disconnect();
  await testRedis.stop();
}

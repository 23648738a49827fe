/**
 * The session store against a real redis-server: which hashes count as a
 * session, the local cache's bounds, and the §6 race where a Redis read that
 * started before a snapshot must not overwrite it.
 */
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseDevicePublicKey } from "../handlers/ed25519.js";
import { createKeyspace } from "../runtime/redis/keyspace.js";
import { createRedisSessionStore } from "../runtime/redis/session-store.js";
import { createMemoryLogger, putSession } from "./support/gateway.js";
import { newDeviceKey } from "./support/keys.js";
import { createManualClock } from "./support/ports.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";

let redis: TestRedis;
let client: Redis;
const keys = createKeyspace();

beforeAll(async () => {
  redis = await startRedis();
  client = redis.client();
});

afterAll(async () => {
  client?.disconnect();
  await redis?.stop();
});

/** A store over `client` whose HMGETs are counted and can be held at a gate. */
function storeWith(options: { ttlMs?: number; maxEntries?: number } = {}) {
  const clock = createManualClock(1_000_000);
  let reads = 0;
  let gate: Promise<void> | undefined;
  const counting = Object.create(client) as Redis;
  counting.hmget = (async (...args: Parameters<Redis["hmget"]>) => {
    reads += 1;
    const values = await client.hmget(...args);
    await gate;
    return values;
  }) as Redis["hmget"];
  const store = createRedisSessionStore({
    redis: counting,
    keyPrefix: keys.prefix,
    ttlMs: options.ttlMs ?? 30_000,
    maxEntries: options.maxEntries ?? 100,
    clock,
    logger: createMemoryLogger(),
  });
  return {
    store,
    reads: () => reads,
    advance: clock.advance,
    hold: () => {
      let release = () => {};
      gate = new Promise((resolve) => {
        release = resolve;
      });
      return () => {
        gate = undefined;
        release();
      };
    },
  };
}

async function storedSession(deviceSessionId: string) {
  const key = newDeviceKey();
  await putSession(client, { deviceSessionId, userId: "u-1", publicKeyText: key.publicKeyText });
  return key;
}

describe("createRedisSessionStore", () => {
  it("reads a complete hash as an active session", async () => {
    await storedSession("ds-complete");
    const session = await storeWith().store.get("ds-complete");
    expect(session).toMatchObject({
      deviceSessionId: "ds-complete",
      userId: "u-1",
      status: "active",
    });
  });

  it("counts a hash without updated_at_ms as no session", async () => {
    const key = newDeviceKey();
    await client.hset(keys.sessionKey("ds-no-updated"), {
      user_id: "u-1",
      client_public_key: key.publicKeyText,
      status: "active",
    });
    expect(await storeWith().store.get("ds-no-updated")).toBeUndefined();
  });

  // §6: a Redis read that started before a snapshot for the same session was
  // applied must not overwrite that snapshot.
  it("keeps a snapshot applied while an older Redis read was under way", async () => {
    const key = await storedSession("ds-race");
    const { store, hold } = storeWith();
    const release = hold();
    const reading = store.get("ds-race");
    const parsed = parseDevicePublicKey(key.publicKeyText);
    if (!parsed.ok) throw new Error("test key refused");
    store.applySnapshot({
      deviceSessionId: "ds-race",
      userId: "u-1",
      publicKey: parsed.key,
      publicKeyText: key.publicKeyText,
      status: "revoked",
    });
    release();
    expect((await reading)?.status).toBe("revoked");
    expect((await store.get("ds-race"))?.status).toBe("revoked");
  });

  it("shares one Redis read between concurrent misses of one session", async () => {
    await storedSession("ds-shared");
    const { store, reads } = storeWith();
    const sessions = await Promise.all([store.get("ds-shared"), store.get("ds-shared")]);
    expect(sessions.map((session) => session?.userId)).toEqual(["u-1", "u-1"]);
    expect(reads()).toBe(1);
  });

  it("caches a known session until its TTL and an unknown one for at most 1 s", async () => {
    await storedSession("ds-ttl");
    const { store, reads, advance } = storeWith({ ttlMs: 30_000 });
    await store.get("ds-ttl");
    await store.get("ds-unknown");
    expect(reads()).toBe(2);
    advance(1000);
    await store.get("ds-ttl");
    await store.get("ds-unknown");
    expect(reads()).toBe(3);
    advance(29_000);
    await store.get("ds-ttl");
    expect(reads()).toBe(4);
  });

  it("evicts the least recently used entry beyond its bound", async () => {
    for (const id of ["ds-a", "ds-b", "ds-c"]) await storedSession(id);
    const { store, reads } = storeWith({ maxEntries: 2 });
    await store.get("ds-a");
    await store.get("ds-b");
    await store.get("ds-a");
    await store.get("ds-c");
    expect(reads()).toBe(3);
    await store.get("ds-a");
    expect(reads()).toBe(3);
    await store.get("ds-b");
    expect(reads()).toBe(4);
  });
});

/**
 * Device sessions: Redis hashes behind a bounded, TTL-limited local cache that
 * session snapshots update in stream order (contract §6).
 */
import type { Redis } from "ioredis";
import { parseDevicePublicKey } from "../../handlers/ed25519.js";
import type { Clock, DeviceSession, Logger, SessionStore } from "../../handlers/ports.js";
import { createKeyspace } from "./keyspace.js";
import { decodeSessionHash, SESSION_HASH_FIELDS, type SessionRecord } from "./session-record.js";

/** The Redis-backed session store with its local cache. */
export interface CachedSessionStore extends SessionStore {
  /** Applies a snapshot: it wins over any Redis read that started before it. */
  applySnapshot(snapshot: SessionRecord): void;
  /** Expires every cached entry (after a stream gap): each is read from Redis again. */
  clear(): void;
  /** Reads the session from Redis, bypassing (and then refreshing) the cache. */
  refresh(deviceSessionId: string): Promise<DeviceSession | undefined>;
}

interface Entry {
  readonly session: SessionRecord | undefined;
  readonly expiresAt: number;
}

interface InFlight {
  readonly promise: Promise<DeviceSession | undefined>;
  superseded: boolean;
}

/**
 * Creates the session store. Unknown sessions are cached for at most
 * `negativeTtlMs` (≤ 1 s) so that guessed ids cannot load Redis.
 */
export function createRedisSessionStore(options: {
  redis: Redis;
  keyPrefix: string;
  ttlMs: number;
  maxEntries: number;
  clock?: Clock;
  logger: Logger;
}): CachedSessionStore {
  const { redis, ttlMs, maxEntries, logger } = options;
  const keys = createKeyspace(options.keyPrefix);
  const negativeTtlMs = Math.min(1000, ttlMs);
  const clock = options.clock ?? { now: () => Date.now() };
  const cache = new Map<string, Entry>();
  const inFlight = new Map<string, InFlight>();

  function put(deviceSessionId: string, entry: Entry): void {
    cache.delete(deviceSessionId);
    cache.set(deviceSessionId, entry);
    if (cache.size > maxEntries) {
      const oldest = cache.keys().next();
      if (!oldest.done) cache.delete(oldest.value);
    }
  }

  async function readRedis(deviceSessionId: string): Promise<SessionRecord | undefined> {
    const values = await redis.hmget(keys.sessionKey(deviceSessionId), ...SESSION_HASH_FIELDS);
    const cached = cache.get(deviceSessionId)?.session;
    const decoded = decodeSessionHash(deviceSessionId, values, (text) =>
      // Reuse the imported key when it has not changed: imports are not free.
      cached !== undefined && cached.publicKeyText === text
        ? { ok: true, key: cached.publicKey }
        : parseDevicePublicKey(text),
    );
    if (decoded.ok) return decoded.record;
    // A missing field is an incomplete record, not a faulty one: no warning.
    if (decoded.reason !== "missing") logger.warn(`session ${deviceSessionId}: ${decoded.problem}`);
    return undefined;
  }

  function load(deviceSessionId: string): Promise<DeviceSession | undefined> {
    const running = inFlight.get(deviceSessionId);
    if (running !== undefined && !running.superseded) return running.promise;
    const flight: InFlight = {
      superseded: false,
      promise: readRedis(deviceSessionId).then(
        (session) => {
          if (inFlight.get(deviceSessionId) === flight) inFlight.delete(deviceSessionId);
          if (flight.superseded) {
            // A snapshot applied while this read was under way is newer: keep it.
            return cache.get(deviceSessionId)?.session ?? session;
          }
          const now = clock.now();
          put(deviceSessionId, {
            session,
            expiresAt: now + (session === undefined ? negativeTtlMs : ttlMs),
          });
          return session;
        },
        (error: unknown) => {
          if (inFlight.get(deviceSessionId) === flight) inFlight.delete(deviceSessionId);
          throw error;
        },
      ),
    };
    inFlight.set(deviceSessionId, flight);
    return flight.promise;
  }

  return {
    async get(deviceSessionId) {
      const entry = cache.get(deviceSessionId);
      if (entry !== undefined && entry.expiresAt > clock.now()) {
        // Touch for least-recently-used eviction.
        cache.delete(deviceSessionId);
        cache.set(deviceSessionId, entry);
        return entry.session;
      }
      return load(deviceSessionId);
    },
    applySnapshot(snapshot) {
      const flight = inFlight.get(snapshot.deviceSessionId);
      if (flight !== undefined) flight.superseded = true;
      put(snapshot.deviceSessionId, {
        session: { ...snapshot },
        expiresAt: clock.now() + ttlMs,
      });
    },
    clear() {
      // Expire rather than drop: the next read reuses an unchanged imported key.
      for (const [deviceSessionId, entry] of cache) {
        cache.set(deviceSessionId, { session: entry.session, expiresAt: 0 });
      }
      for (const flight of inFlight.values()) flight.superseded = true;
      inFlight.clear();
    },
    async refresh(deviceSessionId) {
      const flight = inFlight.get(deviceSessionId);
      if (flight !== undefined) flight.superseded = true;
      inFlight.delete(deviceSessionId);
      return load(deviceSessionId);
    },
  };
}

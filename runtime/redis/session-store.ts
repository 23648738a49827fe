/**
 * Device sessions: Redis hashes behind a bounded, TTL-limited local cache that
 * session snapshots update in stream order (contract §6).
 */
import { parseDevicePublicKey } from "../../handlers/ed25519.js";
import type { Clock, DeviceSession, Logger, SessionStore } from "../../handlers/ports.js";
import type { RedisClient } from "./connection.js";
import { createKeyspace, type Keyspace } from "./keyspace.js";
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
  /** `session`, already resolved: a cache hit hands this out and allocates nothing. */
  readonly answer: Promise<SessionRecord | undefined>;
}

function entryOf(session: SessionRecord | undefined, expiresAt: number): Entry {
  return { session, expiresAt, answer: Promise.resolve(session) };
}

/** The sessions read or applied lately, least recently used first. */
interface SessionCache {
  /** The entry unless it has expired by `now`; a hit counts as a use. */
  fresh(deviceSessionId: string, now: number): Entry | undefined;
  /** The cached session, expired or not. */
  peek(deviceSessionId: string): SessionRecord | undefined;
  /** Stores the entry as the most recently used, evicting the least recently used past the bound. */
  put(deviceSessionId: string, entry: Entry): void;
  /** Expires every entry but keeps its session, whose imported key a re-read may reuse. */
  expireAll(): void;
}

/** A cache of at most `maxEntries` sessions. */
function createSessionCache(maxEntries: number): SessionCache {
  // A Map iterates in insertion order: re-inserting on use keeps the least
  // recently used entry first.
  const entries = new Map<string, Entry>();
  const touch = (deviceSessionId: string, entry: Entry) => {
    entries.delete(deviceSessionId);
    entries.set(deviceSessionId, entry);
  };
  return {
    fresh(deviceSessionId, now) {
      const entry = entries.get(deviceSessionId);
      if (entry === undefined || entry.expiresAt <= now) return undefined;
      touch(deviceSessionId, entry);
      return entry;
    },
    peek: (deviceSessionId) => entries.get(deviceSessionId)?.session,
    put(deviceSessionId, entry) {
      touch(deviceSessionId, entry);
      if (entries.size > maxEntries) {
        const oldest = entries.keys().next();
        if (!oldest.done) entries.delete(oldest.value);
      }
    },
    expireAll() {
      for (const [deviceSessionId, entry] of entries) {
        entries.set(deviceSessionId, { ...entry, expiresAt: 0 });
      }
    },
  };
}

/**
 * Reads one session hash from Redis: the record, or `undefined` when the hash
 * is missing, incomplete or faulty (a faulty one is logged).
 */
function createSessionHashReader(
  redis: RedisClient,
  keys: Keyspace,
  cache: SessionCache,
  logger: Logger,
): (deviceSessionId: string) => Promise<SessionRecord | undefined> {
  return async (deviceSessionId) => {
    const values = await redis.hmget(keys.sessionKey(deviceSessionId), ...SESSION_HASH_FIELDS);
    const cached = cache.peek(deviceSessionId);
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
  };
}

interface InFlight {
  readonly promise: Promise<DeviceSession | undefined>;
  superseded: boolean;
}

/** Redis reads under way, at most one per session, whose results fill the cache. */
interface SessionLoader {
  /** Joins the session's read under way, or starts one; its result is cached unless superseded. */
  load(deviceSessionId: string): Promise<DeviceSession | undefined>;
  /**
   * Marks the session's read under way as older than the cache: it returns
   * what the cache then holds, caches nothing, and later loads start afresh.
   */
  supersede(deviceSessionId: string): void;
  /** Supersedes every read under way. */
  supersedeAll(): void;
}

/** Loads sessions with `read` into `cache`; unknown ones are cached for `negativeTtlMs`. */
function createSessionLoader(options: {
  read: (deviceSessionId: string) => Promise<SessionRecord | undefined>;
  cache: SessionCache;
  clock: Clock;
  ttlMs: number;
  negativeTtlMs: number;
}): SessionLoader {
  const { read, cache, clock, ttlMs, negativeTtlMs } = options;
  const inFlight = new Map<string, InFlight>();
  const settle = (deviceSessionId: string, flight: InFlight) => {
    if (inFlight.get(deviceSessionId) === flight) inFlight.delete(deviceSessionId);
  };
  return {
    load(deviceSessionId) {
      const running = inFlight.get(deviceSessionId);
      if (running !== undefined && !running.superseded) return running.promise;
      const flight: InFlight = {
        superseded: false,
        promise: read(deviceSessionId).then(
          (session) => {
            settle(deviceSessionId, flight);
            // A snapshot applied while this read was under way is newer: keep it.
            if (flight.superseded) return cache.peek(deviceSessionId) ?? session;
            const ttl = session === undefined ? negativeTtlMs : ttlMs;
            cache.put(deviceSessionId, entryOf(session, clock.now() + ttl));
            return session;
          },
          (error: unknown) => {
            settle(deviceSessionId, flight);
            throw error;
          },
        ),
      };
      inFlight.set(deviceSessionId, flight);
      return flight.promise;
    },
    supersede(deviceSessionId) {
      const flight = inFlight.get(deviceSessionId);
      if (flight !== undefined) flight.superseded = true;
      inFlight.delete(deviceSessionId);
    },
    supersedeAll() {
      for (const flight of inFlight.values()) flight.superseded = true;
      inFlight.clear();
    },
  };
}

/**
 * Creates the session store. Unknown sessions are cached for at most
 * `negativeTtlMs` (≤ 1 s) so that guessed ids cannot load Redis.
 */
export function createRedisSessionStore(options: {
  redis: RedisClient;
  keyPrefix: string;
  ttlMs: number;
  maxEntries: number;
  clock?: Clock;
  logger: Logger;
}): CachedSessionStore {
  const { ttlMs } = options;
  const clock = options.clock ?? { now: () => Date.now() };
  const cache = createSessionCache(options.maxEntries);
  const keys = createKeyspace(options.keyPrefix);
  const loader = createSessionLoader({
    read: createSessionHashReader(options.redis, keys, cache, options.logger),
    cache,
    clock,
    ttlMs,
    negativeTtlMs: Math.min(1000, ttlMs),
  });
  return {
    get(deviceSessionId) {
      const entry = cache.fresh(deviceSessionId, clock.now());
      return entry !== undefined ? entry.answer : loader.load(deviceSessionId);
    },
    applySnapshot(snapshot) {
      loader.supersede(snapshot.deviceSessionId);
      cache.put(snapshot.deviceSessionId, entryOf({ ...snapshot }, clock.now() + ttlMs));
    },
    clear() {
      // Expire rather than drop: the next read reuses an unchanged imported key.
      cache.expireAll();
      loader.supersedeAll();
    },
    async refresh(deviceSessionId) {
      loader.supersede(deviceSessionId);
      return loader.load(deviceSessionId);
    },
  };
}

/**
 * The reading side of per-user history (contract §12) over Redis: the resume
 * sources a subscribing node reads, and the touch that keeps the history of a
 * user with open streams alive (and creates it, complete from the node's live
 * position, when it is missing).
 */
import type { Logger } from "../../handlers/ports.js";
import type { RedisClient } from "../redis/connection.js";
import type { Keyspace } from "../redis/keyspace.js";
import type { StreamEntry } from "../streams/stream-reader.js";
import { withHistoryScripts } from "./history-scripts.js";
import type { ResumeSources, RoutedSources } from "./resume.js";

/** What the history store needs. */
export interface HistoryStoreOptions {
  readonly redis: RedisClient;
  readonly keyspace: Keyspace;
  /** The ingress stream (`GATEWAY_CLIENT_EVENTS_REDIS_STREAM`). */
  readonly clientEventsStream: string;
  /** How long a touched history lives without events (`GATEWAY_PUSH_HISTORY_TTL`). */
  readonly ttlMs: number;
}

/** Per-user history as subscribing nodes use it. */
export interface HistoryStore extends ResumeSources, RoutedSources {
  /**
   * Keeps the users' histories alive; a missing one is created empty and
   * complete after `position` (the node's live position: every later event of
   * the user will be appended to it).
   */
  touch(userIds: readonly string[], position: string): Promise<void>;
}

/** Creates the Redis-backed history store. */
export function createHistoryStore(options: HistoryStoreOptions): HistoryStore {
  const redis = withHistoryScripts(options.redis);
  const { keyspace, clientEventsStream, ttlMs } = options;
  return {
    async routerState() {
      const [position, floor] = await redis.hmget(
        keyspace.historyRouterKey(clientEventsStream),
        "position",
        "floor",
      );
      return typeof position === "string" && typeof floor === "string"
        ? { position, floor }
        : undefined;
    },
    async historyPage(userId, first, last, count) {
      const reply = await redis.historyReadBuffer(keyspace.historyKey(userId), first, last, count);
      if (reply[0] === 0) return undefined;
      return { floor: reply[1].toString(), entries: reply[2].map(entryOf) };
    },
    async seam(userId, floor, after, count) {
      const [created, floorId, top, entries] = await redis.historySeamBuffer(
        keyspace.historyKey(userId),
        floor,
        ttlMs,
        after,
        count,
      );
      return {
        created: created === 1,
        floor: floorId.toString(),
        top: top.toString(),
        entries: entries.map(entryOf),
      };
    },
    async ingressRange(first, last, count) {
      const reply = await redis.xrangeBuffer(clientEventsStream, first, last, "COUNT", count);
      return reply.map(entryOf);
    },
    async touch(userIds, position) {
      await Promise.all(
        userIds.map((userId) => redis.historyTouch(keyspace.historyKey(userId), position, ttlMs)),
      );
    },
  };
}

/** One `XRANGE` reply item as a stream entry. */
export function entryOf([id, flat]: [Buffer, Buffer[]]): StreamEntry {
  const fields = new Map<string, Buffer>();
  for (let index = 0; index + 1 < flat.length; index += 2) {
    fields.set(flat[index]!.toString(), flat[index + 1]!);
  }
  return { id: id.toString(), fields };
}

/**
 * Touches the histories of every user with open streams on this node, every
 * `intervalMs` (a third of the TTL, at least 100 ms), so a quiet user's history outlives the
 * TTL while a device is connected. Returns the stop function.
 */
export function keepHistoriesAlive(options: {
  readonly store: HistoryStore;
  readonly users: () => readonly string[];
  /** Where a missing history is complete from (the node's live position, or the router's). */
  readonly position: () => string | Promise<string>;
  readonly intervalMs: number;
  readonly logger: Logger;
}): () => void {
  const { store, users, position, logger } = options;
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    const ids = users();
    const batches: string[][] = [];
    for (let index = 0; index < ids.length; index += 1000)
      batches.push(ids.slice(index, index + 1000));
    void (async () => {
      if (ids.length === 0) return;
      const from = await position();
      for (const batch of batches) await store.touch(batch, from);
    })()
      .catch((error: Error) => logger.debug(`history keep-alive failed: ${error.message}`))
      .finally(() => {
        running = false;
      });
  }, options.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

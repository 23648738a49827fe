/**
 * What a node runs for per-user history (contract §12) when it is on: a
 * startup check that Redis can keep it, the history router (one node routes at
 * a time), and the keep-alive of the histories of users with open streams.
 */
import type { Logger } from "../../handlers/ports.js";
import type { RedisClient } from "../redis/connection.js";
import type { Keyspace } from "../redis/keyspace.js";
import type { Metrics } from "../telemetry/metrics.js";
import { createHistoryRouter } from "./history-router.js";
import { type HistoryStore, keepHistoriesAlive } from "./history-store.js";

/** What the history task needs. */
export interface HistoryTaskOptions {
  readonly redis: RedisClient;
  readonly store: HistoryStore;
  readonly keyspace: Keyspace;
  readonly clientEventsStream: string;
  readonly history: { readonly size: number; readonly ttlMs: number };
  readonly maxPayloadBytes: number;
  /** Entries per ingress read. */
  readonly count: number;
  /** Users with open streams on this node. */
  readonly users: () => readonly string[];
  /** Where a missing history is complete from: this node's client-events cursor, or the router's position. */
  readonly position: () => string | Promise<string>;
  readonly logger: Logger;
  readonly metrics?: Pick<Metrics, "historyEntriesRouted">;
  /** Routed fan-out: the router is the ingress's only reader and reports its lag and ill-formed entries. */
  readonly soleReader?: boolean;
}

/** The oldest Redis that keeps a stream's `max-deleted-entry-id`, which history's floor is. */
const MIN_REDIS_MAJOR = 7;

/** Creates the history task. */
export function createHistoryTask(options: HistoryTaskOptions): {
  start(): Promise<void>;
  stop(): Promise<void>;
} {
  const router = createHistoryRouter(options);
  let stopKeepAlive: (() => void) | undefined;
  return {
    async start() {
      const info = await options.redis.info("server");
      const version = /redis_version:(\d+)\.(\d+)/.exec(info);
      if (version === null || Number(version[1]) < MIN_REDIS_MAJOR) {
        throw new Error(
          `GATEWAY_PUSH_HISTORY_SIZE: history needs Redis ${MIN_REDIS_MAJOR}.0 or later (server reports ${version?.[0] ?? "no redis_version"}); upgrade Redis or set GATEWAY_PUSH_HISTORY_SIZE=0`,
        );
      }
      router.start();
      stopKeepAlive = keepHistoriesAlive({
        store: options.store,
        users: options.users,
        position: options.position,
        intervalMs: Math.max(100, Math.floor(options.history.ttlMs / 3)),
        logger: options.logger,
      });
      options.logger.info(
        `push history on: ${options.history.size} events per user for ${options.history.ttlMs} ms`,
      );
    },
    async stop() {
      stopKeepAlive?.();
      await router.stop();
    },
  };
}

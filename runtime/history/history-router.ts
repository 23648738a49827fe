/**
 * The history router (contract §12): copies each client event from the
 * ingress stream into its user's history stream, once per event however many
 * nodes run. One node at a time holds the router lease and reads the ingress
 * in order from the router's stored position; the others stand by and take
 * over within a lease period when it stops renewing (dies, loses Redis).
 *
 * A write is idempotent (the history entry keeps the ingress id; the same id
 * again is a no-op), so a new leader simply re-routes from the stored
 * position whatever its predecessor wrote but had not recorded. The position
 * moves only after a batch is written, and only forward.
 */
import { hostname } from "node:os";
import type { Logger } from "../../handlers/ports.js";
import type { RedisClient } from "../redis/connection.js";
import type { Keyspace } from "../redis/keyspace.js";
import { parseClientEvent } from "../streams/client-events.js";
import {
  createStreamReader,
  type StreamEntry,
  type StreamReader,
} from "../streams/stream-reader.js";
import type { Metrics } from "../telemetry/metrics.js";
import { withHistoryScripts } from "./history-scripts.js";

/** What the router needs. */
export interface HistoryRouterOptions {
  /** The shared client; the router reads the ingress on its own duplicate. */
  readonly redis: RedisClient;
  readonly keyspace: Keyspace;
  /** The ingress stream (`GATEWAY_CLIENT_EVENTS_REDIS_STREAM`). */
  readonly clientEventsStream: string;
  /** `GATEWAY_PUSH_HISTORY_SIZE` and `_TTL`. */
  readonly history: { readonly size: number; readonly ttlMs: number };
  /** Events larger than this are not routed (as live delivery drops them). */
  readonly maxPayloadBytes: number;
  /** Entries per read. */
  readonly count: number;
  readonly logger: Logger;
  readonly metrics?: Pick<Metrics, "historyEntriesRouted"> &
    Partial<Pick<Metrics, "trackRedisConnections" | "readerLag" | "clientEvents">>;
  /**
   * Under routed fan-out (§13) the router is the ingress's only reader: it
   * then reports the reader lag and the ill-formed entries, which the nodes'
   * own readers report otherwise.
   */
  readonly soleReader?: boolean;
  /** How long the lease lasts unrenewed, in ms (default 3000). */
  readonly leaseMs?: number;
  /** How often the lease is renewed or tried, in ms (default 1000). */
  readonly renewMs?: number;
}

/** A running history router. */
export interface HistoryRouter {
  /** Starts trying for the lease; never waits for it. */
  start(): void;
  /** Whether this node routes right now. */
  readonly leading: boolean;
  /** Stops routing and gives the lease up. */
  stop(): Promise<void>;
}

/** The fields of a client event the history keeps (the ones §6 defines). */
const KEPT_FIELDS = [
  "user_id",
  "device_session_id",
  "event_type",
  "payload",
  "request_id",
] as const;
/**
 * Their names as the script arguments, made once: a `Buffer.from` per field
 * and event took slices of Node's 8 KiB buffer pool that lived until the
 * script was written, so whole pool slabs survived young collections.
 */
const KEPT_FIELD_NAMES = KEPT_FIELDS.map((name) => Buffer.from(name));

/** One routed batch, prepared once however often writing it is retried. */
/**
 * Users whose events one script call appends on a single Redis: enough to
 * make the per-call cost vanish, few enough that one call holds Redis for a
 * short while (other clients' commands wait behind a running script).
 */
const USERS_PER_CALL = 64;

interface RoutedBatch {
  /** Per user: its arguments of the append script (floor when created, then its events). */
  readonly calls: ReadonlyMap<string, readonly (string | number | Buffer)[]>;
  /** Well-formed events in the batch. */
  readonly events: number;
}

/** Creates the router; nothing happens until `start()`. */
export function createHistoryRouter(options: HistoryRouterOptions): HistoryRouter {
  return new LeasedRouter(options);
}

class LeasedRouter implements HistoryRouter {
  private readonly redis: RedisClient & ReturnType<typeof withHistoryScripts<RedisClient>>;
  private readonly holder =
    `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 10)}`;
  private readonly leaseMs: number;
  private readonly stateKey: string;
  private readonly leaseKey: string;
  private readonly renewMs: number;
  private timer: NodeJS.Timeout | undefined;
  private reader: StreamReader | undefined;
  private routed = "0-0";
  private isLeading = false;
  private ticking = false;
  private stopped = false;

  constructor(private readonly options: HistoryRouterOptions) {
    this.redis = withHistoryScripts(options.redis);
    this.leaseMs = options.leaseMs ?? 3000;
    this.stateKey = options.keyspace.historyRouterKey(options.clientEventsStream);
    this.leaseKey = options.keyspace.historyLeaseKey(options.clientEventsStream);
    this.renewMs = options.renewMs ?? 1000;
  }

  get leading(): boolean {
    return this.isLeading;
  }

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.renewMs);
    this.timer.unref();
    void this.tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.resign("stopping");
  }

  /** Renews or tries for the lease; starts or stops routing to match. */
  private async tick(): Promise<void> {
    if (this.ticking || this.stopped) return;
    this.ticking = true;
    try {
      const held = await this.redis.historyLease(this.leaseKey, this.holder, this.leaseMs);
      if (this.stopped) {
        // stop() ran while the lease was being taken: give it back at once.
        if (held === 1 && !this.isLeading)
          await this.redis.historyRelease(this.leaseKey, this.holder);
        return;
      }
      if (held === 1 && !this.isLeading) await this.lead();
      else if (held !== 1 && this.isLeading) await this.resign("lease lost");
    } catch (error) {
      const reason = (error as Error).message;
      if (this.isLeading) await this.resign(`cannot renew the lease: ${reason}`);
      else this.options.logger.debug(`history router: cannot take the lease or start: ${reason}`);
    } finally {
      this.ticking = false;
    }
  }

  /** Took the lease: reads the router state (creating it if missing) and starts routing. */
  private async lead(): Promise<void> {
    const { clientEventsStream, logger } = this.options;
    const [stored, storedFloor] = await this.redis.hmget(this.stateKey, "position", "floor");
    let position = stored ?? undefined;
    let floor = storedFloor ?? undefined;
    if (position === undefined || floor === undefined) {
      // No router state (first start, or Redis lost it): history is complete
      // only after the ingress's last entry, whatever survives in the history
      // streams. An empty ingress says nothing about what came before it (Redis
      // may have lost it): then only from now on, by the Redis clock that
      // stamps new entries.
      const [last] = await this.redis.xrevrange(clientEventsStream, "+", "-", "COUNT", 1);
      // With no entry, history is complete for every entry added from now
      // on: the floor is just before the ingress master's clock, which stamps
      // their ids.
      position = last?.[0] ?? "0-0";
      floor = last?.[0] ?? justBefore(await ingressClock(this.redis, clientEventsStream));
      await this.redis.hset(this.stateKey, "position", position, "floor", floor);
      logger.info(
        `history router state created: routing after ${position}, history complete from ${floor}`,
      );
    }
    this.routed = position;
    this.isLeading = true;
    this.reader = createStreamReader({
      redis: this.options.redis,
      stream: clientEventsStream,
      count: this.options.count,
      startAfter: position,
      logger,
      role: "history_router",
      metrics: {
        trackRedisConnections: this.options.metrics?.trackRedisConnections,
        readerLag: this.options.soleReader === true ? this.options.metrics?.readerLag : undefined,
      },
      onEntries: (entries) => this.route(entries),
      onGap: (gap) => this.raiseFloor(gap.reason),
    });
    try {
      await this.reader.start();
    } catch (error) {
      this.isLeading = false;
      this.reader = undefined;
      throw error;
    }
    logger.info(`history router: this node routes ${clientEventsStream} after ${position}`);
  }

  private async resign(why: string): Promise<void> {
    const reader = this.reader;
    const wasLeading = this.isLeading;
    this.isLeading = false;
    this.reader = undefined;
    await reader?.stop();
    if (!wasLeading) return;
    this.options.logger.info(`history router: this node stopped routing (${why})`);
    await this.redis.historyRelease(this.leaseKey, this.holder).catch(() => undefined);
  }

  /** Writes one batch into the users' histories, retrying until written or no longer leading. */
  private async route(entries: readonly StreamEntry[]): Promise<void> {
    const last = entries[entries.length - 1];
    if (last === undefined) return;
    const batch = this.prepare(entries);
    for (let attempt = 1; ; attempt++) {
      if (!this.isLeading)
        throw new Error("history router: lease lost; batch left to the next router");
      try {
        await this.write(batch);
        await this.redis.historyAdvance(this.stateKey, last.id);
        this.routed = last.id;
        return;
      } catch (error) {
        this.options.logger.warn(
          `history router: writing ${entries[0]?.id}…${last.id} failed (${(error as Error).message}); retrying`,
        );
        await new Promise((resolve) => setTimeout(resolve, Math.min(2000, 50 * 2 ** attempt)));
      }
    }
  }

  /**
   * A batch's script calls: per user, the floor if the call creates the
   * history, then the user's events in ingress order. Ill-formed entries are
   * left out; as the ingress's only reader (`soleReader`) the router counts
   * and logs them, as the nodes' own readers do otherwise.
   */
  private prepare(entries: readonly StreamEntry[]): RoutedBatch {
    const { maxPayloadBytes, metrics, logger } = this.options;
    let previous = this.routed;
    let events = 0;
    const calls = new Map<string, (string | number | Buffer)[]>();
    for (const entry of entries) {
      const parsed = parseClientEvent(entry, { maxPayloadBytes });
      if (parsed.ok) {
        const { userId } = parsed.event;
        let args = calls.get(userId);
        if (args === undefined) {
          // No event of this user lies between the entry routed just before
          // and its first one here.
          args = [previous];
          calls.set(userId, args);
        }
        const fields: Buffer[] = [];
        for (let index = 0; index < KEPT_FIELDS.length; index++) {
          const value = entry.fields.get(KEPT_FIELDS[index]!);
          if (value !== undefined && value.length > 0) fields.push(KEPT_FIELD_NAMES[index]!, value);
        }
        args.push(entry.id, fields.length, ...fields);
        events++;
      } else if (this.options.soleReader === true) {
        metrics?.clientEvents?.inc({ result: "malformed" });
        logger.warn(`client event ${entry.id} dropped as malformed: ${parsed.problem}`);
      }
      previous = entry.id;
    }
    return { calls, events };
  }

  /**
   * Writes a batch: on a single Redis one script call per {@link USERS_PER_CALL}
   * users, on a cluster one per user (calls run together).
   */
  private async write({ calls, events }: RoutedBatch): Promise<void> {
    const { keyspace, metrics, history } = this.options;
    const users = [...calls];
    const writes: Promise<[number, number]>[] = [];
    if (this.redis.isCluster) {
      for (const [userId, args] of users) {
        writes.push(
          this.redis.historyAppend(
            keyspace.historyKey(userId),
            keyspace.eventsChannel(userId),
            history.size,
            history.ttlMs,
            ...args,
          ),
        );
      }
    } else {
      for (let from = 0; from < users.length; from += USERS_PER_CALL) {
        const chunk = users.slice(from, from + USERS_PER_CALL);
        const keys: string[] = [];
        // Each user's arguments go in as their array: ioredis flattens a
        // command's arguments once, so they are copied once, not three times.
        const argv: (number | readonly (string | number | Buffer)[])[] = [
          history.size,
          history.ttlMs,
        ];
        for (const [userId, args] of chunk) {
          keys.push(keyspace.historyKey(userId), keyspace.eventsChannel(userId));
          argv.push(args.length, args);
        }
        writes.push(this.redis.historyAppendMany(keys.length, keys, ...argv));
      }
    }
    const results = await Promise.all(writes);
    const outOfOrder = results.reduce((sum, [, late]) => sum + late, 0);
    if (outOfOrder > 0) {
      this.options.logger.warn(
        `history router: ${outOfOrder} event(s) arrived below their history's top (two routers at once?); those histories now start after them`,
      );
    }
    metrics?.historyEntriesRouted.inc(events);
  }

  /** Entries vanished before they were routed: history is complete only from now. */
  private async raiseFloor(reason: string): Promise<void> {
    const floor = justBefore(await ingressClock(this.redis, this.options.clientEventsStream));
    await this.redis.hset(this.stateKey, "floor", floor);
    this.options.logger.warn(
      `history router: ${reason}; events in the gap are not in history, resumes from before ${floor} are not recovered`,
    );
  }
}

/**
 * The clock of the Redis that holds the ingress stream (on a cluster, its
 * slot's master: the clock that stamps its entry ids), as a stream id `<ms>-0`.
 */
async function ingressClock(redis: RedisClient, stream: string): Promise<string> {
  const [seconds, micros] = (await redis.eval("return redis.call('TIME')", 1, stream)) as [
    string,
    string,
  ];
  return `${Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)}-0`;
}

/** The last id before `<ms>-0`: reading after it reads every id from `<ms>-0` on. */
function justBefore(id: string): string {
  const ms = BigInt(id.slice(0, id.indexOf("-")));
  return ms === 0n ? "0-0" : `${ms - 1n}-18446744073709551615`;
}

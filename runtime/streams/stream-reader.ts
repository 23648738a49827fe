/**
 * A Redis Stream reader (contract §6 "Readers"): every node reads every entry
 * with `XREAD BLOCK … COUNT n` on its own connection, from the stream's last id
 * at startup, strictly in stream order. After a lost connection it reconnects
 * with backoff and resumes from the last id it processed; when it finds that
 * entries it had not read are gone, it reports a gap before reading on.
 */
import type { Logger } from "../../handlers/ports.js";
import {
  connectionNameOf,
  duplicateClient,
  type RedisClient,
  readyConnections,
} from "../redis/connection.js";
import type { Metrics } from "../telemetry/metrics.js";
import { compareIds, idMs, successor } from "./stream-ids.js";

/** One stream entry: its id and its fields as raw bytes. */
export interface StreamEntry {
  /** The entry id, such as `1764028801000-0`. */
  readonly id: string;
  /** Field name → raw value. When a name repeats in one entry the last value wins, as in HSET. */
  readonly fields: ReadonlyMap<string, Buffer>;
}

/** Why the reader reported a gap, and where it reads on from. */
export interface StreamGap {
  /**
   * `trimmed`: entries after the cursor were trimmed or deleted before they were read.
   * `lost`: the stream is gone or was recreated (for example Redis restarted without
   * its data, or was restored from an older copy); what it held after the cursor may
   * be gone. Either way the reader reads on after the cursor (see `findGap`).
   */
  readonly kind: "trimmed" | "lost";
  /** The cursor when the gap was found; the reader reads on after it. */
  readonly cursor: string;
  /** One line for the log. */
  readonly reason: string;
}

/** What a stream reader needs. */
export interface StreamReaderOptions {
  /**
   * The shared client. The reader reads on its own `duplicate()` of it, because a
   * blocking XREAD holds its connection.
   */
  readonly redis: RedisClient;
  /** The stream key. */
  readonly stream: string;
  /** Most entries per XREAD (`COUNT`); no larger than the push queue size. */
  readonly count: number;
  /** How long one XREAD blocks (`BLOCK`), in ms. Defaults to 5000. */
  readonly blockMs?: number;
  /**
   * How long past its block time a reply may be late before the connection counts
   * as dead and is replaced. Defaults to 2000 ms.
   */
  readonly replyTimeoutMs?: number;
  /** Upper bound of `stop()` while a handler is still running. Defaults to 2000 ms. */
  readonly stopTimeoutMs?: number;
  /** Logger for connection changes, gaps and handler failures. */
  readonly logger: Logger;
  /**
   * Handles one batch, in stream order; the next XREAD waits for it. A throw is
   * logged and the reader moves past the batch.
   */
  readonly onEntries: (entries: readonly StreamEntry[]) => void | Promise<void>;
  /**
   * Called when entries the reader had not read are gone (see StreamGap), before
   * it reads on; it logs the gap with what it does about it. Without it the
   * reader logs the gap. It may be called again for the same gap after another
   * disconnect.
   */
  readonly onGap?: (gap: StreamGap) => void | Promise<void>;
  /**
   * Sets `gateway_stream_reader_lag_seconds{stream}` after each batch, and
   * counts the reader's connection in `gateway_redis_connections{role}`.
   */
  readonly metrics?: Partial<Pick<Metrics, "readerLag" | "trackRedisConnections">>;
  /** The `role` its connection is counted under (default `stream_reader`). */
  readonly role?: string;
  /** Wall clock in Unix ms, for the lag. Defaults to `Date.now`. */
  readonly now?: () => number;
  /**
   * Where to start: after this id (checking first whether entries after it are
   * gone, as after a reconnect) instead of after the stream's last id.
   */
  readonly startAfter?: string;
  /**
   * After entries were trimmed before being read, read on after the stream's
   * last id (skipping what is left after the gap) instead of after the
   * cursor, so the cursor no longer names a position delivery continued
   * from. For readers whose consumers resume from elsewhere (the client-events
   * reader: its streams are ended and resume from history).
   */
  readonly skipPastTrimmedGap?: boolean;
}

/** A running stream reader. */
export interface StreamReader {
  /**
   * Connects, resolves the stream's last id to a concrete id (`0-0` for an empty or
   * missing stream) and starts reading after it. Rejects when Redis cannot answer.
   */
  start(): Promise<void>;
  /**
   * The id of the last entry processed, else the id resolved at startup. A gap
   * (see StreamGap) leaves it as it was, so it never goes backwards.
   */
  cursor(): string;
  /** Ends the loop at once (also while XREAD is blocked) and closes the connection. */
  stop(): Promise<void>;
}

/** A field of an entry as UTF-8 text; `undefined` when it is absent or empty. */
export function fieldText(entry: StreamEntry, name: string): string | undefined {
  const value = entry.fields.get(name);
  return value === undefined || value.length === 0 ? undefined : value.toString("utf8");
}

const ZERO_ID = "0-0";
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5000;

/**
 * Creates a reader for one stream. Nothing happens until `start()`.
 *
 * @example
 * ```ts
 * const reader = createStreamReader({
 *   redis, stream: "gateway:client_events", count: 256, logger,
 *   onEntries: createClientEventsHandler({ deliver, logger, maxPayloadBytes: 65536 }),
 * });
 * await reader.start();
 * // …
 * await reader.stop();
 * ```
 */
export function createStreamReader(options: StreamReaderOptions): StreamReader {
  return new RedisStreamReader(options);
}

/** A stream reader on its own connection; see {@link createStreamReader}. */
class RedisStreamReader implements StreamReader {
  private readonly options: StreamReaderOptions;
  private readonly blockMs: number;
  private readonly replyTimeoutMs: number;
  private readonly stopTimeoutMs: number;
  private readonly connection: RedisClient;
  private readonly label: string;
  private readonly stopping = new AbortController();
  private lastConnectionError: string | undefined;
  private position = ZERO_ID;
  private started = false;
  private stopped = false;
  private untrack: (() => void) | undefined;
  private loop: Promise<void> | undefined;

  constructor(options: StreamReaderOptions) {
    const { redis, stream, count } = options;
    this.options = options;
    this.blockMs = options.blockMs ?? 5000;
    this.replyTimeoutMs = options.replyTimeoutMs ?? 2000;
    this.stopTimeoutMs = options.stopTimeoutMs ?? 2000;
    requirePositiveInteger("count", count);
    requirePositiveInteger("blockMs", this.blockMs);
    requirePositiveInteger("replyTimeoutMs", this.replyTimeoutMs);
    this.label = `stream reader ${stream}`;

    // This reader reconnects by itself so that it can look for a gap before its next
    // XREAD: ioredis must neither reconnect nor re-send the interrupted XREAD, and
    // the request-path command timeout must not cut the blocking read short. The
    // name tells the reader's connection apart in CLIENT LIST. On a Redis Cluster the
    // copy is a Cluster client that never reconnects by itself either.
    this.connection = duplicateClient(redis, {
      connectionName: [connectionNameOf(redis), "stream-reader", stream]
        .filter((part) => part)
        .join(":"),
      lazyConnect: true,
      retryStrategy: null,
      autoResendUnfulfilledCommands: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: undefined,
      replyMapping: "legacy",
    });
    this.connection.on("error", (error: Error) => {
      this.lastConnectionError = error.message;
    });
    const connection = this.connection;
    this.untrack = options.metrics?.trackRedisConnections?.(options.role ?? "stream_reader", () =>
      readyConnections(connection),
    );
  }

  async start(): Promise<void> {
    if (this.started) throw new Error(`${this.label}: already started`);
    this.started = true;
    try {
      await this.connection.connect();
      if (this.options.startAfter === undefined) {
        this.position = await this.bounded(
          lastEntryId(this.connection, this.options.stream),
          this.replyTimeoutMs,
        );
      } else {
        this.position = this.options.startAfter;
        await this.resume();
      }
    } catch (error) {
      this.connection.disconnect();
      const reason = this.lastConnectionError ?? (error as Error).message;
      throw new Error(
        this.options.startAfter === undefined
          ? `${this.label}: cannot resolve the stream's last id: ${reason}`
          : `${this.label}: cannot start reading after ${this.options.startAfter}: ${reason}`,
      );
    }
    if (this.stopped) return;
    this.options.logger.debug(`${this.label}: reading after ${this.position}`);
    this.loop = this.run();
  }

  cursor(): string {
    return this.position;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.untrack?.();
    this.stopping.abort();
    this.connection.disconnect();
    if (this.loop === undefined) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.loop,
      new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          this.options.logger.warn(
            `${this.label}: handler still running after ${this.stopTimeoutMs} ms; not waiting`,
          );
          resolve();
        }, this.stopTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }

  /** Runs one command; a reply later than `ms` drops the connection, which rejects it. */
  private async bounded<T>(command: Promise<T>, ms: number): Promise<T> {
    const timer = setTimeout(() => {
      this.lastConnectionError = `no reply within ${ms} ms`;
      this.connection.disconnect();
    }, ms);
    try {
      return await command;
    } finally {
      clearTimeout(timer);
    }
  }

  /** After a (re)connect: looks for entries lost since the cursor and reports them. */
  private async resume(): Promise<void> {
    const { stream, onGap, logger } = this.options;
    const state = await this.bounded(
      readStreamState(this.connection, stream, this.position),
      this.replyTimeoutMs,
    );
    const gap = findGap(this.position, state);
    if (gap === undefined) return;
    if (gap.kind === "trimmed" && this.options.skipPastTrimmedGap && state.exists) {
      this.position = state.lastGeneratedId;
    }
    if (onGap === undefined) {
      logger.warn(`${this.label}: ${gap.reason}; reading on after ${gap.cursor}`);
    }
    try {
      await onGap?.(gap);
    } catch (error) {
      logger.error(`${this.label}: gap handler failed`, error);
    }
  }

  private async handle(entries: readonly StreamEntry[]): Promise<void> {
    const last = entries[entries.length - 1];
    if (last === undefined) return;
    try {
      // A synchronous handler moves the cursor in the same turn as it delivers:
      // whoever reads the cursor afterwards has seen the whole batch delivered.
      const pending = this.options.onEntries(entries);
      if (pending !== undefined) await pending;
    } catch (error) {
      this.options.logger.error(
        `${this.label}: handler failed for entries ${entries[0]?.id}…${last.id}`,
        error,
      );
    }
    this.position = last.id;
    const now = this.options.now ?? Date.now;
    this.options.metrics?.readerLag?.set(
      { stream: this.options.stream },
      Math.max(0, now() - idMs(last.id)) / 1000,
    );
  }

  private async run(): Promise<void> {
    const { stream, count, logger } = this.options;
    let failures = 0;
    while (!this.stopped) {
      try {
        if (this.connection.status !== "ready") {
          await this.connection.connect();
          await this.resume();
        }
        const reply = await this.bounded(
          this.connection.xreadBuffer(
            "COUNT",
            count,
            "BLOCK",
            this.blockMs,
            "STREAMS",
            stream,
            this.position,
          ),
          this.blockMs + this.replyTimeoutMs,
        );
        if (failures > 0) {
          logger.info(`${this.label}: reading again after ${this.position}`);
          failures = 0;
        }
        await this.handle(entriesOf(reply));
      } catch (error) {
        if (this.stopped) break;
        failures += 1;
        const reason = this.lastConnectionError ?? (error as Error).message;
        this.lastConnectionError = undefined;
        const message = `${this.label}: Redis read failed (${reason}); retrying after ${this.position}`;
        // One warning per outage; the retries that follow are detail.
        if (failures === 1) logger.warn(message);
        else logger.debug(message);
        this.connection.disconnect();
        await sleep(backoffMs(failures), this.stopping.signal);
      }
    }
  }
}

/** What the reader learns about its stream when it reconnects. */
type StreamState =
  | { readonly exists: false }
  | {
      readonly exists: true;
      readonly length: number | undefined;
      readonly lastGeneratedId: string;
      /** `undefined` when the stream is empty. */
      readonly firstEntryId: string | undefined;
      /** Whether the entry at the cursor is still in the stream. */
      readonly cursorPresent: boolean;
      /** Redis ≥ 7 only: how many entries were ever added. */
      readonly entriesAdded: number | undefined;
      /** Redis ≥ 7 only: the highest id removed by XDEL (trimming leaves it alone). */
      readonly maxDeletedId: string | undefined;
    };

/**
 * Decides whether entries the reader had not read are gone. The cursor is `0-0`
 * or the id of an entry the reader saw in this stream (or in the one it replaced).
 *
 * - The stream was lost (deleted, Redis restarted without its data, or restored
 *   from an older snapshot or replica): it is missing, its last id is below the
 *   cursor, or the cursor entry is gone although this stream never lost an entry
 *   (Redis ≥ 7 tells). A gap whenever the reader had seen entries. Reading goes on
 *   after the cursor, not from `0-0`: entries of the new stream with ids at or
 *   below the cursor were already processed (restored from an older copy) or
 *   cannot be told apart from such entries, and re-reading them would hand up to a
 *   whole stream (`MAXLEN`) of old entries over again. Entries added after the
 *   restart get `XADD *` ids from the server's clock, which lie above the cursor
 *   as long as the Redis servers' clocks agree within the time since the cursor's
 *   entry was added. The gap is still reported, so the session-events side drops
 *   its session cache and re-checks open streams. Until the reader processes an
 *   entry of the new stream, each reconnect finds the same gap again.
 * - Otherwise a gap when the stream now starts after the cursor's successor (its
 *   head was trimmed past entries not yet read), or an entry after the cursor was
 *   deleted. Redis ≥ 7 also says when no entry was ever removed: then there is none.
 *   On older Redis the first check is conservative: a head trimmed exactly up to
 *   the cursor, or new entries in a stream that was empty at startup, count too.
 */
function findGap(cursor: string, state: StreamState): StreamGap | undefined {
  const lost = (reason: string): StreamGap => ({ kind: "lost", cursor, reason });
  const trimmed = (reason: string): StreamGap => ({ kind: "trimmed", cursor, reason });
  if (!state.exists) {
    return cursor === ZERO_ID ? undefined : lost(`the stream no longer exists (cursor ${cursor})`);
  }
  const { length, lastGeneratedId, firstEntryId, cursorPresent, entriesAdded, maxDeletedId } =
    state;
  const neverRemoved = entriesAdded !== undefined && entriesAdded === length;
  if (compareIds(lastGeneratedId, cursor) < 0) {
    return lost(`the stream's last id ${lastGeneratedId} is below the cursor ${cursor}`);
  }
  if (cursor !== ZERO_ID && !cursorPresent) {
    // The cursor entry is gone: trimmed or deleted, unless this stream never lost
    // an entry, or lost it from its middle without any XDEL reaching that far.
    const vanished =
      neverRemoved ||
      (maxDeletedId !== undefined &&
        firstEntryId !== undefined &&
        compareIds(firstEntryId, cursor) < 0 &&
        compareIds(maxDeletedId, cursor) < 0);
    if (vanished)
      return lost(`the entry ${cursor} was never removed from this stream: it was recreated`);
  }
  if (neverRemoved) return undefined;
  if (maxDeletedId !== undefined && compareIds(maxDeletedId, cursor) > 0) {
    return trimmed(`entries after ${cursor} up to ${maxDeletedId} were deleted before being read`);
  }
  if (firstEntryId === undefined) {
    return compareIds(lastGeneratedId, cursor) > 0
      ? trimmed(`entries after ${cursor} were removed before being read`)
      : undefined;
  }
  return compareIds(firstEntryId, successor(cursor)) > 0
    ? trimmed(`the stream now starts at ${firstEntryId}, after the cursor ${cursor}`)
    : undefined;
}

async function lastEntryId(connection: RedisClient, stream: string): Promise<string> {
  const [last] = await connection.xrevrangeBuffer(stream, "+", "-", "COUNT", 1);
  return last === undefined ? ZERO_ID : last[0].toString();
}

async function readStreamState(
  connection: RedisClient,
  stream: string,
  cursor: string,
): Promise<StreamState> {
  let reply: unknown;
  try {
    reply = await connection.xinfo("STREAM", stream);
  } catch (error) {
    if (/no such key/i.test((error as Error).message)) return { exists: false };
    throw error;
  }
  const info = new Map<string, unknown>();
  const flat = Array.isArray(reply) ? reply : [];
  for (let index = 0; index + 1 < flat.length; index += 2) {
    info.set(String(flat[index]), flat[index + 1]);
  }
  const lastGeneratedId = info.get("last-generated-id");
  if (typeof lastGeneratedId !== "string") throw new Error("unexpected XINFO STREAM reply");
  const length = integer(info.get("length"));
  const entriesAdded = integer(info.get("entries-added"));
  const maxDeletedId = info.get("max-deleted-entry-id");
  const firstEntry = info.get("first-entry");
  const cursorPresent =
    cursor !== ZERO_ID && (await connection.xrangeBuffer(stream, cursor, cursor)).length > 0;
  return {
    exists: true,
    length,
    lastGeneratedId,
    firstEntryId: Array.isArray(firstEntry) ? String(firstEntry[0]) : undefined,
    cursorPresent,
    entriesAdded,
    maxDeletedId: typeof maxDeletedId === "string" ? maxDeletedId : undefined,
  };
}

/** An integer reply, as a number or (with `stringNumbers`) a string. */
function integer(value: unknown): number | undefined {
  if (typeof value === "number") return value;
  return typeof value === "string" && /^\d+$/.test(value) ? Number(value) : undefined;
}

/** Flattens an `XREAD` reply (`[[key, [[id, [field, value, …]], …]]]` or null). */
function entriesOf(reply: unknown): StreamEntry[] {
  if (reply === null) return [];
  if (!Array.isArray(reply)) throw new Error("unexpected XREAD reply");
  const entries: StreamEntry[] = [];
  for (const [, items] of reply as [Buffer, [Buffer, Buffer[] | null][]][]) {
    for (const [id, flat] of items) {
      const fields = new Map<string, Buffer>();
      for (let index = 0; flat !== null && index + 1 < flat.length; index += 2) {
        fields.set(flat[index]!.toString(), flat[index + 1]!);
      }
      entries.push({ id: id.toString(), fields });
    }
  }
  return entries;
}

/** Reconnect delay: 100 ms doubling to 5 s, each drawn from the upper half of its step. */
function backoffMs(attempt: number): number {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(attempt - 1, 16));
  return base / 2 + Math.random() * (base / 2);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

function requirePositiveInteger(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`stream reader: ${name} must be a positive integer, got ${value}`);
  }
}

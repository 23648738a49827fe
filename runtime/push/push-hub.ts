/**
 * The PushHub: every open SubscribeEvents stream of this process, indexed by
 * user and by device session, each with its own bounded queue of signed events
 * the transport has not taken yet (contract §7). Publishing never waits on a
 * stream; the hub can end any stream at any moment.
 */
import type { KeyObject } from "node:crypto";
import {
  GatewayError,
  OUTCOMES,
  outcomeError,
  STREAM_END_OUTCOMES,
  type StreamEndReason,
} from "../../handlers/errors.js";
import type { Logger } from "../../handlers/ports.js";
import type { SignedEvent } from "../../handlers/subscribe-events.js";
import type { Metrics } from "../telemetry/metrics.js";

/** Why a stream closed; the `reason` label of `gateway_push_stream_closes_total`. */
export type PushStreamCloseReason = StreamEndReason | "client";

/** Why the hub ends a session's streams. */
export type SessionEndReason = "revoked" | "session_changed" | "recheck_failed";

/** The terminal error a stream ends with for each hub-initiated reason (contract §7). */
function terminalError(reason: StreamEndReason): GatewayError {
  return outcomeError(STREAM_END_OUTCOMES[reason]);
}

/** A session as the session store or a snapshot states it now. */
export interface CurrentSession {
  readonly userId: string;
  readonly publicKey: KeyObject;
  readonly status: "active" | "revoked";
}

/** True when a stream was opened by the session as it is now (same user, same key). */
function isSameOwner(owner: PushStreamOwner, session: CurrentSession): boolean {
  return (
    owner.userId === session.userId &&
    (owner.publicKey === undefined || owner.publicKey.equals(session.publicKey))
  );
}

/** Whose events a stream receives. */
export interface PushStreamOwner {
  readonly userId: string;
  readonly deviceSessionId: string;
  /** The session key the stream authenticated with, to notice a key change. */
  readonly publicKey?: KeyObject;
}

/** Which streams an event goes to: every stream of the user, or only one session's. */
export interface PushTarget {
  readonly userId: string;
  /** When set, only streams of this session (and of `userId`) receive the event. */
  readonly deviceSessionId?: string;
}

/** One registered stream, as its SubscribeEvents call sees it. */
export interface PushStream extends PushStreamOwner {
  /** Aborts once the stream no longer receives events; `reason` is its terminal GatewayError. */
  readonly ended: AbortSignal;
  /** Events queued that the transport has not taken yet. */
  readonly queued: number;
  /**
   * The oldest queued event, waiting for one. Rejects with the terminal
   * GatewayError once the hub ended the stream (queued events are dropped);
   * resolves `undefined` once `signal` aborts.
   */
  next(signal: AbortSignal): Promise<SignedEvent | undefined>;
  /**
   * Registers how to reset the stream's transport. The hub calls it when a
   * stream it ended is not released within the terminal timeout.
   */
  onReset(reset: () => void): void;
  /** Ends the stream with the caller's error; counted under no close reason. */
  fail(error: GatewayError): void;
  /**
   * The call is over (status delivered, transport reset or client gone): frees
   * the stream. A stream the hub had not ended counts as closed by the client.
   * Idempotent.
   */
  release(): void;
}

/** The in-memory registry of open push streams. */
export interface PushHub {
  /**
   * Registers a stream. Throws a GatewayError `resource_exhausted` when the
   * session or the process is at its cap, `unavailable` once the hub is closing.
   */
  open(owner: PushStreamOwner): PushStream;
  /**
   * Queues one signed event on every matching stream and returns how many got
   * it. `event` may be a function: it is then called (signing) at most once,
   * and only when some stream matches. A stream whose queue is full ends with
   * `RESOURCE_EXHAUSTED`; no other stream is affected and nothing waits.
   */
  publish(event: SignedEvent | (() => SignedEvent), target: PushTarget): number;
  /**
   * Ends every stream of exactly this session and returns how many: `revoked`
   * with `FAILED_PRECONDITION`, `recheck_failed` with `UNAVAILABLE` (the
   * client reconnects).
   */
  endSession(
    deviceSessionId: string,
    reason?: Exclude<SessionEndReason, "session_changed">,
  ): number;
  /**
   * Brings this session's streams in line with the session as it is now: all
   * end as revoked when it is gone or not active; otherwise those opened under
   * another user or key end as `session_changed` (`UNAVAILABLE`, reconnect).
   * Returns how many ended.
   */
  reconcile(deviceSessionId: string, session: CurrentSession | undefined): number;
  /** Sessions that have open streams (to re-check them after a stream-reader gap). */
  openSessionIds(): string[];
  /** Open streams right now. */
  readonly size: number;
  /**
   * Ends every stream with `UNAVAILABLE` and refuses new ones; resolves once
   * every stream is released, or after the terminal timeout at the latest.
   */
  close(): Promise<void>;
}

/** PushHub limits and collaborators. */
export interface PushHubOptions {
  /** Events queued per stream before it overflows (`GATEWAY_PUSH_STREAM_QUEUE_SIZE`). */
  readonly queueSize: number;
  /** Streams per device session (`GATEWAY_MAX_STREAMS_PER_SESSION`). */
  readonly maxStreamsPerSession: number;
  /** Streams per process (`GATEWAY_MAX_PUSH_STREAMS`). */
  readonly maxStreams: number;
  /** How long an ended stream may take to deliver its status before it is reset (`GATEWAY_SHUTDOWN_TIMEOUT`). */
  readonly terminalTimeoutMs: number;
  readonly metrics?: Pick<
    Metrics,
    "pushStreamsActive" | "pushEventsDelivered" | "pushStreamCloses"
  >;
  readonly logger: Logger;
}

/** A bounded FIFO of events. */
class EventQueue {
  /** Grows by doubling up to `capacity`, so idle streams hold little memory. */
  private slots: (SignedEvent | undefined)[];
  private head = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    this.slots = new Array(Math.min(capacity, 8));
  }

  get size(): number {
    return this.count;
  }

  get full(): boolean {
    return this.count >= this.capacity;
  }

  push(event: SignedEvent): void {
    if (this.count === this.slots.length) this.grow();
    this.slots[(this.head + this.count) % this.slots.length] = event;
    this.count++;
  }

  private grow(): void {
    const larger: (SignedEvent | undefined)[] = new Array(
      Math.min(this.capacity, this.slots.length * 2),
    );
    for (let index = 0; index < this.count; index++) {
      larger[index] = this.slots[(this.head + index) % this.slots.length];
    }
    this.slots = larger;
    this.head = 0;
  }

  shift(): SignedEvent | undefined {
    if (this.count === 0) return undefined;
    const event = this.slots[this.head];
    this.slots[this.head] = undefined;
    this.head = (this.head + 1) % this.slots.length;
    this.count--;
    return event;
  }

  clear(): void {
    this.slots = new Array(Math.min(this.capacity, 8));
    this.head = 0;
    this.count = 0;
  }
}

function ownerLabel(owner: PushStreamOwner): string {
  return `user ${owner.userId} session ${owner.deviceSessionId}`;
}

/** Not client-visible: the reason `ended` carries once the client went away. */
const CLIENT_GONE = "push stream closed by the client";

/**
 * Creates the PushHub.
 *
 * @example
 * const hub = createPushHub({ queueSize: 256, maxStreamsPerSession: 4, maxStreams: 100_000,
 *   terminalTimeoutMs: 5_000, metrics, logger });
 * hub.publish(() => signEvent(signer, fields), { userId });
 */
export function createPushHub(options: PushHubOptions): PushHub {
  const { logger, metrics } = options;
  if (!(options.queueSize >= 1)) throw new RangeError("queueSize must be at least 1");

  const byUser = new Map<string, Set<Entry>>();
  const bySession = new Map<string, Set<Entry>>();
  /** Streams not yet released, ended or not: what close() waits for. */
  const live = new Set<Entry>();
  /** Unreleased streams per session: what the per-session cap counts. */
  const liveBySession = new Map<string, number>();
  let registered = 0;
  let closing = false;
  let closed: Promise<void> | undefined;
  let allReleased: (() => void) | undefined;

  class Entry implements PushStream {
    readonly queue = new EventQueue(options.queueSize);
    readonly controller = new AbortController();
    readonly ended = this.controller.signal;
    isRegistered = true;
    isReleased = false;
    wake: (() => void) | undefined;
    reset: (() => void) | undefined;
    terminalTimer: NodeJS.Timeout | undefined;

    constructor(
      readonly userId: string,
      readonly deviceSessionId: string,
      readonly publicKey: KeyObject | undefined,
    ) {}

    get queued(): number {
      return this.queue.size;
    }

    next(signal: AbortSignal): Promise<SignedEvent | undefined> {
      return new Promise((resolve, reject) => {
        const settle = () => {
          this.wake = undefined;
          signal.removeEventListener("abort", settle);
          if (this.ended.aborted) reject(this.ended.reason);
          else if (signal.aborted) resolve(undefined);
          else {
            const event = this.queue.shift();
            if (event !== undefined) resolve(event);
            else this.wait(settle, signal);
          }
        };
        settle();
      });
    }

    private wait(settle: () => void, signal: AbortSignal): void {
      this.wake = settle;
      signal.addEventListener("abort", settle, { once: true });
    }

    onReset(reset: () => void): void {
      this.reset = reset;
    }

    fail(error: GatewayError): void {
      end(this, error, undefined);
    }

    release(): void {
      if (this.isReleased) return;
      if (this.isRegistered) end(this, new GatewayError("unavailable", CLIENT_GONE), "client");
      this.isReleased = true;
      clearTimeout(this.terminalTimer);
      this.reset = undefined;
      live.delete(this);
      const siblings = (liveBySession.get(this.deviceSessionId) ?? 1) - 1;
      if (siblings > 0) liveBySession.set(this.deviceSessionId, siblings);
      else liveBySession.delete(this.deviceSessionId);
      logger.debug(`push stream released (${ownerLabel(this)})`);
      if (live.size === 0) allReleased?.();
    }
  }

  function index(map: Map<string, Set<Entry>>, key: string, entry: Entry): void {
    let set = map.get(key);
    if (set === undefined) {
      set = new Set();
      map.set(key, set);
    }
    set.add(entry);
  }

  function unindex(map: Map<string, Set<Entry>>, key: string, entry: Entry): void {
    const set = map.get(key);
    if (set === undefined) return;
    set.delete(entry);
    if (set.size === 0) map.delete(key);
  }

  /** Takes a stream out of the indexes, wakes its reader with `error`, arms the reset timer. */
  function end(entry: Entry, error: GatewayError, reason: PushStreamCloseReason | undefined): void {
    if (!entry.isRegistered) return;
    entry.isRegistered = false;
    registered--;
    unindex(byUser, entry.userId, entry);
    unindex(bySession, entry.deviceSessionId, entry);
    entry.queue.clear();
    metrics?.pushStreamsActive.dec();
    if (reason !== undefined) metrics?.pushStreamCloses.inc({ reason });
    entry.controller.abort(error);
    entry.wake?.();

    if (reason === "client") return;
    const details = `${ownerLabel(entry)}, ${reason ?? error.code}`;
    if (reason === "overflow") logger.warn(`push stream overflowed (${details})`);
    else logger.debug(`push stream ended (${details})`);

    // A client that stopped reading never takes its terminal status: reset it
    // once the budget is spent, so its transport and slot are freed.
    entry.terminalTimer = setTimeout(() => {
      if (entry.isReleased) return;
      logger.info(`push stream reset: terminal status not taken in time (${details})`);
      forceRelease(entry);
    }, options.terminalTimeoutMs);
    entry.terminalTimer.unref();
  }

  function endWhere(
    deviceSessionId: string,
    reason: SessionEndReason,
    matches: (entry: Entry) => boolean,
  ): number {
    const entries = [...(bySession.get(deviceSessionId) ?? [])].filter(matches);
    for (const entry of entries) end(entry, terminalError(reason), reason);
    return entries.length;
  }

  async function closeAll(): Promise<void> {
    closing = true;
    for (const entry of [...live]) end(entry, terminalError("shutdown"), "shutdown");
    if (live.size === 0) return;
    logger.info(`push hub closing: waiting for ${live.size} stream(s) to take their status`);
    let budget: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      allReleased = resolve;
      budget = setTimeout(resolve, options.terminalTimeoutMs);
    });
    clearTimeout(budget);
    allReleased = undefined;
    // Whatever is left has had its whole budget: reset it now rather than
    // leave it to its own timer.
    for (const entry of [...live]) forceRelease(entry);
  }

  function forceRelease(entry: Entry): void {
    try {
      entry.reset?.();
    } finally {
      entry.release();
    }
  }

  return {
    open(owner) {
      if (closing) throw outcomeError(OUTCOMES.shuttingDown);
      // Streams the hub ended but whose call is not over yet still hold a
      // transport: they count until released.
      const siblings = liveBySession.get(owner.deviceSessionId) ?? 0;
      if (siblings >= options.maxStreamsPerSession) {
        throw outcomeError(OUTCOMES.tooManyStreamsForSession);
      }
      if (live.size >= options.maxStreams) {
        throw outcomeError(OUTCOMES.streamCapacityReached);
      }
      const entry = new Entry(owner.userId, owner.deviceSessionId, owner.publicKey);
      index(byUser, entry.userId, entry);
      index(bySession, entry.deviceSessionId, entry);
      live.add(entry);
      liveBySession.set(entry.deviceSessionId, siblings + 1);
      registered++;
      metrics?.pushStreamsActive.inc();
      logger.debug(`push stream opened (${ownerLabel(entry)})`);
      return entry;
    },

    publish(event, target) {
      const candidates =
        target.deviceSessionId === undefined
          ? byUser.get(target.userId)
          : bySession.get(target.deviceSessionId);
      if (candidates === undefined) return 0;
      const recipients = [...candidates].filter((entry) => entry.userId === target.userId);
      if (recipients.length === 0) return 0;

      const signed = typeof event === "function" ? event() : event;
      let delivered = 0;
      for (const entry of recipients) {
        if (entry.queue.full) {
          end(entry, terminalError("overflow"), "overflow");
          continue;
        }
        entry.queue.push(signed);
        delivered++;
        entry.wake?.();
      }
      if (delivered > 0) metrics?.pushEventsDelivered.inc(delivered);
      return delivered;
    },

    endSession(deviceSessionId, reason = "revoked") {
      return endWhere(deviceSessionId, reason, () => true);
    },

    reconcile(deviceSessionId, session) {
      if (session === undefined || session.status !== "active") {
        return endWhere(deviceSessionId, "revoked", () => true);
      }
      return endWhere(deviceSessionId, "session_changed", (entry) => !isSameOwner(entry, session));
    },

    openSessionIds() {
      return [...bySession.keys()];
    },

    get size() {
      return registered;
    },

    close() {
      closed ??= closeAll();
      return closed;
    },
  };
}

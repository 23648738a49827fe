/**
 * The PushHub: every open SubscribeEvents stream of this process, indexed by
 * user and by device session, each with its own bounded queue of signed events
 * the transport has not taken yet (contract §7). Publishing never waits on a
 * stream; the hub can end any stream at any moment.
 */
import type { KeyObject } from "node:crypto";
import {
  type GatewayError,
  OUTCOMES,
  outcomeError,
  STREAM_END_OUTCOMES,
  type StreamEndReason,
} from "../../handlers/errors.js";
import type { Logger } from "../../handlers/ports.js";
import type { SignedEvent } from "../../handlers/subscribe-events.js";
import type { Metrics } from "../telemetry/metrics.js";
import {
  HubStream,
  type PushStream,
  type PushStreamCloseReason,
  type PushStreamOwner,
  type StreamRegistry,
} from "./push-stream.js";

export type { PushStream, PushStreamCloseReason, PushStreamOwner } from "./push-stream.js";

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

/** Which streams an event goes to: every stream of the user, or only one session's. */
export interface PushTarget {
  readonly userId: string;
  /** When set, only streams of this session (and of `userId`) receive the event. */
  readonly deviceSessionId?: string;
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
  /** Users that have open streams (to keep their history alive). */
  openUserIds(): string[];
  /**
   * Ends every open stream with `UNAVAILABLE` (`interrupted`): events meant for
   * them were lost before delivery, and their clients must resume to learn
   * whether they can be recovered. Returns how many ended.
   */
  interruptAll(): number;
  /** {@link interruptAll} for the streams of one user. */
  interruptUser(userId: string): number;
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

/**
 * Creates the PushHub. Its methods keep working when taken off the hub
 * (`const { publish } = hub`).
 *
 * @example
 * const hub = createPushHub({ queueSize: 256, maxStreamsPerSession: 4, maxStreams: 100_000,
 *   terminalTimeoutMs: 5_000, metrics, logger });
 * hub.publish(() => signEvent(signer, fields), { userId });
 */
export function createPushHub(options: PushHubOptions): PushHub {
  const hub = new StreamHub(options);
  return {
    open: (owner) => hub.open(owner),
    publish: (event, target) => hub.publish(event, target),
    endSession: (deviceSessionId, reason) => hub.endSession(deviceSessionId, reason),
    reconcile: (deviceSessionId, session) => hub.reconcile(deviceSessionId, session),
    openSessionIds: () => hub.openSessionIds(),
    openUserIds: () => hub.openUserIds(),
    interruptAll: () => hub.interruptAll(),
    interruptUser: (userId) => hub.interruptUser(userId),
    get size() {
      return hub.size;
    },
    close: () => hub.close(),
  };
}

/** Streams by a key (user or device session), each key kept only while it has streams. */
class StreamIndex {
  private readonly streams = new Map<string, Set<HubStream>>();

  /** The streams under `key`, if any. */
  get(key: string): ReadonlySet<HubStream> | undefined {
    return this.streams.get(key);
  }

  /** Every key with streams. */
  keys(): string[] {
    return [...this.streams.keys()];
  }

  add(key: string, stream: HubStream): void {
    let set = this.streams.get(key);
    if (set === undefined) {
      set = new Set();
      this.streams.set(key, set);
    }
    set.add(stream);
  }

  delete(key: string, stream: HubStream): void {
    const set = this.streams.get(key);
    if (set === undefined) return;
    set.delete(stream);
    if (set.size === 0) this.streams.delete(key);
  }
}

/** The hub's state and rules; {@link createPushHub} hands out its {@link PushHub} side. */
class StreamHub implements StreamRegistry {
  private readonly byUser = new StreamIndex();
  private readonly bySession = new StreamIndex();
  /** Streams not yet released, ended or not: what close() waits for. */
  private readonly live = new Set<HubStream>();
  /** Unreleased streams per session: what the per-session cap counts. */
  private readonly liveBySession = new Map<string, number>();
  private registered = 0;
  private closing = false;
  private closed: Promise<void> | undefined;
  private allReleased: (() => void) | undefined;
  private readonly logger: Logger;
  private readonly metrics: PushHubOptions["metrics"];

  constructor(private readonly options: PushHubOptions) {
    if (!(options.queueSize >= 1)) throw new RangeError("queueSize must be at least 1");
    this.logger = options.logger;
    this.metrics = options.metrics;
  }

  get size(): number {
    return this.registered;
  }

  open(owner: PushStreamOwner): PushStream {
    if (this.closing) throw outcomeError(OUTCOMES.shuttingDown);
    // Streams the hub ended but whose call is not over yet still hold a
    // transport: they count until released.
    const siblings = this.liveBySession.get(owner.deviceSessionId) ?? 0;
    if (siblings >= this.options.maxStreamsPerSession) {
      throw outcomeError(OUTCOMES.tooManyStreamsForSession);
    }
    if (this.live.size >= this.options.maxStreams) {
      throw outcomeError(OUTCOMES.streamCapacityReached);
    }
    const stream = new HubStream(owner, this.options.queueSize, this);
    this.byUser.add(stream.userId, stream);
    this.bySession.add(stream.deviceSessionId, stream);
    this.live.add(stream);
    this.liveBySession.set(stream.deviceSessionId, siblings + 1);
    this.registered++;
    this.metrics?.pushStreamsActive.inc();
    this.logger.debug(`push stream opened (${stream.label})`);
    return stream;
  }

  publish(event: SignedEvent | (() => SignedEvent), target: PushTarget): number {
    const candidates =
      target.deviceSessionId === undefined
        ? this.byUser.get(target.userId)
        : this.bySession.get(target.deviceSessionId);
    if (candidates === undefined) return 0;
    const recipients = [...candidates].filter((stream) => stream.userId === target.userId);
    if (recipients.length === 0) return 0;

    const signed = typeof event === "function" ? event() : event;
    let delivered = 0;
    for (const stream of recipients) {
      if (stream.isFull) {
        this.end(stream, terminalError("overflow"), "overflow");
        continue;
      }
      stream.deliver(signed);
      delivered++;
    }
    if (delivered > 0) this.metrics?.pushEventsDelivered.inc(delivered);
    return delivered;
  }

  endSession(
    deviceSessionId: string,
    reason: Exclude<SessionEndReason, "session_changed"> = "revoked",
  ): number {
    return this.endWhere(deviceSessionId, reason, () => true);
  }

  reconcile(deviceSessionId: string, session: CurrentSession | undefined): number {
    if (session === undefined || session.status !== "active") {
      return this.endWhere(deviceSessionId, "revoked", () => true);
    }
    return this.endWhere(
      deviceSessionId,
      "session_changed",
      (stream) => !isSameOwner(stream, session),
    );
  }

  openSessionIds(): string[] {
    return this.bySession.keys();
  }

  openUserIds(): string[] {
    return this.byUser.keys();
  }

  interruptAll(): number {
    return this.interrupt([...this.live]);
  }

  interruptUser(userId: string): number {
    return this.interrupt([...(this.byUser.get(userId) ?? [])]);
  }

  private interrupt(candidates: readonly HubStream[]): number {
    const streams = candidates.filter((stream) => stream.isRegistered);
    for (const stream of streams) this.end(stream, terminalError("interrupted"), "interrupted");
    return streams.length;
  }

  close(): Promise<void> {
    this.closed ??= this.closeAll();
    return this.closed;
  }

  /** Takes a stream out of the indexes, wakes its reader with `error`, arms the reset timer. */
  end(stream: HubStream, error: GatewayError, reason: PushStreamCloseReason | undefined): void {
    if (!stream.isRegistered) return;
    stream.unregister();
    this.registered--;
    this.byUser.delete(stream.userId, stream);
    this.bySession.delete(stream.deviceSessionId, stream);
    this.metrics?.pushStreamsActive.dec();
    if (reason !== undefined) this.metrics?.pushStreamCloses.inc({ reason });
    stream.abort(error);

    if (reason === "client") return;
    const details = `${stream.label}, ${reason ?? error.code}`;
    if (reason === "overflow") this.logger.warn(`push stream overflowed (${details})`);
    else this.logger.debug(`push stream ended (${details})`);
    stream.releaseWithin(this.options.terminalTimeoutMs, () => {
      this.logger.info(`push stream reset: terminal status not taken in time (${details})`);
    });
  }

  released(stream: HubStream): void {
    this.live.delete(stream);
    const siblings = (this.liveBySession.get(stream.deviceSessionId) ?? 1) - 1;
    if (siblings > 0) this.liveBySession.set(stream.deviceSessionId, siblings);
    else this.liveBySession.delete(stream.deviceSessionId);
    this.logger.debug(`push stream released (${stream.label})`);
    if (this.live.size === 0) this.allReleased?.();
  }

  private endWhere(
    deviceSessionId: string,
    reason: SessionEndReason,
    matches: (stream: HubStream) => boolean,
  ): number {
    const streams = [...(this.bySession.get(deviceSessionId) ?? [])].filter(matches);
    for (const stream of streams) this.end(stream, terminalError(reason), reason);
    return streams.length;
  }

  private async closeAll(): Promise<void> {
    this.closing = true;
    for (const stream of [...this.live]) this.end(stream, terminalError("shutdown"), "shutdown");
    if (this.live.size === 0) return;
    this.logger.info(
      `push hub closing: waiting for ${this.live.size} stream(s) to take their status`,
    );
    let budget: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.allReleased = resolve;
      budget = setTimeout(resolve, this.options.terminalTimeoutMs);
    });
    clearTimeout(budget);
    this.allReleased = undefined;
    // Whatever is left has had its whole budget: reset it now rather than
    // leave it to its own timer.
    for (const stream of [...this.live]) stream.forceRelease();
  }
}

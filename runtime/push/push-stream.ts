/**
 * One push stream registered in the PushHub, as its SubscribeEvents call and
 * the hub see it: its bounded queue, the signal that ends it and the release
 * that frees its slot.
 */
import type { KeyObject } from "node:crypto";
import { GatewayError, type StreamEndReason } from "../../handlers/errors.js";
import type { SignedEvent } from "../../handlers/subscribe-events.js";
import { BoundedQueue } from "./bounded-queue.js";

/** Why a stream closed; the `reason` label of `gateway_push_stream_closes_total`. */
export type PushStreamCloseReason = StreamEndReason | "client";

/** Whose events a stream receives. */
export interface PushStreamOwner {
  readonly userId: string;
  readonly deviceSessionId: string;
  /** The session key the stream authenticated with, to notice a key change. */
  readonly publicKey?: KeyObject;
}

/** One registered stream, as its SubscribeEvents call sees it. */
export interface PushStream extends PushStreamOwner {
  /** `user … session …`, for log lines. */
  readonly label: string;
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
   * The oldest queued event if there is one and the stream is not ended,
   * without waiting: a reader that finds events queued (a burst) takes them
   * without a promise each; else `undefined`, and `next` says why.
   */
  take(): SignedEvent | undefined;
  /**
   * The transport accepted every event taken so far. Until then the events
   * taken count against the queue's size, as if still queued: the bound is
   * on events the transport has not accepted, however many are written.
   */
  settled(): void;
  /**
   * Registers how to reset the stream's transport. The hub calls it when a
   * stream it ended is not released within the terminal timeout.
   */
  onReset(reset: () => void): void;
  /** Ends the stream with the caller's error, counted under `reason` when one is given. */
  fail(error: GatewayError, reason?: PushStreamCloseReason): void;
  /**
   * The call is over (status delivered, transport reset or client gone): frees
   * the stream. A stream the hub had not ended counts as closed by the client.
   * Idempotent.
   */
  release(): void;
}

/** What a stream needs from the hub it is registered in. */
export interface StreamRegistry {
  /** Takes `stream` out of the hub and ends it with `error`, counted under `reason` if any. */
  end(stream: HubStream, error: GatewayError, reason: PushStreamCloseReason | undefined): void;
  /** `stream` was released: its slot is free. */
  released(stream: HubStream): void;
}

/** Not client-visible: the reason `ended` carries once the client went away. */
const CLIENT_GONE = "push stream closed by the client";

/** A stream of the hub: a {@link PushStream} plus what the hub does to it. */
export class HubStream implements PushStream {
  readonly userId: string;
  readonly deviceSessionId: string;
  readonly publicKey: KeyObject | undefined;
  private readonly queue: BoundedQueue<SignedEvent>;
  private readonly controller = new AbortController();
  readonly ended: AbortSignal = this.controller.signal;
  private registered = true;
  private isReleased = false;
  /** Events taken since the transport last accepted everything (`settled`). */
  private unsettled = 0;
  private wake: (() => void) | undefined;
  /**
   * `ended.aborted`, kept as a field: the reader asks for each event, and the
   * signal's getter checks its receiver each time (about 1 % of a node's CPU
   * at fan-out).
   */
  private isEnded = false;
  /** The signal whose abort wakes the reader (`watch`). */
  private watched: AbortSignal | undefined;
  private reset: (() => void) | undefined;
  private terminalTimer: NodeJS.Timeout | undefined;

  /**
   * @param owner whose events the stream receives
   * @param queueSize events queued at most before the stream overflows
   * @param registry the hub that registered it
   */
  constructor(
    owner: PushStreamOwner,
    queueSize: number,
    private readonly registry: StreamRegistry,
  ) {
    this.userId = owner.userId;
    this.deviceSessionId = owner.deviceSessionId;
    this.publicKey = owner.publicKey;
    this.queue = new BoundedQueue(queueSize);
  }

  /** `user … session …`, for log lines. */
  get label(): string {
    return `user ${this.userId} session ${this.deviceSessionId}`;
  }

  get queued(): number {
    return this.queue.size;
  }

  /** True until the hub ended the stream: it still receives events. */
  get isRegistered(): boolean {
    return this.registered;
  }

  /** True once as many events as the queue may hold wait for the transport, queued or taken. */
  get isFull(): boolean {
    return this.queue.size + this.unsettled >= this.queue.capacity;
  }

  next(signal: AbortSignal): Promise<SignedEvent | undefined> {
    this.watch(signal);
    return new Promise((resolve, reject) => {
      const settle = () => {
        this.wake = undefined;
        if (this.isEnded) reject(this.ended.reason);
        else if (signal.aborted) resolve(undefined);
        else {
          const event = this.queue.shift();
          if (event === undefined) this.wake = settle;
          else {
            this.unsettled++;
            resolve(event);
          }
        }
      };
      settle();
    });
  }

  take(): SignedEvent | undefined {
    if (this.isEnded) return undefined;
    const event = this.queue.shift();
    if (event !== undefined) this.unsettled++;
    return event;
  }

  settled(): void {
    this.unsettled = 0;
  }

  /**
   * Wakes a waiting reader when `signal` aborts. A reader passes the same
   * signal on every call, so its listener is added once per stream, not once
   * per event: a profile of one event to 50 streams of a user had adding and
   * removing it per event at about 3 % of the node's CPU.
   */
  private watch(signal: AbortSignal): void {
    if (this.watched === signal) return;
    this.watched = signal;
    signal.addEventListener("abort", () => this.wake?.(), { once: true });
  }

  onReset(reset: () => void): void {
    this.reset = reset;
  }

  fail(error: GatewayError, reason?: PushStreamCloseReason): void {
    this.registry.end(this, error, reason);
  }

  release(): void {
    if (this.isReleased) return;
    if (this.registered) {
      this.registry.end(this, new GatewayError("unavailable", CLIENT_GONE), "client");
    }
    this.isReleased = true;
    clearTimeout(this.terminalTimer);
    this.reset = undefined;
    this.registry.released(this);
  }

  /** Queues `event` for the stream's reader and wakes it; the hub checks {@link isFull} first. */
  deliver(event: SignedEvent): void {
    this.queue.push(event);
    this.wake?.();
  }

  /** The hub took the stream out: it receives nothing more and drops what it had queued. */
  unregister(): void {
    this.registered = false;
    this.queue.clear();
  }

  /** Ends the stream: `ended` aborts with `error` and a waiting reader rejects with it. */
  abort(error: GatewayError): void {
    this.isEnded = true;
    this.controller.abort(error);
    this.wake?.();
  }

  /**
   * A client that stopped reading never takes its terminal status: unless the
   * stream is released within `timeoutMs`, `onExpired` runs and the stream is
   * reset and released, freeing its transport and slot.
   */
  releaseWithin(timeoutMs: number, onExpired: () => void): void {
    this.terminalTimer = setTimeout(() => {
      if (this.isReleased) return;
      onExpired();
      this.forceRelease();
    }, timeoutMs);
    this.terminalTimer.unref();
  }

  /** Resets the stream's transport, then releases it. */
  forceRelease(): void {
    try {
      this.reset?.();
    } finally {
      this.release();
    }
  }
}

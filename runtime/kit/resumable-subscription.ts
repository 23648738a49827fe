/**
 * A push subscription that survives its stream: it reconnects after every
 * recoverable end with the `event_id` of the last event received, and tells
 * the app, in order with the events, when the gateway could not resume
 * without a gap (contract §12). Transport-neutral and free of Node-only APIs,
 * so a browser transport can use it as well.
 */

/** The fields of a pushed event this needs; every transport's event type has them. */
export interface ResumableEvent {
  readonly eventId: string;
  readonly eventType: string;
}

/**
 * Opens one stream resuming after `lastEventId` (empty: live events only) that
 * yields the gateway's events, the bootstrap event first, and ends when
 * `signal` aborts. Each call must sign a fresh request.
 */
export type OpenEventStream<E extends ResumableEvent> = (
  lastEventId: string,
  signal: AbortSignal,
) => AsyncIterable<E>;

/** One item of a resumable subscription: an event, or the news that events were lost. */
export type ResumableItem<E extends ResumableEvent> =
  | {
      readonly kind: "event";
      /** A verified event; every stream's bootstrap event is one too. */
      readonly event: E;
    }
  | {
      /**
       * The gateway could not replay everything after `lastEventId`: events
       * may be missing, so the app must resync from its backend. The bootstrap
       * event of the new stream follows, then live events from `position`.
       */
      readonly kind: "continuity_lost";
      /** The `event_id` the subscription asked to resume after. */
      readonly lastEventId: string;
      /** The bootstrap's `event_id`: where delivery continues from. */
      readonly position: string;
    };

/** Why and when a resumable subscription reconnects. */
export interface ReconnectInfo {
  /** What ended the stream; `undefined` when it ended without a status. */
  readonly error: unknown;
  /** How long it waits before opening the next stream. */
  readonly delayMs: number;
  /** The `event_id` the next stream resumes after (empty: none received yet). */
  readonly lastEventId: string;
}

/** How a resumable subscription reconnects. */
export interface ResumableSubscriptionOptions {
  /** Resume after this `event_id` from the first stream on; empty or absent: live only. */
  readonly lastEventId?: string;
  /** Ends the subscription cleanly (no error) when it aborts. */
  readonly signal?: AbortSignal;
  /** The first reconnect delay, before jitter; 100 ms by default. */
  readonly minDelayMs?: number;
  /** The longest reconnect delay; 10 s by default. */
  readonly maxDelayMs?: number;
  /**
   * Whether an error that ended a stream allows reconnecting; by default
   * {@link isRecoverableStreamEnd}.
   */
  readonly isRecoverable?: (error: unknown) => boolean;
  /** Told before each reconnect delay. */
  readonly onReconnect?: (info: ReconnectInfo) => void;
  /** Random numbers in [0, 1) for the jitter; `Math.random` by default. */
  readonly random?: () => number;
  /** Waits `ms` or until `signal` aborts; `setTimeout` by default. */
  readonly sleep?: (ms: number, signal: AbortSignal | undefined) => Promise<void>;
}

const DEFAULT_MIN_DELAY_MS = 100;
const DEFAULT_MAX_DELAY_MS = 10_000;

// gRPC status codes; Connect's error codes use the same numbers.
const CANCELLED = 1;
const UNKNOWN = 2;
const RESOURCE_EXHAUSTED = 8;
const INTERNAL = 13;
const UNAVAILABLE = 14;

/** The codes after which the same stream, opened again, can go on. */
const RECOVERABLE_CODES: ReadonlySet<number> = new Set([
  UNAVAILABLE,
  RESOURCE_EXHAUSTED,
  CANCELLED,
  UNKNOWN,
  INTERNAL,
]);

/**
 * Whether a stream-ending error is one a device recovers from by
 * reconnecting (contract §7, §12):
 *
 * - `UNAVAILABLE`: the node is stopping, Redis is unreachable, or the
 *   connection dropped (grpc-js);
 * - `RESOURCE_EXHAUSTED`: the stream overflowed, or a stream cap was reached;
 * - `CANCELLED`: the gateway reset the stream (an overflowed stream whose
 *   client did not take its status in time). The caller's own abort never
 *   gets here: it ends the subscription first;
 * - `UNKNOWN` and `INTERNAL`: a connection that broke mid-stream as Connect
 *   and gRPC-Web report it in a browser (a network error, a missing end of
 *   stream or trailer), and the gateway's answer to a fault of its own.
 *
 * A revoke (`FAILED_PRECONDITION`), authentication and request errors, an
 * expired deadline the caller set, and errors without a status code (an
 * event whose signature does not verify) end the subscription.
 */
export function isRecoverableStreamEnd(error: unknown): boolean {
  if (typeof error !== "object" || error === null || !("code" in error)) return false;
  return typeof error.code === "number" && RECOVERABLE_CODES.has(error.code);
}

/**
 * The delay before reconnect number `failures` (0 for the first after a
 * stream that delivered its bootstrap): the cap doubles from `minDelayMs` up
 * to `maxDelayMs`, and half of it is jitter, so devices dropped together by
 * one node spread their reconnects without any of them retrying at once.
 */
function reconnectDelayMs(
  failures: number,
  options: { minDelayMs: number; maxDelayMs: number; random: () => number },
): number {
  const cap = Math.min(options.maxDelayMs, options.minDelayMs * 2 ** failures);
  return cap / 2 + options.random() * (cap / 2);
}

function sleepWithTimer(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true) {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Follows a device's events across reconnects. Each stream's first event is
 * its bootstrap; when the subscription resumes after an `event_id` and the
 * bootstrap carries another one, a `continuity_lost` item comes first. Every
 * bootstrap, recovered or not, is then passed through as an event (it carries
 * the server time). Streams that end with a recoverable error, or without a
 * status, are reopened after a jittered, doubling delay that starts over once
 * a stream delivered its bootstrap. Any other error is thrown as it came, and
 * no stream is opened after it. Aborting `signal` (or leaving the loop) ends
 * the open stream and the subscription without an error.
 *
 * @example
 * for await (const item of resumableSubscription(open, { signal })) {
 *   if (item.kind === "continuity_lost") await resyncFromBackend();
 *   else handle(item.event);
 * }
 */
export async function* resumableSubscription<E extends ResumableEvent>(
  open: OpenEventStream<E>,
  options: ResumableSubscriptionOptions = {},
): AsyncGenerator<ResumableItem<E>, void, undefined> {
  const { signal } = options;
  const isRecoverable = options.isRecoverable ?? isRecoverableStreamEnd;
  const sleep = options.sleep ?? sleepWithTimer;
  const backoff = {
    minDelayMs: options.minDelayMs ?? DEFAULT_MIN_DELAY_MS,
    maxDelayMs: options.maxDelayMs ?? DEFAULT_MAX_DELAY_MS,
    random: options.random ?? Math.random,
  };
  // A function, so each check reads the signal afresh after an await.
  const aborted = () => signal?.aborted === true;
  let lastEventId = options.lastEventId ?? "";
  let failures = 0;

  while (!aborted()) {
    // One controller per stream, so leaving the loop ends exactly that stream.
    const stream = new AbortController();
    const endStream = () => stream.abort(signal?.reason);
    signal?.addEventListener("abort", endStream, { once: true });
    let ended: unknown;
    try {
      let bootstrapped = false;
      for await (const event of open(lastEventId, stream.signal)) {
        if (!bootstrapped) {
          bootstrapped = true;
          failures = 0;
          if (lastEventId !== "" && event.eventId !== lastEventId) {
            yield { kind: "continuity_lost", lastEventId, position: event.eventId };
          }
        }
        lastEventId = event.eventId;
        yield { kind: "event", event };
      }
    } catch (error) {
      if (aborted()) return;
      if (!isRecoverable(error)) throw error;
      ended = error;
    } finally {
      signal?.removeEventListener("abort", endStream);
      stream.abort();
    }
    if (aborted()) return;
    const delayMs = reconnectDelayMs(failures, backoff);
    failures += 1;
    options.onReconnect?.({ error: ended, delayMs, lastEventId });
    await sleep(delayMs, signal);
  }
}

/** The options of a device client's `subscribe`, whatever its transport. */
export interface SubscribeCall {
  /** The subscribe request's request_id (the first one's, when following); random by default. */
  readonly requestId?: string;
  /** Resume after this `event_id` (contract §12); empty or absent: live events only. */
  readonly lastEventId?: string;
  /** Ends the stream; a following subscription then ends without an error. */
  readonly signal?: AbortSignal;
}

/** How a following subscription reconnects. */
export interface FollowOptions {
  /** The first reconnect delay, before jitter; 100 ms by default. */
  readonly minDelayMs?: number;
  /** The longest reconnect delay; 10 s by default. */
  readonly maxDelayMs?: number;
  /** Told before each reconnect delay: what ended the stream and where it resumes. */
  readonly onReconnect?: (info: ReconnectInfo) => void;
}

/**
 * A device client's `subscribe({ follow })`: a resumable subscription over
 * `openStream(requestId, lastEventId, signal)`. A request_id is single-use
 * (replay protection), so only the first stream takes the caller's; each
 * later one gets `newRequestId()`.
 */
export function followStreams<E extends ResumableEvent>(
  openStream: (requestId: string, lastEventId: string, signal: AbortSignal) => AsyncIterable<E>,
  call: SubscribeCall,
  follow: true | FollowOptions,
  newRequestId: () => string,
): AsyncGenerator<ResumableItem<E>> {
  let firstRequestId = call.requestId;
  const open = (resumeAfter: string, signal: AbortSignal) => {
    const id = firstRequestId ?? newRequestId();
    firstRequestId = undefined;
    return openStream(id, resumeAfter, signal);
  };
  const { minDelayMs, maxDelayMs, onReconnect } = follow === true ? {} : follow;
  return resumableSubscription(open, {
    lastEventId: call.lastEventId ?? "",
    signal: call.signal,
    minDelayMs,
    maxDelayMs,
    onReconnect,
  });
}

/**
 * A device client's `subscribe(call)`, whatever its transport: one stream
 * from `openStream` (`follow` absent or false), or {@link followStreams}.
 */
export function subscribeOrFollow<E extends ResumableEvent>(
  openStream: (
    requestId: string,
    lastEventId: string,
    signal: AbortSignal | undefined,
  ) => AsyncGenerator<E>,
  call: SubscribeCall & { readonly follow?: boolean | FollowOptions },
  newRequestId: () => string,
): AsyncGenerator<E> | AsyncGenerator<ResumableItem<E>> {
  const { follow = false, requestId, lastEventId = "", signal } = call;
  if (follow === false) return openStream(requestId ?? newRequestId(), lastEventId, signal);
  return followStreams(openStream, call, follow, newRequestId);
}

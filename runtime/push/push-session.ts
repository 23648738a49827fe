/**
 * One SubscribeEvents call, whatever the transport (contract §7, §12):
 * authenticate, register in the hub, re-check the session, send the signed
 * bootstrap, replay what a resume must, then the hub's events until the hub
 * ends the stream or the client goes away. Transports (gRPC, Connect) adapt
 * their write side to {@link PushTransport} and map the errors thrown here.
 */
import { OUTCOMES, outcomeError, toGatewayError } from "../../handlers/errors.js";
import type {
  Clock,
  DeviceSession,
  Logger,
  ResponseSigner,
  SessionStore,
} from "../../handlers/ports.js";
import {
  bootstrapEvent,
  type SignedEvent,
  type SubscribeEventsInput,
  signEvent,
} from "../../handlers/subscribe-events.js";
import {
  HistoryTrimmedError,
  planResume,
  planRoutedSeam,
  type ResumeLimits,
  type ResumePlan,
  type ResumeSources,
  type RoutedSources,
} from "../history/resume.js";
import { compareIds } from "../streams/stream-ids.js";
import type { Metrics } from "../telemetry/metrics.js";
import type { PushHub, PushStream } from "./push-hub.js";

/** The write side of a transport, as the push loop needs it. */
export interface PushTransport {
  /**
   * `undefined` when the transport has accepted every event written so far
   * (flow control let them through), the call is over, or one of `signals`
   * aborted; else a promise that resolves once one of those holds.
   */
  whenAccepted(signals: readonly AbortSignal[]): Promise<void> | undefined;
  /** Wakes a pending `whenAccepted` when any of `signals` aborts; returns the unwatch. */
  watch(signals: readonly AbortSignal[]): () => void;
  /** Resets the transport (the client never took its terminal status). */
  reset(): void;
  /** Settles once the transport is done with the call. */
  readonly closed: Promise<void>;
}

/** Resume with history (§12); absent = resumes recover only at the live position. */
export interface PushResume {
  readonly sources: ResumeSources;
  readonly limits: ResumeLimits;
  /** Keeps the user's history alive from `position` on (fire and forget). */
  readonly touch?: (userId: string, position: string) => void;
}

/**
 * Routed fan-out (§13): the node takes each user's events from the user's
 * channel, subscribed while the user has streams here, and each stream's seam
 * from the user's history.
 */
export interface RoutedDelivery {
  /** Subscribes the user's channel; resolves once subscribed, with the release. */
  acquire(userId: string): Promise<() => void>;
  readonly sources: RoutedSources;
  readonly limits: ResumeLimits;
}

/** What a push session needs. */
export interface PushSessionDeps {
  /** Shape checks and §5 authentication (`createSubscribeEventsAuthenticator`). */
  readonly authenticate: (request: SubscribeEventsInput) => Promise<DeviceSession>;
  /** Re-read after registering, so a revoke applied meanwhile still closes the stream. */
  readonly sessions: SessionStore;
  readonly hub: PushHub;
  readonly signer: ResponseSigner;
  readonly clock: Clock;
  /**
   * Where live delivery continues from: the node's client-events cursor
   * (every node reads the ingress), or per user under routed fan-out.
   */
  readonly delivery: { readonly cursor: () => string } | { readonly routed: RoutedDelivery };
  /** Absent: a resume recovers only at the live position itself. */
  readonly resume?: PushResume;
  readonly metrics?: Pick<Metrics, "pushResumes">;
  readonly logger: Logger;
}

/**
 * Runs one push session and yields the events to write, in order. `transport`
 * is `undefined` when the transport cannot report acceptance (writes then
 * wait only on the client). `callSignal` aborts when the client goes away;
 * `undefined` when the transport closing is what says so. Throws
 * GatewayErrors (and whatever else failed); the stream is released when the
 * transport closes.
 */
export async function* runPushSession(
  deps: PushSessionDeps,
  request: SubscribeEventsInput,
  callSignal: AbortSignal | undefined,
  transport: PushTransport | undefined,
): AsyncGenerator<SignedEvent, void, undefined> {
  const { hub } = deps;
  // The session also stops once its transport is done, whether or not the
  // call's own signal noticed the client leave.
  const signal = untilClosed(callSignal, transport);
  const session = await deps.authenticate(request);
  const stream = hub.open(session);
  const { delivery } = deps;
  // Read in the same turn as registering: the queue holds exactly the events after it.
  const position = "cursor" in delivery ? delivery.cursor() : undefined;
  let unsubscribe: (() => void) | undefined;

  if (transport !== undefined) stream.onReset(() => transport.reset());
  const endSignals = [signal, stream.ended];
  const unwatch = transport?.watch(endSignals);
  const accepted = async () => {
    const waiting = transport?.whenAccepted(endSignals);
    if (waiting !== undefined) await waiting;
    if (stream.ended.aborted) throw stream.ended.reason;
  };

  try {
    if (signal.aborted) return;
    if ("routed" in delivery) unsubscribe = await subscribeUser(delivery.routed, stream);
    const { bootstrapId, replay, skipThrough } = await startOf(deps, request, stream, position);
    const beforeStart = startFilter(skipThrough);
    yield bootstrapEvent(deps.signer, {
      cursor: bootstrapId,
      requestId: request.requestId,
      timestampMs: deps.clock.now(),
    });
    if (replay !== undefined) {
      for await (const event of replay) {
        await accepted();
        if (signal.aborted) return;
        yield signEvent(deps.signer, { ...event, timestampMs: deps.clock.now() });
      }
    }
    for (;;) {
      // Take events only once the transport accepted every event written so
      // far: until then they count against the stream's queue, and what does
      // not fit overflows it.
      const waiting = transport?.whenAccepted(endSignals);
      if (waiting !== undefined) await waiting;
      stream.settled();
      if (signal.aborted) return;
      // A queued event is taken at once; only an empty queue costs a promise.
      let event = stream.take() ?? (await stream.next(signal));
      if (event === undefined) return;
      // Everything queued by now is written together: on HTTP/2 a burst leaves
      // as DATA frames in a few socket writes, not one write and one write
      // callback per event.
      do {
        if (!beforeStart(event.eventId)) yield event;
        event = stream.take();
      } while (event !== undefined);
    }
  } catch (error) {
    // History trimmed past a replay the client had not taken yet: events it
    // was promised are gone, so the stream is interrupted, and the device's
    // next resume is told continuity was lost.
    const trimmed = error instanceof HistoryTrimmedError;
    if (trimmed) deps.logger.warn(`push replay interrupted: ${error.message} (${stream.label})`);
    const failure = trimmed ? outcomeError(OUTCOMES.streamInterrupted) : error;
    // Whatever ended the call, the stream must stop receiving events now.
    if (!stream.ended.aborted) {
      stream.fail(toGatewayError(failure), trimmed ? "interrupted" : undefined);
    }
    throw failure;
  } finally {
    unwatch?.();
    const release = () => {
      stream.release();
      unsubscribe?.();
    };
    if (transport === undefined) release();
    else void transport.closed.then(release);
  }
}

/**
 * Whether a live event is at or before the stream's start. Live events come
 * in stream order, so once one is after it the ids need no more comparing.
 */
function startFilter(skipThrough: string | undefined): (eventId: string) => boolean {
  let through = skipThrough;
  return (eventId) => {
    if (through === undefined) return false;
    if (compareIds(eventId, through) <= 0) return true;
    through = undefined;
    return false;
  };
}

/**
 * `signal`, also aborting once `transport` is done with the call. Each signal
 * costs a connected device memory (an EventTarget with its maps), so no more
 * are made than needed.
 */
function untilClosed(
  signal: AbortSignal | undefined,
  transport: PushTransport | undefined,
): AbortSignal {
  if (transport === undefined) return signal ?? new AbortController().signal;
  const closed = new AbortController();
  void transport.closed.then(() => closed.abort());
  return signal === undefined ? closed.signal : AbortSignal.any([signal, closed.signal]);
}

/**
 * Re-checks the session, then where the stream starts: from the node's live
 * `position` (fan-out `read`), or from its seam (`routed`, no position).
 */
async function startOf(
  deps: PushSessionDeps,
  request: SubscribeEventsInput,
  stream: PushStream,
  position: string | undefined,
): Promise<StreamStart> {
  await recheckSession(deps, stream);
  if (position === undefined) return routedSeamOf(deps, request, stream);
  const start = await resumeOf(deps, request, stream, position);
  deps.resume?.touch?.(stream.userId, position);
  return start;
}

/** Subscribes the stream's user; a stream that cannot be fed fails at once. */
async function subscribeUser(routed: RoutedDelivery, stream: PushStream): Promise<() => void> {
  try {
    return await routed.acquire(stream.userId);
  } catch {
    const error = outcomeError(OUTCOMES.deliveryUnavailable);
    stream.fail(error);
    throw error;
  }
}

/** Where a stream starts: its bootstrap's `event_id`, what it replays first, which live events it skips. */
interface StreamStart {
  readonly bootstrapId: string;
  readonly replay?: AsyncIterable<{
    eventId: string;
    eventType: string;
    requestId: string;
    payload: Uint8Array;
  }>;
  /** Live events at or before this id are skipped. */
  readonly skipThrough?: string;
}

/** Counts a resume's outcome and logs it at debug (§12). */
function reportResume(
  deps: PushSessionDeps,
  stream: PushStream,
  lastEventId: string,
  outcome:
    | { recovered: true; detail: string }
    | { recovered: false; reason: string; liveFrom: string },
): void {
  deps.metrics?.pushResumes.inc({ result: outcome.recovered ? "recovered" : "not_recovered" });
  const label = `${stream.label} from ${lastEventId}`;
  deps.logger.debug(
    outcome.recovered
      ? `push resume recovered (${label}): ${outcome.detail}`
      : `push resume not recovered (${label}): ${outcome.reason}; live from ${outcome.liveFrom}`,
  );
}

/** Under routed fan-out: the stream's seam (§13), and for a resume the §12 outcome. */
async function routedSeamOf(
  deps: PushSessionDeps,
  request: SubscribeEventsInput,
  stream: PushStream,
): Promise<StreamStart> {
  const { routed } = deps.delivery as { routed: RoutedDelivery };
  const target = { userId: stream.userId, deviceSessionId: stream.deviceSessionId };
  let seam: Awaited<ReturnType<typeof planRoutedSeam>>;
  try {
    seam = await planRoutedSeam(request.lastEventId, target, routed.sources, routed.limits);
  } catch (error) {
    deps.logger.debug(
      `push stream seam failed (user ${stream.userId}): ${(error as Error).message}`,
    );
    const failure = outcomeError(OUTCOMES.deliveryUnavailable);
    stream.fail(failure);
    throw failure;
  }
  if (seam.recovered !== undefined) {
    reportResume(
      deps,
      stream,
      request.lastEventId,
      seam.recovered
        ? { recovered: true, detail: seam.detail }
        : { recovered: false, reason: seam.detail, liveFrom: seam.bootstrapId },
    );
  }
  return seam;
}

/** The bootstrap's event_id and what to replay, as §12 decides it. */
async function resumeOf(
  deps: PushSessionDeps,
  request: SubscribeEventsInput,
  stream: PushStream,
  position: string,
): Promise<StreamStart> {
  const lastEventId = request.lastEventId;
  if (lastEventId === "") return { bootstrapId: position };
  const target = { userId: stream.userId, deviceSessionId: stream.deviceSessionId };
  let plan: ResumePlan;
  try {
    plan =
      deps.resume === undefined
        ? lastEventId === position
          ? {
              recovered: true,
              replay: undefined,
              skipThrough: position,
              detail: "at the live position",
            }
          : { recovered: false, reason: "resume is not configured" }
        : await planResume(lastEventId, position, target, deps.resume.sources, deps.resume.limits);
  } catch (error) {
    plan = { recovered: false, reason: `history unavailable (${(error as Error).message})` };
  }
  if (!plan.recovered) {
    reportResume(deps, stream, lastEventId, {
      recovered: false,
      reason: plan.reason,
      liveFrom: position,
    });
    return { bootstrapId: position };
  }
  reportResume(deps, stream, lastEventId, { recovered: true, detail: plan.detail });
  return { bootstrapId: lastEventId, replay: plan.replay, skipThrough: plan.skipThrough };
}

/**
 * §6: the stream is registered first and its session read again after, so a
 * revoke applied between authentication and registration still closes it.
 */
async function recheckSession(deps: PushSessionDeps, stream: PushStream): Promise<void> {
  let current: DeviceSession | undefined;
  try {
    current = await deps.sessions.get(stream.deviceSessionId);
  } catch {
    const error = outcomeError(OUTCOMES.sessionStoreUnavailable, {
      authFailure: "redis_unavailable",
    });
    stream.fail(error);
    throw error;
  }
  deps.hub.reconcile(stream.deviceSessionId, current);
  if (stream.ended.aborted) throw stream.ended.reason;
}

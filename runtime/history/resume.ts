/**
 * Resume (contract §12): what a stream opened with `last_event_id` = L must
 * replay before it goes live, or why it cannot promise continuity.
 *
 * The stream is registered in the hub first and the node's live position P
 * (its client-events cursor) read in the same turn, so its queue holds exactly
 * the events after P. What lies between L and P comes from two places:
 *
 * - the user's history, written by the router in ingress order, complete up
 *   to the router's position R and back to the history's floor;
 * - the ingress stream itself for (R, P], when this node read further than
 *   the router has routed (normally a few entries, bounded here).
 *
 * Continuity is promised ("recovered") only when every part is provably
 * complete: L at or after the router's floor and the user's history floor, the
 * user's history present, the ingress still holding everything after R. When
 * L is after P (the device came from a node that had read further), nothing is
 * replayed and live events up to L are skipped — provided L is an id the
 * ingress issued.
 */
import { type ClientEvent, parseClientEvent } from "../streams/client-events.js";
import { compareIds, maxId, minId, successor } from "../streams/stream-ids.js";
import type { StreamEntry } from "../streams/stream-reader.js";

/** One page of a user's history. */
export interface HistoryPage {
  /** History is complete for every id at or after this one. */
  readonly floor: string;
  readonly entries: readonly StreamEntry[];
}

/** Where replayed events come from (Redis in the gateway, memory in unit tests). */
export interface ResumeSources {
  /** The router's position and floor; `undefined` when no router has run (or its state is gone). */
  routerState(): Promise<{ readonly position: string; readonly floor: string } | undefined>;
  /**
   * The user's history entries in [first, last], at most `count`, with the
   * floor read in the same step; `undefined` when the user has no history.
   */
  historyPage(
    userId: string,
    first: string,
    last: string,
    count: number,
  ): Promise<HistoryPage | undefined>;
  /** Ingress entries in [first, last], at most `count`. */
  ingressRange(first: string, last: string, count: number): Promise<readonly StreamEntry[]>;
}

/** The seam of a stream under routed fan-out, as one script on the user's history reads it. */
export interface SeamReply {
  /** The history was missing and is now created, empty and complete after the floor given. */
  readonly created: boolean;
  /** History is complete for every id after this one. */
  readonly floor: string;
  /** The id of the last event written: every later one reaches the subscribed node. */
  readonly top: string;
  /** The first page after the id asked for, up to `top`. */
  readonly entries: readonly StreamEntry[];
}

/** Where a stream's seam comes from under routed fan-out. */
export interface RoutedSources extends Pick<ResumeSources, "routerState" | "historyPage"> {
  /**
   * Keeps the user's history alive (creating it, complete after `floor`, when
   * missing) and reads its floor, its top and the first page after `after`
   * (none when empty).
   */
  seam(userId: string, floor: string, after: string, count: number): Promise<SeamReply>;
}

/** Whose stream resumes. */
export interface ResumeTarget {
  readonly userId: string;
  readonly deviceSessionId: string;
}

/** What a resume may do. */
export interface ResumeLimits {
  /** Whether history is kept at all (`GATEWAY_PUSH_HISTORY_SIZE`/`_TTL` not 0). */
  readonly historyOn: boolean;
  /** Largest accepted payload, as for live events. */
  readonly maxPayloadBytes: number;
  /** Ingress entries read at most to bridge a router that is behind this node. */
  readonly maxIngressScan: number;
  /** History entries read per page. */
  readonly pageSize: number;
}

/** The outcome of planning a resume. */
export type ResumePlan =
  | {
      readonly recovered: true;
      /** Events to send after the bootstrap, in order; may throw {@link HistoryTrimmedError}. */
      readonly replay: AsyncIterable<ClientEvent> | undefined;
      /** Live events at or before this id were replayed or precede L: skip them. */
      readonly skipThrough: string;
      /** For the debug log. */
      readonly detail: string;
    }
  | { readonly recovered: false; readonly reason: string };

/** History was trimmed past the replay's position while it was being sent. */
export class HistoryTrimmedError extends Error {
  override readonly name = "HistoryTrimmedError";
}

const notRecovered = (reason: string): ResumePlan => ({ recovered: false, reason });

/**
 * Plans the resume of a stream whose live delivery continues after `position`.
 * Reads what it must to decide; the history after the first page is read
 * while the replay is consumed.
 */
export async function planResume(
  lastEventId: string,
  position: string,
  target: ResumeTarget,
  sources: ResumeSources,
  limits: ResumeLimits,
): Promise<ResumePlan> {
  const order = compareIds(lastEventId, position);
  if (order === 0) {
    return {
      recovered: true,
      replay: undefined,
      skipThrough: lastEventId,
      detail: "at the live position",
    };
  }
  if (order > 0) {
    // The device saw events this node has not read yet: they arrive live, and
    // those up to L are skipped. Only an id the ingress issued is a position.
    const [entry] = await sources.ingressRange(lastEventId, lastEventId, 1);
    if (entry === undefined) {
      return notRecovered(
        `${lastEventId} is after this node's position and not in the ingress stream`,
      );
    }
    return {
      recovered: true,
      replay: undefined,
      skipThrough: lastEventId,
      detail: "ahead of this node",
    };
  }
  if (!limits.historyOn) return notRecovered("history is off");

  const router = await sources.routerState();
  if (router === undefined) return notRecovered("no history router has run");
  if (compareIds(lastEventId, router.floor) < 0) {
    return notRecovered(`history starts at ${router.floor}, after ${lastEventId}`);
  }

  const historyEnd = minId(router.position, position);
  let first: HistoryPage | undefined;
  if (compareIds(historyEnd, lastEventId) > 0) {
    first = await sources.historyPage(
      target.userId,
      successor(lastEventId),
      historyEnd,
      limits.pageSize,
    );
    if (first === undefined) return notRecovered("the user has no history (expired or lost)");
    if (compareIds(lastEventId, first.floor) < 0) {
      return notRecovered(
        `the user's history was trimmed past ${lastEventId} (floor ${first.floor})`,
      );
    }
  }

  let bridge: readonly ClientEvent[] = [];
  if (compareIds(router.position, position) < 0) {
    const bridged = await bridgeFromIngress(
      maxId(lastEventId, router.position),
      position,
      target,
      sources,
      limits,
    );
    if (!bridged.ok) return notRecovered(bridged.reason);
    bridge = bridged.events;
  }

  const replay = replayHistory(lastEventId, historyEnd, first, target, sources, limits);
  return {
    recovered: true,
    replay: concat(replay, bridge),
    skipThrough: lastEventId,
    detail: `history through ${historyEnd}${bridge.length > 0 ? `, ${bridge.length} from the ingress` : ""}`,
  };
}

/** Where a stream under routed fan-out starts, and what it replays first. */
export interface RoutedSeam {
  /** The bootstrap's `event_id`: L when recovered, else where live delivery continues from. */
  readonly bootstrapId: string;
  readonly replay: AsyncIterable<ClientEvent> | undefined;
  /** Live events at or before this id are in the replay or before the stream: skip them. */
  readonly skipThrough: string;
  /** For a resume: whether it recovered. */
  readonly recovered?: boolean;
  /** For the debug log. */
  readonly detail: string;
}

/**
 * The seam of a stream under routed fan-out (§13), planned once its node has
 * subscribed the user's channel: every event written to the user's history
 * after that reaches the node, and the seam script reads the history's top
 * after it, so live events above the top and the history up to it meet with
 * neither gap nor overlap. A fresh stream starts at the top. A resume from L
 * (`lastEventId`) is recovered when the history is complete after L (L at or
 * after the router's floor and the history's) and L is not beyond what was
 * routed (the top, or the router's position read before the seam: every
 * event up to it was written); it then replays the history in (L, top].
 * Throws when Redis cannot say (the stream must not start).
 */
export async function planRoutedSeam(
  lastEventId: string,
  target: ResumeTarget,
  sources: RoutedSources,
  limits: ResumeLimits,
): Promise<RoutedSeam> {
  const router = await sources.routerState();
  if (router === undefined) throw new Error("no history router has run yet");
  const seam = await sources.seam(target.userId, router.position, lastEventId, limits.pageSize);
  const { top } = seam;
  // Every event up to the router's position was written before the seam
  // read the top, so none of this user's lies between the top and it; and
  // what lies before the router's floor may be lost: the stream starts after
  // the latest of the three, and skips live events up to it.
  const live = maxId(maxId(top, router.position), router.floor);
  if (lastEventId === "") {
    return { bootstrapId: live, replay: undefined, skipThrough: live, detail: "fresh" };
  }
  const reason =
    compareIds(lastEventId, router.floor) < 0
      ? `history starts at ${router.floor}, after ${lastEventId}`
      : compareIds(lastEventId, seam.floor) < 0
        ? seam.created
          ? "the user has no history (expired or lost)"
          : `the user's history was trimmed past ${lastEventId} (floor ${seam.floor})`
        : compareIds(lastEventId, live) > 0
          ? `${lastEventId} is after everything routed (${live})`
          : undefined;
  if (reason !== undefined) {
    // Never L: L = live passes every check above.
    return {
      bootstrapId: live,
      replay: undefined,
      skipThrough: live,
      recovered: false,
      detail: reason,
    };
  }
  const replay =
    compareIds(lastEventId, top) < 0
      ? replayHistory(lastEventId, top, seam, target, sources, limits)
      : undefined;
  return {
    bootstrapId: lastEventId,
    replay,
    skipThrough: maxId(top, lastEventId),
    recovered: true,
    detail: `history through ${top}`,
  };
}

/**
 * The target's events in (after, upTo] read from the ingress stream. The entry
 * at `after` must still be there (or `after` be `0-0`): the stream is trimmed
 * from its head, so then nothing after it is gone.
 */
async function bridgeFromIngress(
  after: string,
  upTo: string,
  target: ResumeTarget,
  sources: ResumeSources,
  limits: ResumeLimits,
): Promise<{ ok: true; events: ClientEvent[] } | { ok: false; reason: string }> {
  // One more than the bound, to tell a full range from a longer one, plus the
  // entry at `after` itself when there is one.
  const start = after === "0-0" ? "-" : after;
  const count = limits.maxIngressScan + (after === "0-0" ? 1 : 2);
  const entries = await sources.ingressRange(start, upTo, count);
  let from = 0;
  if (after !== "0-0") {
    if (entries[0]?.id !== after)
      return { ok: false, reason: `the ingress no longer holds ${after}` };
    from = 1;
  }
  if (entries.length - from > limits.maxIngressScan) {
    return { ok: false, reason: `the router is more than ${limits.maxIngressScan} entries behind` };
  }
  const events: ClientEvent[] = [];
  for (const entry of entries.slice(from)) {
    const event = addressed(entry, target, limits);
    if (event !== undefined) events.push(event);
  }
  return { ok: true, events };
}

/** The target's history events in (after, upTo], page by page, starting with `first`. */
async function* replayHistory(
  after: string,
  upTo: string,
  first: HistoryPage | undefined,
  target: ResumeTarget,
  sources: Pick<ResumeSources, "historyPage">,
  limits: ResumeLimits,
): AsyncGenerator<ClientEvent> {
  let page = first;
  let cursor = after;
  while (page !== undefined) {
    if (compareIds(cursor, page.floor) < 0) {
      throw new HistoryTrimmedError(`history trimmed past ${cursor} during replay`);
    }
    for (const entry of page.entries) {
      cursor = entry.id;
      const event = addressed(entry, target, limits);
      if (event !== undefined) yield event;
    }
    if (page.entries.length < limits.pageSize || compareIds(cursor, upTo) >= 0) return;
    page = await sources.historyPage(target.userId, successor(cursor), upTo, limits.pageSize);
    if (page === undefined) throw new HistoryTrimmedError("history expired during replay");
  }
}

/** The entry as an event for this stream, or `undefined` (another session's, or ill-formed). */
function addressed(
  entry: StreamEntry,
  target: ResumeTarget,
  limits: ResumeLimits,
): ClientEvent | undefined {
  const parsed = parseClientEvent(entry, limits);
  if (!parsed.ok) return undefined;
  const { event } = parsed;
  if (event.userId !== target.userId) return undefined;
  if (event.deviceSessionId !== undefined && event.deviceSessionId !== target.deviceSessionId) {
    return undefined;
  }
  return event;
}

async function* concat(
  head: AsyncIterable<ClientEvent>,
  tail: readonly ClientEvent[],
): AsyncGenerator<ClientEvent> {
  yield* head;
  yield* tail;
}

/**
 * The device side of resume (contract §12) with scripted streams in place of
 * a transport: which ends reconnect, what each reconnect resumes after, how
 * lost continuity reaches the app, the backoff, and stopping.
 */
import { ClientError, Status } from "nice-grpc";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  type ReconnectInfo,
  type ResumableEvent,
  type ResumableItem,
  type ResumableSubscriptionOptions,
  resumableSubscription,
} from "../runtime/kit/resumable-subscription.js";

const METHOD = "/edgegateway.v1.EdgeGatewayService/SubscribeEvents";

function status(code: Status, details: string): ClientError {
  return new ClientError(METHOD, code, details);
}

/** How a scripted stream ends after its events: a status, a plain end, or never. */
type Ending = ClientError | Error | "ends" | "stays open";

/** One scripted stream: the event ids it sends (the first is its bootstrap), then its end. */
interface Script {
  readonly events: readonly string[];
  readonly end: Ending;
}

/** An `open` that plays one script per call and records each call. */
function scriptedOpen(...scripts: Script[]) {
  const calls: { lastEventId: string; signal: AbortSignal }[] = [];
  const open = (lastEventId: string, signal: AbortSignal): AsyncIterable<ResumableEvent> => {
    calls.push({ lastEventId, signal });
    const script = scripts.shift();
    if (script === undefined) throw new Error("no stream left in the script");
    return (async function* () {
      for (const [index, eventId] of script.events.entries()) {
        yield { eventId, eventType: index === 0 ? "gateway.server_time" : "demo.note" };
      }
      if (script.end === "ends") return;
      if (script.end === "stays open") {
        await new Promise((_, reject) => {
          const fail = () => reject(new DOMException("The operation was aborted", "AbortError"));
          if (signal.aborted) fail();
          signal.addEventListener("abort", fail, { once: true });
        });
      }
      throw script.end;
    })();
  };
  return { open, calls };
}

/** Options that never wait: each delay is recorded, each reconnect reported. */
function instant(extra: ResumableSubscriptionOptions = {}) {
  const delays: number[] = [];
  const reconnects: ReconnectInfo[] = [];
  const options: ResumableSubscriptionOptions = {
    random: () => 0.5,
    sleep: async (ms) => {
      delays.push(ms);
    },
    onReconnect: (info) => reconnects.push(info),
    ...extra,
  };
  return { options, delays, reconnects };
}

/** Reads `count` items, then leaves the loop. */
async function take<E extends ResumableEvent>(
  items: AsyncIterable<ResumableItem<E>>,
  count: number,
): Promise<ResumableItem<E>[]> {
  const taken: ResumableItem<E>[] = [];
  if (count === 0) return taken;
  for await (const item of items) {
    taken.push(item);
    if (taken.length === count) break;
  }
  return taken;
}

/** Reads until the subscription ends; resolves what it got and the error it threw, if any. */
async function drain<E extends ResumableEvent>(items: AsyncIterable<ResumableItem<E>>) {
  const taken: ResumableItem<E>[] = [];
  try {
    for await (const item of items) taken.push(item);
    return { items: taken, error: undefined };
  } catch (error) {
    return { items: taken, error };
  }
}

/** What a for-await consumer sees, compactly: event ids and continuity notices. */
function seen(items: readonly ResumableItem<ResumableEvent>[]): string[] {
  return items.map((item) =>
    item.kind === "event"
      ? item.event.eventId
      : `lost after ${item.lastEventId}, continuing from ${item.position}`,
  );
}

afterEach(() => {
  vi.useRealTimers();
});

describe("resumableSubscription", () => {
  it("starts live-only and passes the bootstrap through as the first event", async () => {
    const { open, calls } = scriptedOpen({ events: ["5-0", "6-0"], end: "stays open" });
    const items = await take(resumableSubscription(open, instant().options), 2);
    expect(items).toEqual([
      { kind: "event", event: { eventId: "5-0", eventType: "gateway.server_time" } },
      { kind: "event", event: { eventId: "6-0", eventType: "demo.note" } },
    ]);
    expect(calls.map((call) => call.lastEventId)).toEqual([""]);
  });

  it("reconnects after UNAVAILABLE with the last event id and passes a recovered bootstrap through", async () => {
    const { open, calls } = scriptedOpen(
      { events: ["1-0", "2-0"], end: status(Status.UNAVAILABLE, "gateway is shutting down") },
      { events: ["2-0", "3-0"], end: "stays open" },
    );
    const { options, reconnects } = instant();
    const items = await take(resumableSubscription(open, options), 4);
    expect(seen(items)).toEqual(["1-0", "2-0", "2-0", "3-0"]);
    expect(calls.map((call) => call.lastEventId)).toEqual(["", "2-0"]);
    expect(reconnects).toHaveLength(1);
    expect(reconnects[0]).toMatchObject({ lastEventId: "2-0" });
    expect(reconnects[0]!.error).toMatchObject({ code: Status.UNAVAILABLE });
  });

  it("reconnects after RESOURCE_EXHAUSTED and surfaces lost continuity before the new bootstrap", async () => {
    const { open, calls } = scriptedOpen(
      { events: ["1-0", "2-0"], end: status(Status.RESOURCE_EXHAUSTED, "push stream overflowed") },
      { events: ["9-0", "10-0"], end: status(Status.UNAVAILABLE, "gateway is shutting down") },
      { events: ["10-0"], end: "stays open" },
    );
    const items = await take(resumableSubscription(open, instant().options), 6);
    expect(seen(items)).toEqual([
      "1-0",
      "2-0",
      "lost after 2-0, continuing from 9-0",
      "9-0",
      "10-0",
      "10-0",
    ]);
    // After lost continuity the subscription resumes from where the gateway continued.
    expect(calls.map((call) => call.lastEventId)).toEqual(["", "2-0", "10-0"]);
  });

  it("reports lost continuity on the first stream when the given resume point is not recovered", async () => {
    const { open, calls } = scriptedOpen({ events: ["7-0", "8-0"], end: "stays open" });
    const items = await take(
      resumableSubscription(open, instant({ lastEventId: "3-0" }).options),
      3,
    );
    expect(items[0]).toEqual({ kind: "continuity_lost", lastEventId: "3-0", position: "7-0" });
    expect(seen(items)).toEqual(["lost after 3-0, continuing from 7-0", "7-0", "8-0"]);
    expect(calls.map((call) => call.lastEventId)).toEqual(["3-0"]);
  });

  it("resumes the first stream from the given event id without a notice when it is recovered", async () => {
    const { open, calls } = scriptedOpen({ events: ["3-0", "4-0"], end: "stays open" });
    const items = await take(
      resumableSubscription(open, instant({ lastEventId: "3-0" }).options),
      2,
    );
    expect(seen(items)).toEqual(["3-0", "4-0"]);
    expect(calls.map((call) => call.lastEventId)).toEqual(["3-0"]);
  });

  // CANCELLED: the gateway reset an overflowed stream whose client did not
  // take its status in time. UNKNOWN and INTERNAL: how Connect and gRPC-Web
  // report a connection that broke mid-stream in a browser.
  it.each([
    ["CANCELLED", status(Status.CANCELLED, "Call cancelled")],
    ["UNKNOWN", status(Status.UNKNOWN, "network error")],
    ["INTERNAL", status(Status.INTERNAL, "protocol error: missing trailer")],
  ])("reconnects after %s with the last event id", async (_name, ending) => {
    const { open, calls } = scriptedOpen(
      { events: ["1-0", "2-0"], end: ending },
      { events: ["2-0", "3-0"], end: "stays open" },
    );
    const { options, reconnects } = instant();
    const items = await take(resumableSubscription(open, options), 4);
    expect(seen(items)).toEqual(["1-0", "2-0", "2-0", "3-0"]);
    expect(calls.map((call) => call.lastEventId)).toEqual(["", "2-0"]);
    expect(reconnects).toEqual([
      { error: ending, delayMs: expect.any(Number), lastEventId: "2-0" },
    ]);
  });

  it("reconnects when a stream ends without a status (a dropped connection)", async () => {
    const { open, calls } = scriptedOpen(
      { events: ["1-0", "2-0"], end: "ends" },
      { events: ["2-0"], end: "stays open" },
    );
    const { options, reconnects } = instant();
    const items = await take(resumableSubscription(open, options), 3);
    expect(seen(items)).toEqual(["1-0", "2-0", "2-0"]);
    expect(calls.map((call) => call.lastEventId)).toEqual(["", "2-0"]);
    expect(reconnects).toEqual([
      { error: undefined, delayMs: expect.any(Number), lastEventId: "2-0" },
    ]);
  });

  it("throws FAILED_PRECONDITION (a revoke) as it came and never reconnects", async () => {
    const revoked = status(Status.FAILED_PRECONDITION, "device session is revoked");
    const { open, calls } = scriptedOpen(
      { events: ["1-0", "2-0"], end: revoked },
      { events: ["2-0"], end: "stays open" },
    );
    const { options, delays, reconnects } = instant();
    const { items, error } = await drain(resumableSubscription(open, options));
    expect(error).toBe(revoked);
    expect(seen(items)).toEqual(["1-0", "2-0"]);
    expect(calls).toHaveLength(1);
    expect(delays).toEqual([]);
    expect(reconnects).toEqual([]);
  });

  it.each([
    ["UNAUTHENTICATED", status(Status.UNAUTHENTICATED, "invalid request signature")],
    [
      "INVALID_ARGUMENT",
      status(Status.INVALID_ARGUMENT, "last_event_id must be empty or a stream id"),
    ],
    ["PERMISSION_DENIED", status(Status.PERMISSION_DENIED, "denied")],
    ["ALREADY_EXISTS", status(Status.ALREADY_EXISTS, "request_id already used")],
    ["DEADLINE_EXCEEDED", status(Status.DEADLINE_EXCEEDED, "Deadline exceeded")],
    ["an error without a status", new Error("event 2-0 has an invalid gateway signature")],
  ])("throws %s to the caller without reconnecting", async (_name, ending) => {
    const { open, calls } = scriptedOpen({ events: [], end: ending });
    const { items, error } = await drain(resumableSubscription(open, instant().options));
    expect(error).toBe(ending);
    expect(items).toEqual([]);
    expect(calls).toHaveLength(1);
  });

  it("takes the caller's own rule for which ends are recoverable", async () => {
    const { open, calls } = scriptedOpen(
      { events: ["1-0"], end: new Error("network error") },
      { events: ["1-0"], end: status(Status.UNAVAILABLE, "gateway is shutting down") },
    );
    const { options } = instant({
      isRecoverable: (error) => error instanceof Error && error.message === "network error",
    });
    const { items, error } = await drain(resumableSubscription(open, options));
    expect(seen(items)).toEqual(["1-0", "1-0"]);
    expect(error).toMatchObject({ code: Status.UNAVAILABLE });
    expect(calls.map((call) => call.lastEventId)).toEqual(["", "1-0"]);
  });

  // Failures without a bootstrap double the cap (min 100, max 1000); half of
  // it is jitter (random 0.5: three quarters of the cap). A stream that
  // delivered its bootstrap starts the doubling over.
  it("doubles the delay up to the cap while streams fail, and starts over after a bootstrap", async () => {
    const unavailable = status(Status.UNAVAILABLE, "connection refused");
    const { open } = scriptedOpen(
      { events: [], end: unavailable },
      { events: [], end: unavailable },
      { events: [], end: unavailable },
      { events: [], end: unavailable },
      { events: [], end: unavailable },
      { events: [], end: unavailable },
      { events: ["1-0"], end: unavailable },
      { events: [], end: unavailable },
      { events: ["1-0"], end: "stays open" },
    );
    const { options, delays } = instant({ minDelayMs: 100, maxDelayMs: 1000 });
    await take(resumableSubscription(open, options), 2);
    expect(delays).toEqual([75, 150, 300, 600, 750, 750, 75, 150]);
  });

  it("keeps each delay within the upper half of its cap", async () => {
    const delaysWith = async (random: number) => {
      const unavailable = status(Status.UNAVAILABLE, "connection refused");
      const { open } = scriptedOpen(
        { events: [], end: unavailable },
        { events: [], end: unavailable },
        { events: ["1-0"], end: "stays open" },
      );
      const { options, delays } = instant({ random: () => random });
      await take(resumableSubscription(open, options), 1);
      return delays;
    };
    expect(await delaysWith(0)).toEqual([50, 100]);
    expect(await delaysWith(0.999)).toEqual([99.95, 199.9]);
  });

  it("waits with setTimeout by default: the next stream opens only once the delay passed", async () => {
    vi.useFakeTimers();
    const { open, calls } = scriptedOpen(
      { events: ["1-0"], end: status(Status.UNAVAILABLE, "gateway is shutting down") },
      { events: ["1-0"], end: "stays open" },
    );
    const items = take(resumableSubscription(open, { random: () => 0 }), 2);
    await vi.advanceTimersByTimeAsync(49);
    expect(calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(seen(await items)).toEqual(["1-0", "1-0"]);
    expect(calls).toHaveLength(2);
  });

  it("ends without an error, closing the open stream, when the caller's signal aborts", async () => {
    const abort = new AbortController();
    const { open, calls } = scriptedOpen({ events: ["1-0"], end: "stays open" });
    const items: ResumableItem<ResumableEvent>[] = [];
    const { options, reconnects } = instant({ signal: abort.signal });
    const running = (async () => {
      for await (const item of resumableSubscription(open, options)) {
        items.push(item);
        abort.abort();
      }
    })();
    await expect(running).resolves.toBeUndefined();
    expect(seen(items)).toEqual(["1-0"]);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.signal.aborted).toBe(true);
    expect(reconnects).toEqual([]);
  });

  it("ends without opening another stream when the signal aborts during the reconnect delay", async () => {
    const abort = new AbortController();
    const { open, calls } = scriptedOpen(
      { events: ["1-0"], end: status(Status.UNAVAILABLE, "gateway is shutting down") },
      { events: ["1-0"], end: "stays open" },
    );
    const { items, error } = await drain(
      resumableSubscription(open, {
        signal: abort.signal,
        onReconnect: () => abort.abort(),
      }),
    );
    expect(error).toBeUndefined();
    expect(seen(items)).toEqual(["1-0"]);
    expect(calls).toHaveLength(1);
  });

  it("opens no stream when the signal has already aborted", async () => {
    const { open, calls } = scriptedOpen({ events: ["1-0"], end: "stays open" });
    const { items, error } = await drain(
      resumableSubscription(open, instant({ signal: AbortSignal.abort() }).options),
    );
    expect([items, error, calls]).toEqual([[], undefined, []]);
  });

  it("closes the open stream when the consumer leaves the loop", async () => {
    const { open, calls } = scriptedOpen({ events: ["1-0", "2-0"], end: "stays open" });
    await take(resumableSubscription(open, instant().options), 1);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.signal.aborted).toBe(true);
  });
});

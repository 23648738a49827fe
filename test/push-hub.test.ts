import { generateKeyPairSync } from "node:crypto";
import { afterEach, describe, expect, it, vi } from "vitest";
import { GatewayError, isGatewayError } from "../handlers/errors.js";
import { type SignedEvent, signEvent } from "../handlers/subscribe-events.js";
import { createPushHub, type PushHubOptions, type PushStream } from "../runtime/push/push-hub.js";
import { createMetrics, type Metrics } from "../runtime/telemetry/metrics.js";
import { silentLogger } from "./support/logger.js";
import { vectorSigner } from "./support/ports.js";

let sequence = 0;
function event(eventType = "demo.event"): SignedEvent {
  sequence++;
  return signEvent(vectorSigner, {
    eventId: `1764028801000-${sequence}`,
    eventType,
    requestId: "",
    timestampMs: 1764028801000,
    payload: Buffer.from(`event ${sequence}`),
  });
}

function hubWith(overrides: Partial<PushHubOptions> = {}) {
  const metrics = createMetrics();
  const hub = createPushHub({
    queueSize: 4,
    maxStreamsPerSession: 2,
    maxStreams: 10,
    terminalTimeoutMs: 5_000,
    metrics,
    logger: silentLogger,
    ...overrides,
  });
  return { hub, metrics };
}

/** Everything queued on a stream right now, without waiting. */
async function drain(stream: PushStream): Promise<SignedEvent[]> {
  const events: SignedEvent[] = [];
  const idle = new AbortController();
  while (stream.queued > 0) {
    const next = await stream.next(idle.signal);
    if (next !== undefined) events.push(next);
  }
  // A reader whose transport accepts what it is given at once.
  stream.settled();
  return events;
}

/** The terminal error `next` rejects with. */
async function terminal(stream: PushStream) {
  const error = await stream.next(new AbortController().signal).then(
    () => undefined,
    (reason: unknown) => reason,
  );
  if (!isGatewayError(error)) throw new Error(`expected a GatewayError, got ${String(error)}`);
  return { code: error.code, message: error.message };
}

async function value(metrics: Metrics, name: keyof Metrics, labels: Record<string, string> = {}) {
  const metric = metrics[name] as {
    get(): Promise<{ values: { value: number; labels: object }[] }>;
  };
  const { values } = await metric.get();
  const match = values.find((entry) =>
    Object.entries(labels).every(
      ([key, want]) => (entry.labels as Record<string, string>)[key] === want,
    ),
  );
  return match?.value ?? 0;
}

afterEach(() => {
  vi.useRealTimers();
});

describe("PushHub", () => {
  it("refuses a stream beyond the per-session cap and frees the slot on release", () => {
    const { hub } = hubWith({ maxStreamsPerSession: 2 });
    const first = hub.open({ userId: "u1", deviceSessionId: "s1" });
    hub.open({ userId: "u1", deviceSessionId: "s1" });
    expect(() => hub.open({ userId: "u1", deviceSessionId: "s1" })).toThrow(
      expect.objectContaining({
        code: "resource_exhausted",
        message: "too many streams for this device session",
      }),
    );
    // Another session of the same user has its own budget.
    hub.open({ userId: "u1", deviceSessionId: "s2" });
    first.release();
    expect(() => hub.open({ userId: "u1", deviceSessionId: "s1" })).not.toThrow();
  });

  it("refuses a stream beyond the per-process cap", () => {
    const { hub } = hubWith({ maxStreams: 3 });
    hub.open({ userId: "u1", deviceSessionId: "s1" });
    hub.open({ userId: "u2", deviceSessionId: "s2" });
    hub.open({ userId: "u3", deviceSessionId: "s3" });
    expect(() => hub.open({ userId: "u4", deviceSessionId: "s4" })).toThrow(
      expect.objectContaining({
        code: "resource_exhausted",
        message: "gateway stream capacity reached",
      }),
    );
    expect(hub.size).toBe(3);
  });

  it("fans an event out to every stream of the user and to no other user", async () => {
    const { hub, metrics } = hubWith();
    const a1 = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    const a2 = hub.open({ userId: "alice", deviceSessionId: "a-laptop" });
    const a3 = hub.open({ userId: "alice", deviceSessionId: "a-laptop" });
    const bob = hub.open({ userId: "bob", deviceSessionId: "b-phone" });

    const sent = event();
    expect(hub.publish(sent, { userId: "alice" })).toBe(3);
    for (const stream of [a1, a2, a3]) expect(await drain(stream)).toEqual([sent]);
    expect(bob.queued).toBe(0);
    expect(await value(metrics, "pushEventsDelivered")).toBe(3);
  });

  it("delivers a session-targeted event to that session's streams only", async () => {
    const { hub } = hubWith();
    const phone = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    const laptop = hub.open({ userId: "alice", deviceSessionId: "a-laptop" });

    const sent = event();
    expect(hub.publish(sent, { userId: "alice", deviceSessionId: "a-laptop" })).toBe(1);
    expect(await drain(laptop)).toEqual([sent]);
    expect(phone.queued).toBe(0);
  });

  it("never delivers to a session of another user, even when the session id matches", () => {
    const { hub } = hubWith();
    const alice = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    expect(hub.publish(event(), { userId: "bob", deviceSessionId: "a-phone" })).toBe(0);
    expect(hub.publish(event(), { userId: "bob" })).toBe(0);
    expect(alice.queued).toBe(0);
  });

  it("ends only the stream whose queue is full, with RESOURCE_EXHAUSTED", async () => {
    const { hub, metrics } = hubWith({ queueSize: 2 });
    const slow = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    const fast = hub.open({ userId: "alice", deviceSessionId: "a-laptop" });

    const received: SignedEvent[] = [];
    const counts: number[] = [];
    for (let i = 0; i < 4; i++) {
      counts.push(hub.publish(event(), { userId: "alice" }));
      received.push(...(await drain(fast)));
    }
    // The slow stream took two events, overflowed on the third, and got no more.
    expect(counts).toEqual([2, 2, 1, 1]);
    expect(received).toHaveLength(4);
    expect(slow.ended.aborted).toBe(true);
    expect(await terminal(slow)).toEqual({
      code: "resource_exhausted",
      message: "push stream overflowed",
    });
    expect(fast.ended.aborted).toBe(false);
    expect(hub.size).toBe(1);
    expect(await value(metrics, "pushStreamCloses", { reason: "overflow" })).toBe(1);
    expect(await value(metrics, "pushStreamsActive")).toBe(1);
  });

  // A transport may be handed several events before it accepts them (a burst
  // written at once): until it has, they still count against the queue.
  it("counts events taken but not yet accepted by the transport against the queue", async () => {
    const { hub } = hubWith({ queueSize: 2 });
    const stream = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    hub.publish(event(), { userId: "alice" });
    expect(stream.take()).toBeDefined();
    hub.publish(event(), { userId: "alice" });
    expect(stream.take()).toBeDefined();
    expect(stream.queued).toBe(0);
    // Two taken and not accepted: a third event finds the stream full.
    expect(hub.publish(event(), { userId: "alice" })).toBe(0);
    expect(await terminal(stream)).toEqual({
      code: "resource_exhausted",
      message: "push stream overflowed",
    });

    const accepting = hub.open({ userId: "bob", deviceSessionId: "b-phone" });
    for (let i = 0; i < 5; i++) {
      expect(hub.publish(event(), { userId: "bob" })).toBe(1);
      expect(accepting.take()).toBeDefined();
      accepting.settled();
    }
    expect(accepting.ended.aborted).toBe(false);
  });

  it("ends exactly the revoked session's streams with FAILED_PRECONDITION", async () => {
    const { hub, metrics } = hubWith();
    const revoked1 = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    const revoked2 = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    const sibling = hub.open({ userId: "alice", deviceSessionId: "a-laptop" });
    const other = hub.open({ userId: "bob", deviceSessionId: "b-phone" });
    expect(hub.openSessionIds().sort()).toEqual(["a-laptop", "a-phone", "b-phone"]);

    expect(hub.endSession("a-phone")).toBe(2);
    for (const stream of [revoked1, revoked2]) {
      expect(await terminal(stream)).toEqual({
        code: "failed_precondition",
        message: "device session is revoked",
      });
    }
    expect(sibling.ended.aborted).toBe(false);
    expect(other.ended.aborted).toBe(false);
    expect(hub.openSessionIds().sort()).toEqual(["a-laptop", "b-phone"]);
    expect(hub.publish(event(), { userId: "alice" })).toBe(1);
    expect(hub.endSession("unknown")).toBe(0);
    expect(await value(metrics, "pushStreamCloses", { reason: "revoked" })).toBe(2);
  });

  it("drops what a stream had queued when it ends", async () => {
    const { hub } = hubWith();
    const stream = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    hub.publish(event(), { userId: "alice" });
    hub.endSession("a-phone");
    expect(stream.queued).toBe(0);
    expect((await terminal(stream)).code).toBe("failed_precondition");
  });

  it("wakes a waiting reader when an event arrives and when the hub ends the stream", async () => {
    const { hub } = hubWith();
    const stream = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    const signal = new AbortController().signal;

    const waiting = stream.next(signal);
    const sent = event();
    hub.publish(sent, { userId: "alice" });
    await expect(waiting).resolves.toBe(sent);

    const ending = stream.next(signal);
    hub.endSession("a-phone");
    await expect(ending).rejects.toMatchObject({ code: "failed_precondition" });
  });

  it("resolves a waiting reader with undefined once its signal aborts", async () => {
    const { hub } = hubWith();
    const stream = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    const cancel = new AbortController();
    const waiting = stream.next(cancel.signal);
    cancel.abort();
    await expect(waiting).resolves.toBeUndefined();
  });

  it("removes a stream at once when its client goes away", async () => {
    const { hub, metrics } = hubWith();
    const stream = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    stream.release();
    expect(hub.size).toBe(0);
    expect(hub.openSessionIds()).toEqual([]);
    expect(hub.publish(event(), { userId: "alice" })).toBe(0);
    stream.release();
    expect(await value(metrics, "pushStreamCloses", { reason: "client" })).toBe(1);
    expect(await value(metrics, "pushStreamsActive")).toBe(0);
  });

  it("does not count a stream the hub already ended as closed by the client", async () => {
    const { hub, metrics } = hubWith();
    const stream = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    hub.endSession("a-phone");
    stream.release();
    expect(await value(metrics, "pushStreamCloses", { reason: "client" })).toBe(0);
    expect(await value(metrics, "pushStreamCloses", { reason: "revoked" })).toBe(1);
  });

  it("signs a lazily built event once however many streams receive it, and not at all for none", async () => {
    const { hub } = hubWith();
    const streams = [
      hub.open({ userId: "alice", deviceSessionId: "a-phone" }),
      hub.open({ userId: "alice", deviceSessionId: "a-laptop" }),
      hub.open({ userId: "alice", deviceSessionId: "a-tablet" }),
    ];
    const build = vi.fn(() => event());

    expect(hub.publish(build, { userId: "nobody" })).toBe(0);
    expect(build).not.toHaveBeenCalled();

    expect(hub.publish(build, { userId: "alice" })).toBe(3);
    expect(build).toHaveBeenCalledTimes(1);
    const [first, second, third] = await Promise.all(streams.map(drain));
    // One frozen object, shared by every stream.
    expect(first?.[0]).toBe(second?.[0]);
    expect(second?.[0]).toBe(third?.[0]);
    expect(Object.isFrozen(first?.[0])).toBe(true);
  });

  it("close() ends every stream with UNAVAILABLE, refuses new ones and resolves once all are released", async () => {
    const { hub, metrics } = hubWith();
    const streams = [
      hub.open({ userId: "alice", deviceSessionId: "a-phone" }),
      hub.open({ userId: "bob", deviceSessionId: "b-phone" }),
    ];
    const closing = hub.close();
    for (const stream of streams) {
      expect(await terminal(stream)).toEqual({
        code: "unavailable",
        message: "gateway is shutting down",
      });
    }
    expect(() => hub.open({ userId: "carol", deviceSessionId: "c-phone" })).toThrow(
      expect.objectContaining({ code: "unavailable", message: "gateway is shutting down" }),
    );
    let closed = false;
    void closing.then(() => {
      closed = true;
    });
    streams[0]?.release();
    await Promise.resolve();
    expect(closed).toBe(false);
    streams[1]?.release();
    await closing;
    expect(hub.close()).toBe(closing);
    expect(await value(metrics, "pushStreamCloses", { reason: "shutdown" })).toBe(2);
  });

  it("close() resets what is left after its budget and still resolves", async () => {
    vi.useFakeTimers();
    const { hub } = hubWith({ terminalTimeoutMs: 1_000 });
    const stream = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    const reset = vi.fn();
    stream.onReset(reset);
    const closing = hub.close();
    await vi.advanceTimersByTimeAsync(1_000);
    await closing;
    expect(reset).toHaveBeenCalledTimes(1);
  });

  it("resets a stream the hub ended when its status is not taken within the terminal timeout", async () => {
    vi.useFakeTimers();
    const { hub } = hubWith({ terminalTimeoutMs: 1_000 });
    const taken = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    const stalled = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    const resetTaken = vi.fn();
    const resetStalled = vi.fn();
    taken.onReset(resetTaken);
    stalled.onReset(resetStalled);

    hub.endSession("a-phone");
    taken.release();
    await vi.advanceTimersByTimeAsync(999);
    expect(resetStalled).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(resetStalled).toHaveBeenCalledTimes(1);
    expect(resetTaken).not.toHaveBeenCalled();
  });

  it("ends a stream with the caller's error without counting a close reason", async () => {
    const { hub, metrics } = hubWith();
    const stream = hub.open({ userId: "alice", deviceSessionId: "a-phone" });
    stream.fail(new GatewayError("unavailable", "session store unavailable"));
    expect(await terminal(stream)).toEqual({
      code: "unavailable",
      message: "session store unavailable",
    });
    expect(hub.size).toBe(0);
    for (const reason of ["revoked", "overflow", "shutdown", "client"]) {
      expect(await value(metrics, "pushStreamCloses", { reason })).toBe(0);
    }
  });

  // A stream the hub ended still holds its transport until its call is over:
  // it keeps counting against the caps, so a client that never reads cannot
  // pile up ended streams.
  it("counts ended but unreleased streams against both caps until they are released", async () => {
    const { hub } = hubWith({ queueSize: 1, maxStreamsPerSession: 1, maxStreams: 2 });
    const stalled = hub.open({ userId: "u-1", deviceSessionId: "ds-1" });
    hub.publish(event(), { userId: "u-1" });
    hub.publish(event(), { userId: "u-1" });
    expect(stalled.ended.aborted).toBe(true);
    expect(() => hub.open({ userId: "u-1", deviceSessionId: "ds-1" })).toThrow(
      "too many streams for this device session",
    );
    hub.open({ userId: "u-2", deviceSessionId: "ds-2" });
    expect(() => hub.open({ userId: "u-3", deviceSessionId: "ds-3" })).toThrow(
      "gateway stream capacity reached",
    );
    stalled.release();
    expect(hub.open({ userId: "u-1", deviceSessionId: "ds-1" }).ended.aborted).toBe(false);
  });

  it("reconciles a session's streams: those opened under another user end as changed", async () => {
    const { hub, metrics } = hubWith();
    const kept = hub.open({ userId: "u-1", deviceSessionId: "ds-1" });
    const moved = hub.open({ userId: "u-old", deviceSessionId: "ds-1" });
    const now = {
      userId: "u-1",
      publicKey: generateKeyPairSync("ed25519").publicKey,
      status: "active" as const,
    };
    expect(hub.reconcile("ds-1", now)).toBe(1);
    expect(kept.ended.aborted).toBe(false);
    const error = await terminal(moved);
    expect(error).toMatchObject({
      code: "unavailable",
      message: "device session changed; reconnect",
    });
    expect(await value(metrics, "pushStreamCloses", { reason: "session_changed" })).toBe(1);
    expect(hub.endSession("ds-1", "recheck_failed")).toBe(1);
    expect(await terminal(kept)).toMatchObject({
      code: "unavailable",
      message: "device session could not be re-checked; reconnect",
    });
  });
});

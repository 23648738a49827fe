/**
 * SubscribeEvents end to end: a real nice-grpc server on loopback with
 * in-memory session and replay stores, real nice-grpc and grpc-js clients.
 * A client "stops reading" by pausing a raw grpc-js stream, so HTTP/2 flow
 * control stops the server's writes.
 */
import { createPublicKey, randomUUID, sign, verify } from "node:crypto";
import * as http2 from "node:http2";
import * as grpc from "@grpc/grpc-js";
import { ClientError, createServer, ServerError, Status } from "nice-grpc";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { DeviceSession } from "../handlers/ports.js";
import { eventSignedBytes, subscribeEventsSignedBytes } from "../handlers/signing.js";
import {
  createSubscribeEventsAuthenticator,
  type SignedEvent,
  signEvent,
} from "../handlers/subscribe-events.js";
import {
  EdgeGatewayServiceDefinition,
  type SubscribeEventsRequest,
  type SubscribeEventsResponse,
} from "../proto/gen/edgegateway/v1/edge_gateway.js";
import {
  createSubscribeEventsMethod,
  pushStreamInterceptor,
} from "../runtime/grpc/subscribe-events.js";
import { createPushHub, type PushHub, type PushStream } from "../runtime/push/push-hub.js";
import { createMetrics } from "../runtime/telemetry/metrics.js";
import { createCleanup } from "./support/cleanup.js";
import { vectors } from "./support/keys.js";
import { silentLogger } from "./support/logger.js";
import {
  createMemoryReplayStore,
  createMemorySessionStore,
  gatewayPrivateKey,
  systemClock,
  vectorDevice,
  vectorSigner,
} from "./support/ports.js";
import { grpcClient } from "./support/push.js";
import { blockedSubscription, pausedSubscription } from "./support/stalled-subscriptions.js";

const gatewayPublicKey = createPublicKey(gatewayPrivateKey);

const CURSOR = "1764028800000-5";

/** A signed SubscribeEvents request from the vectors' device key, fresh now. */
function subscribeRequest(deviceSessionId: string, lastEventId = ""): SubscribeEventsRequest {
  const requestId = `sub-${randomUUID()}`;
  const timestampMs = Date.now();
  const signature = sign(
    null,
    subscribeEventsSignedBytes({ deviceSessionId, requestId, timestampMs, lastEventId }),
    vectorDevice.privateKey,
  );
  return { protocolVersion: 1, deviceSessionId, requestId, timestampMs, signature, lastEventId };
}

function verifiesWithGatewayKey(event: SubscribeEventsResponse): boolean {
  return verify(
    null,
    eventSignedBytes({
      keyId: event.keyId,
      eventId: event.eventId,
      eventType: event.eventType,
      requestId: event.requestId,
      timestampMs: event.timestampMs,
      payload: event.payload,
    }),
    gatewayPublicKey,
    event.signature,
  );
}

let eventSequence = 0;
function clientEvent(payloadBytes = 64, requestId = ""): SignedEvent {
  eventSequence++;
  return signEvent(vectorSigner, {
    eventId: `1764028801000-${eventSequence}`,
    eventType: "demo.tick",
    requestId,
    timestampMs: Date.now(),
    payload: Buffer.alloc(payloadBytes, eventSequence % 251),
  });
}

/** Like the gateway's own interceptors placed before it: the push interceptor must still work. */
const passThroughInterceptor: grpc.ServerInterceptor = (_method, call) =>
  new grpc.ServerInterceptingCall(call);

interface GatewayOptions {
  readonly queueSize?: number;
  readonly terminalTimeoutMs?: number;
  /** Runs after authentication succeeded, before the stream is registered. */
  readonly afterAuthenticate?: (session: DeviceSession) => void;
}

const cleanup = createCleanup();
afterEach(() => cleanup.run());

async function startGateway(options: GatewayOptions = {}) {
  const sessionStore = createMemorySessionStore();
  const { sessions } = sessionStore;
  const replay = createMemoryReplayStore();
  const metrics = createMetrics();
  const hub = createPushHub({
    queueSize: options.queueSize ?? 16,
    maxStreamsPerSession: 4,
    maxStreams: 100,
    terminalTimeoutMs: options.terminalTimeoutMs ?? 25_000,
    metrics,
    logger: silentLogger,
  });
  // The method's hub, recording each registered stream for inspection.
  const opened: PushStream[] = [];
  const recordingHub: PushHub = {
    open(owner) {
      const stream = hub.open(owner);
      opened.push(stream);
      return stream;
    },
    publish: hub.publish,
    endSession: hub.endSession,
    reconcile: hub.reconcile,
    openUserIds: hub.openUserIds,
    interruptAll: hub.interruptAll,
    interruptUser: hub.interruptUser,
    openSessionIds: hub.openSessionIds,
    get size() {
      return hub.size;
    },
    close: hub.close,
  };
  const authenticate = createSubscribeEventsAuthenticator({
    sessions: sessionStore,
    replay,
    clock: systemClock,
    maxClockSkewMs: 30_000,
  });
  const subscribeEvents = createSubscribeEventsMethod({
    authenticate: async (request) => {
      const session = await authenticate(request);
      options.afterAuthenticate?.(session);
      return session;
    },
    sessions: sessionStore,
    hub: recordingHub,
    signer: vectorSigner,
    clock: systemClock,
    delivery: { cursor: () => CURSOR },
    logger: silentLogger,
  });

  const server = createServer({ interceptors: [passThroughInterceptor, pushStreamInterceptor] });
  server.add(EdgeGatewayServiceDefinition, {
    async executeCommand() {
      throw new ServerError(Status.UNIMPLEMENTED, "not served by this test server");
    },
    subscribeEvents,
  });
  const port = await server.listen("127.0.0.1:0");
  cleanup.defer(() => server.forceShutdown());

  return {
    address: `127.0.0.1:${port}`,
    hub,
    opened,
    metrics,
    addSession(userId: string, deviceSessionId: string) {
      sessions.set(deviceSessionId, {
        deviceSessionId,
        userId,
        publicKey: vectorDevice.publicKey,
        status: "active",
      });
    },
    markRevoked(deviceSessionId: string) {
      const session = sessions.get(deviceSessionId);
      if (session !== undefined) sessions.set(deviceSessionId, { ...session, status: "revoked" });
    },
  };
}

/** A nice-grpc subscription read one event at a time. */
function subscribe(address: string, request: SubscribeEventsRequest) {
  const abort = new AbortController();
  const iterator = grpcClient(address, cleanup)
    .subscribeEvents(request, { signal: abort.signal })
    [Symbol.asyncIterator]();
  cleanup.defer(() => abort.abort());
  return {
    cancel: () => abort.abort(),
    async next(): Promise<SubscribeEventsResponse> {
      const result = await iterator.next();
      if (result.done) throw new Error("stream ended without a status");
      return result.value;
    },
    /** Reads until the stream fails; resolves the ClientError and what came before it. */
    async failure(): Promise<{ error: ClientError; events: SubscribeEventsResponse[] }> {
      const events: SubscribeEventsResponse[] = [];
      try {
        for (;;) {
          const result = await iterator.next();
          if (result.done) throw new Error("stream ended OK, expected a failure");
          events.push(result.value);
        }
      } catch (error) {
        if (!(error instanceof ClientError)) throw error;
        return { error, events };
      }
    },
  };
}

/** Event ids after the bootstrap event must be the published ones, in order, without gaps. */
function expectInOrderPrefix(received: SubscribeEventsResponse[], published: SignedEvent[]): void {
  expect(received.map((event) => event.eventId)).toEqual(
    published.slice(0, received.length).map((event) => event.eventId),
  );
}

describe("SubscribeEvents stream", () => {
  it("sends a signed gateway.server_time bootstrap event first, then published events", async () => {
    const gateway = await startGateway();
    gateway.addSession("alice", "a-phone");
    const request = subscribeRequest("a-phone");
    const stream = subscribe(gateway.address, request);

    const before = Date.now();
    const bootstrap = await stream.next();
    expect(bootstrap).toMatchObject({
      eventType: "gateway.server_time",
      eventId: CURSOR,
      requestId: request.requestId,
      keyId: vectors.gateway_key.key_id,
    });
    expect(bootstrap.payload).toHaveLength(0);
    expect(bootstrap.timestampMs).toBeGreaterThan(before - 60_000);
    expect(bootstrap.timestampMs).toBeLessThanOrEqual(Date.now());
    expect(verifiesWithGatewayKey(bootstrap)).toBe(true);

    const published = clientEvent(32, "corr-1");
    expect(gateway.hub.publish(published, { userId: "alice" })).toBe(1);
    const received = await stream.next();
    expect(received).toEqual({ ...published });
    expect(verifiesWithGatewayKey(received)).toBe(true);
  });

  it("refuses an ill-formed last_event_id with INVALID_ARGUMENT", async () => {
    const gateway = await startGateway();
    gateway.addSession("alice", "a-phone");
    const { error, events } = await subscribe(
      gateway.address,
      subscribeRequest("a-phone", "not-a-stream-id"),
    ).failure();
    expect(events).toEqual([]);
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
    expect(gateway.hub.size).toBe(0);
  });

  // A client that stops reading fills its own queue, and only its own.
  it("overflows a client that stopped reading with RESOURCE_EXHAUSTED while another keeps receiving", async () => {
    const gateway = await startGateway({ queueSize: 8 });
    gateway.addSession("alice", "a-phone");
    gateway.addSession("alice", "a-laptop");
    const slow = pausedSubscription(gateway.address, subscribeRequest("a-phone"), cleanup);
    await slow.bootstrap;
    const healthy = subscribe(gateway.address, subscribeRequest("a-laptop"));
    expect((await healthy.next()).eventType).toBe("gateway.server_time");

    const published: SignedEvent[] = [];
    let reached = 2;
    // One event at a time, each taken by the healthy client before the next:
    // only the paused stream can fall behind. The bound is a safety net.
    for (let i = 0; i < 2_000 && reached === 2; i++) {
      const event = clientEvent(4_096);
      published.push(event);
      reached = gateway.hub.publish(event, { userId: "alice" });
      expect((await healthy.next()).eventId).toBe(event.eventId);
    }
    expect(reached).toBe(1);
    expect(gateway.hub.openSessionIds()).toEqual(["a-laptop"]);

    for (let i = 0; i < 3; i++) {
      const event = clientEvent(4_096);
      published.push(event);
      expect(gateway.hub.publish(event, { userId: "alice" })).toBe(1);
      expect((await healthy.next()).eventId).toBe(event.eventId);
    }

    slow.resume();
    const status = await slow.status;
    expect(status.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(status.details).toBe("push stream overflowed");
    expectInOrderPrefix(slow.events.slice(1), published);
    expect(slow.events.length - 1).toBeLessThan(published.length);
  });

  // With the stream window at zero the bootstrap event cannot leave: the
  // transport is blocked, so published events wait in the hub's queue.
  it("keeps what the transport has not accepted in the hub queue and overflows it past queueSize", async () => {
    const gateway = await startGateway({ queueSize: 8 });
    gateway.addSession("alice", "a-phone");
    const blocked = blockedSubscription(gateway.address, subscribeRequest("a-phone"), cleanup);
    await blocked.responded;
    const [stream] = gateway.opened;

    for (let i = 1; i <= 8; i++) {
      expect(gateway.hub.publish(clientEvent(), { userId: "alice" })).toBe(1);
      expect(stream?.queued).toBe(i);
    }
    expect(gateway.hub.publish(clientEvent(), { userId: "alice" })).toBe(0);
    expect(stream?.ended.aborted).toBe(true);

    blocked.resume();
    const { status, events } = await blocked.end();
    expect(status).toEqual({ code: Status.RESOURCE_EXHAUSTED, details: "push stream overflowed" });
    expect(events.map((event) => event.eventType)).toEqual(["gateway.server_time"]);
  });

  // The hub ends a stream whose transport is blocked; the status waits behind
  // the data already written and arrives once the client reads again.
  it("delivers FAILED_PRECONDITION to a blocked client's revoked stream once it reads again", async () => {
    const gateway = await startGateway();
    gateway.addSession("alice", "a-phone");
    const blocked = blockedSubscription(gateway.address, subscribeRequest("a-phone"), cleanup);
    await blocked.responded;
    const [stream] = gateway.opened;
    for (let i = 0; i < 3; i++) gateway.hub.publish(clientEvent(), { userId: "alice" });
    expect(stream?.queued).toBe(3);

    expect(gateway.hub.endSession("a-phone")).toBe(1);
    blocked.resume();
    const { status, events, rstCode } = await blocked.end();
    expect(status).toEqual({
      code: Status.FAILED_PRECONDITION,
      details: "device session is revoked",
    });
    expect(rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR);
    // The bootstrap event was already written; the queued events were dropped.
    expect(events.map((event) => event.eventType)).toEqual(["gateway.server_time"]);
    expect(verifiesWithGatewayKey(events[0] as SubscribeEventsResponse)).toBe(true);
  });

  it("resets a revoked stream whose client never takes its status within the terminal timeout", async () => {
    const gateway = await startGateway({ terminalTimeoutMs: 200 });
    gateway.addSession("alice", "a-phone");
    const blocked = blockedSubscription(gateway.address, subscribeRequest("a-phone"), cleanup);
    await blocked.responded;
    const [stream] = gateway.opened;
    if (stream === undefined) throw new Error("no stream registered");
    const release = vi.spyOn(stream, "release");

    gateway.hub.endSession("a-phone");
    // Never reads again: the server resets the stream (RST_STREAM CANCEL) and frees it.
    const { status, events, rstCode } = await blocked.end();
    expect(rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(status).toBeUndefined();
    expect(events).toEqual([]);
    await vi.waitFor(() => expect(release).toHaveBeenCalled(), { timeout: 10_000 });
  });

  it("ends every stream with UNAVAILABLE on close(), blocked ones included, and refuses new ones", async () => {
    const gateway = await startGateway();
    gateway.addSession("alice", "a-phone");
    gateway.addSession("bob", "b-phone");
    const reading = subscribe(gateway.address, subscribeRequest("a-phone"));
    await reading.next();
    const blocked = blockedSubscription(gateway.address, subscribeRequest("b-phone"), cleanup);
    await blocked.responded;
    gateway.hub.publish(clientEvent(), { userId: "bob" });

    const closing = gateway.hub.close();
    const { error } = await reading.failure();
    expect(error.code).toBe(Status.UNAVAILABLE);
    expect(error.details).toBe("gateway is shutting down");

    blocked.resume();
    const { status, events } = await blocked.end();
    expect(status).toEqual({ code: Status.UNAVAILABLE, details: "gateway is shutting down" });
    expect(events.map((event) => event.eventType)).toEqual(["gateway.server_time"]);
    await closing;
    expect(gateway.hub.size).toBe(0);

    const late = await subscribe(gateway.address, subscribeRequest("a-phone")).failure();
    expect(late.error.code).toBe(Status.UNAVAILABLE);
    expect(late.error.details).toBe("gateway is shutting down");
    expect(late.events).toEqual([]);
  });

  // §6: a revoke applied after authentication but before registration found no
  // stream to end; the re-check after registering must catch it.
  it("closes a stream whose session was revoked between authentication and registration", async () => {
    let gateway: Awaited<ReturnType<typeof startGateway>> | undefined;
    gateway = await startGateway({
      afterAuthenticate: (session) => {
        gateway?.markRevoked(session.deviceSessionId);
        expect(gateway?.hub.endSession(session.deviceSessionId)).toBe(0);
      },
    });
    gateway.addSession("alice", "a-phone");
    const { error, events } = await subscribe(
      gateway.address,
      subscribeRequest("a-phone"),
    ).failure();
    expect(error.code).toBe(Status.FAILED_PRECONDITION);
    expect(error.details).toBe("device session is revoked");
    expect(events).toEqual([]);
    expect(gateway.hub.size).toBe(0);
    expect((await gateway.metrics.pushStreamCloses.get()).values).toContainEqual(
      expect.objectContaining({ labels: { reason: "revoked" }, value: 1 }),
    );
  });

  it("removes the stream from the hub when the client cancels", async () => {
    const gateway = await startGateway();
    gateway.addSession("alice", "a-phone");
    const stream = subscribe(gateway.address, subscribeRequest("a-phone"));
    await stream.next();
    expect(gateway.hub.size).toBe(1);
    stream.cancel();
    await vi.waitFor(() => expect(gateway.hub.size).toBe(0), { timeout: 10_000 });
    expect((await gateway.metrics.pushStreamCloses.get()).values).toContainEqual(
      expect.objectContaining({ labels: { reason: "client" }, value: 1 }),
    );
  });
});

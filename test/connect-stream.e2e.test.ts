/**
 * SubscribeEvents over Connect and gRPC-Web on the public listener (contract
 * §7, §12, §14): a real redis-server, in-process gateways on real sockets,
 * and the connect-web transports as the client, in both codecs. The same
 * signed events, terminal statuses, stream caps and messages as on the gRPC
 * listener; a client that stops reading overflows its own bounded queue, and
 * the gateway bin's memory stays bounded meanwhile; resume recovers missed
 * events; shutdown ends open streams.
 */
import { request as httpRequest, type IncomingMessage } from "node:http";
import { create, toBinary } from "@bufbuild/protobuf";
import { ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import type { Redis } from "ioredis";
import { Status } from "nice-grpc";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type {
  SubscribeEventsRequest,
  SubscribeEventsResponse,
} from "../proto/gen/edgegateway/v1/edge_gateway.js";
import {
  type SubscribeEventsResponse as ConnectEvent,
  EdgeGatewayService,
  SubscribeEventsRequestSchema,
} from "../proto/gen-es/edgegateway/v1/edge_gateway_pb.js";
import { publishClientEvent } from "../runtime/kit/publishers.js";
import { type Cleanup, createCleanup } from "./support/cleanup.js";
import { putSession, startGatewayBin } from "./support/gateway.js";
import { newDeviceKey } from "./support/keys.js";
import { processMemory, resetPeakResident } from "./support/process-memory.js";
import {
  hasValidGatewaySignature,
  metric,
  metricValue,
  newDevice,
  type Outcome,
  SAFETY_MS,
  scrapeMetrics,
  startPushGateway,
  subscribe,
  subscribeRequest,
  type TestDevice,
  uniqueName,
} from "./support/push.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";
import { waitFor } from "./support/wait.js";

const SUBSCRIBE_EVENTS_PATH = "/edgegateway.v1.EdgeGatewayService/SubscribeEvents";
const REVOKED = { status: "FAILED_PRECONDITION", details: "device session is revoked" };
const SHUTTING_DOWN = { status: "UNAVAILABLE", details: "gateway is shutting down" };
const TOO_MANY_FOR_SESSION = {
  status: "RESOURCE_EXHAUSTED",
  details: "too many streams for this device session",
};
const CAPACITY_REACHED = {
  status: "RESOURCE_EXHAUSTED",
  details: "gateway stream capacity reached",
};

let redis: TestRedis;
let publisher: Redis;
const cleanup = createCleanup();

beforeAll(async () => {
  redis = await startRedis();
  publisher = redis.client();
});

afterEach(() => cleanup.run());

afterAll(async () => {
  publisher?.disconnect();
  await redis?.stop();
});

type PushGateway = Awaited<ReturnType<typeof startPushGateway>>;

const transports: [string, (baseUrl: string) => Transport][] = [
  ["Connect, binary", (baseUrl) => createConnectTransport({ baseUrl, useBinaryFormat: true })],
  ["Connect, JSON", (baseUrl) => createConnectTransport({ baseUrl, useBinaryFormat: false })],
  ["gRPC-Web, binary", (baseUrl) => createGrpcWebTransport({ baseUrl, useBinaryFormat: true })],
  ["gRPC-Web, JSON", (baseUrl) => createGrpcWebTransport({ baseUrl, useBinaryFormat: false })],
];

/** An event in the shape the gRPC client decodes it, for the shared signature check. */
function asGrpcEvent(event: ConnectEvent): SubscribeEventsResponse {
  return {
    eventId: event.eventId,
    eventType: event.eventType,
    timestampMs: Number(event.timestampMs),
    payload: Buffer.from(event.payload),
    requestId: event.requestId,
    keyId: event.keyId,
    signature: Buffer.from(event.signature),
  };
}

/** A SubscribeEvents call over Connect or gRPC-Web that records what it receives. */
interface ConnectSubscription {
  readonly events: SubscribeEventsResponse[];
  readonly ended: Outcome | undefined;
  /** The first `count` events, once they arrived; rejects if the stream ends with fewer. */
  received(count: number): Promise<SubscribeEventsResponse[]>;
  /** The terminal status, once the stream ends. */
  terminal(): Promise<Outcome>;
  cancel(): void;
}

/** Opens SubscribeEvents over `transport` and reads continuously. */
function connectSubscribe(
  transport: Transport,
  request: SubscribeEventsRequest,
  cleanup: Cleanup,
): ConnectSubscription {
  const client = createClient(EdgeGatewayService, transport);
  const abort = new AbortController();
  const events: SubscribeEventsResponse[] = [];
  let ended: Outcome | undefined;
  const done = (async () => {
    try {
      const stream = client.subscribeEvents(
        { ...request, timestampMs: BigInt(request.timestampMs) },
        { signal: abort.signal },
      );
      for await (const event of stream) events.push(asGrpcEvent(event));
      ended = { status: "OK", details: "" };
    } catch (error) {
      if (!(error instanceof ConnectError)) throw error;
      // Connect's codes are gRPC's numbers: name them as the gRPC tests do.
      ended = {
        status: Status[error.code as number] ?? String(error.code),
        details: error.rawMessage,
      };
    }
  })();
  cleanup.defer(async () => {
    abort.abort();
    await done;
  });
  const describe = () =>
    `${events.length} event(s), ended: ${ended === undefined ? "no" : `${ended.status} ${ended.details}`}`;
  return {
    events,
    get ended() {
      return ended;
    },
    async received(count) {
      await waitFor(`${count} event(s); ${describe()}`, () => {
        if (events.length >= count) return true;
        if (ended !== undefined)
          throw new Error(`stream ended before ${count} event(s): ${describe()}`);
        return false;
      });
      return events.slice(0, count);
    },
    async terminal() {
      await waitFor(`the end; ${describe()}`, () => ended !== undefined);
      return ended!;
    },
    cancel: () => abort.abort(),
  };
}

/** A device whose session record is in Redis. */
async function storedDevice(userId = uniqueName("user")): Promise<TestDevice> {
  const device = newDevice(userId);
  await putSession(publisher, device);
  return device;
}

/** Publishes `count` events of `bytes` bytes each for `userId`; returns their ids. */
async function publishMany(
  node: PushGateway,
  userId: string,
  count: number,
  bytes = 16,
): Promise<string[]> {
  const ids: string[] = [];
  for (let index = 0; index < count; index++) {
    ids.push(
      await publishClientEvent(
        publisher,
        { userId, eventType: "demo.tick", payload: Buffer.alloc(bytes, index) },
        { stream: node.clientEvents, maxPayloadBytes: bytes },
      ),
    );
  }
  return ids;
}

function eventIds(events: readonly SubscribeEventsResponse[]): string[] {
  return events.map((event) => event.eventId);
}

describe.each(transports)("SubscribeEvents over %s", (_name, transportFor) => {
  it("sends the signed bootstrap event, then live events signed by the gateway key", async () => {
    const node = await startPushGateway(redis, publisher, cleanup);
    const transport = transportFor(`http://${node.publicHttp}`);
    const device = await storedDevice();
    const request = subscribeRequest(device);
    const stream = connectSubscribe(transport, request, cleanup);
    const [bootstrap] = await stream.received(1);
    expect(bootstrap).toMatchObject({
      eventType: "gateway.server_time",
      requestId: request.requestId,
      eventId: "0-0",
    });
    expect(bootstrap!.payload).toHaveLength(0);

    const ids = await publishMany(node, device.userId, 3);
    const live = (await stream.received(4)).slice(1);
    expect(eventIds(live)).toEqual(ids);
    expect(live.map((event) => Buffer.from(event.payload))).toEqual([
      Buffer.alloc(16, 0),
      Buffer.alloc(16, 1),
      Buffer.alloc(16, 2),
    ]);
    expect(stream.events.every(hasValidGatewaySignature)).toBe(true);
    expect(stream.ended).toBeUndefined();
    expect(await metric(node.admin, "gateway_push_streams_active")).toBe(1);

    // The client goes away: its stream is released.
    stream.cancel();
    expect(await stream.terminal()).toEqual({ status: "CANCELLED", details: expect.any(String) });
    await waitFor("the cancelled stream released", async () => {
      return (await metric(node.admin, "gateway_push_streams_active")) === 0;
    });
  });

  it("ends DEADLINE_EXCEEDED when the call's timeout passes, and releases the stream", async () => {
    const node = await startPushGateway(redis, publisher, cleanup);
    const client = createClient(EdgeGatewayService, transportFor(`http://${node.publicHttp}`));
    const request = subscribeRequest(await storedDevice());
    const events: ConnectEvent[] = [];
    const error = await (async () => {
      const stream = client.subscribeEvents(
        { ...request, timestampMs: BigInt(request.timestampMs) },
        { timeoutMs: 300 },
      );
      for await (const event of stream) events.push(event);
    })().then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(ConnectError);
    expect(Status[(error as ConnectError).code as number]).toBe("DEADLINE_EXCEEDED");
    expect(events.map((event) => event.eventType)).toEqual(["gateway.server_time"]);
    await waitFor("the stream released", async () => {
      return (await metric(node.admin, "gateway_push_streams_active")) === 0;
    });
  });

  it("ends with the gRPC listener's status when the session is revoked or changed", async () => {
    const node = await startPushGateway(redis, publisher, cleanup);
    const transport = transportFor(`http://${node.publicHttp}`);
    const revoked = await storedDevice();
    const changed = await storedDevice();
    const revokedStream = connectSubscribe(transport, subscribeRequest(revoked), cleanup);
    const changedStream = connectSubscribe(transport, subscribeRequest(changed), cleanup);
    const overGrpc = subscribe(node.grpc, subscribeRequest(changed), cleanup);
    await Promise.all([revokedStream.received(1), changedStream.received(1), overGrpc.received(1)]);

    await node.snapshot(revoked, "revoked");
    expect(await revokedStream.terminal()).toEqual(REVOKED);
    // A new key for the session: streams opened under the old one end as changed.
    await node.snapshot({ ...changed, publicKeyText: newDeviceKey().publicKeyText }, "active");
    const grpcOutcome = await overGrpc.terminal();
    expect(grpcOutcome).toEqual({
      status: "UNAVAILABLE",
      details: "device session changed; reconnect",
    });
    expect(await changedStream.terminal()).toEqual(grpcOutcome);

    const reopened = connectSubscribe(transport, subscribeRequest(revoked), cleanup);
    expect(await reopened.terminal()).toEqual(REVOKED);
    expect(reopened.events).toEqual([]);
    await waitFor("every stream released", async () => {
      return (await metric(node.admin, "gateway_push_streams_active")) === 0;
    });
  });

  it("refuses a stream before it opens with the gRPC listener's statuses", async () => {
    const node = await startPushGateway(redis, publisher, cleanup);
    const transport = transportFor(`http://${node.publicHttp}`);
    const device = await storedDevice();
    const refused = async (request: SubscribeEventsRequest) => {
      const stream = connectSubscribe(transport, request, cleanup);
      const outcome = await stream.terminal();
      expect(stream.events).toEqual([]);
      return outcome;
    };
    const overGrpc = async (request: SubscribeEventsRequest) => {
      const stream = subscribe(node.grpc, request, cleanup);
      const outcome = await stream.terminal();
      expect(stream.events).toEqual([]);
      return outcome;
    };
    const cases: [SubscribeEventsRequest, SubscribeEventsRequest, Outcome][] = [
      [
        subscribeRequest(newDevice("nobody")),
        subscribeRequest(newDevice("nobody")),
        { status: "UNAUTHENTICATED", details: "device session not found" },
      ],
      [
        subscribeRequest(device, { signingKey: newDeviceKey().privateKey }),
        subscribeRequest(device, { signingKey: newDeviceKey().privateKey }),
        { status: "UNAUTHENTICATED", details: "invalid request signature" },
      ],
      [
        subscribeRequest(device, { timestampMs: Date.now() - 60_000 }),
        subscribeRequest(device, { timestampMs: Date.now() - 60_000 }),
        { status: "UNAUTHENTICATED", details: "request timestamp outside allowed clock skew" },
      ],
      [
        { ...subscribeRequest(device), protocolVersion: 2 },
        { ...subscribeRequest(device), protocolVersion: 2 },
        { status: "INVALID_ARGUMENT", details: "protocol_version must be 1" },
      ],
    ];
    for (const [overConnect, grpcRequest, expected] of cases) {
      expect(await refused(overConnect)).toEqual(expected);
      expect(await overGrpc(grpcRequest)).toEqual(expected);
    }

    // A request_id already used (here by a stream over gRPC) is a replay on either listener.
    const first = subscribeRequest(device, { requestId: uniqueName("sub-once") });
    const opened = subscribe(node.grpc, first, cleanup);
    await opened.received(1);
    const replayed = { status: "ALREADY_EXISTS", details: "request_id already used" };
    expect(await refused(first)).toEqual(replayed);
    expect(await overGrpc(first)).toEqual(replayed);

    const text = await scrapeMetrics(node.admin);
    expect(metricValue(text, 'gateway_auth_failures_total{reason="replayed"}')).toBe(2);
    expect(metricValue(text, "gateway_push_streams_active")).toBe(1);
  });

  // The caps count every stream of the node, whichever listener carries it,
  // and refuse over Connect and gRPC-Web with the gRPC listener's statuses.
  it("refuses a stream past the per-session cap or the node's cap, and opens one once a stream ends", async () => {
    const node = await startPushGateway(redis, publisher, cleanup, {
      env: { GATEWAY_MAX_STREAMS_PER_SESSION: "2", GATEWAY_MAX_PUSH_STREAMS: "3" },
    });
    const transport = transportFor(`http://${node.publicHttp}`);
    const user = uniqueName("user");
    const phone = await storedDevice(user);
    const laptop = await storedDevice(user);
    const tablet = await storedDevice();
    const open = async (device: TestDevice) => {
      const stream = connectSubscribe(transport, subscribeRequest(device), cleanup);
      await stream.received(1);
      return stream;
    };
    const refused = async (device: TestDevice) => {
      const stream = connectSubscribe(transport, subscribeRequest(device), cleanup);
      const outcome = await stream.terminal();
      expect(stream.events).toEqual([]);
      return outcome;
    };
    const refusedOverGrpc = async (device: TestDevice) => {
      const stream = subscribe(node.grpc, subscribeRequest(device), cleanup);
      const outcome = await stream.terminal();
      expect(stream.events).toEqual([]);
      return outcome;
    };

    const phoneFirst = await open(phone);
    const phoneOverGrpc = subscribe(node.grpc, subscribeRequest(phone), cleanup);
    await phoneOverGrpc.received(1);
    expect(await refused(phone)).toEqual(TOO_MANY_FOR_SESSION);
    expect(await refusedOverGrpc(phone)).toEqual(TOO_MANY_FOR_SESSION);
    const laptopStream = await open(laptop);
    expect(await refused(tablet)).toEqual(CAPACITY_REACHED);
    expect(await refusedOverGrpc(tablet)).toEqual(CAPACITY_REACHED);
    expect(await refused(phone)).toEqual(TOO_MANY_FOR_SESSION);

    // The refusals took no slot; the open streams still receive.
    const [id] = await publishMany(node, user, 1);
    for (const stream of [phoneFirst, phoneOverGrpc, laptopStream]) {
      expect(eventIds((await stream.received(2)).slice(1))).toEqual([id]);
    }

    const released = async (stream: ConnectSubscription) => {
      stream.cancel();
      let active = Number.NaN;
      await waitFor(
        () =>
          `the cancelled stream released (streams active: ${active}; the client got ` +
          `${stream.events.length} event(s), ended: ${JSON.stringify(stream.ended)})`,
        async () => {
          active = await metric(node.admin, "gateway_push_streams_active");
          return active === 2;
        },
      );
    };
    await released(phoneFirst);
    await open(phone);
    await released(laptopStream);
    await open(tablet);
    expect(await metric(node.admin, "gateway_push_streams_active")).toBe(3);
  });

  it("resumes from last_event_id with exactly the events missed while disconnected", async () => {
    const node = await startPushGateway(redis, publisher, cleanup);
    const transport = transportFor(`http://${node.publicHttp}`);
    const device = await storedDevice();
    const first = connectSubscribe(transport, subscribeRequest(device), cleanup);
    await first.received(1);
    const [seen] = await publishMany(node, device.userId, 1);
    expect(eventIds((await first.received(2)).slice(1))).toEqual([seen]);
    first.cancel();
    await first.terminal();

    const missed = await publishMany(node, device.userId, 3);
    const resumed = connectSubscribe(
      transport,
      subscribeRequest(device, { lastEventId: seen! }),
      cleanup,
    );
    const [bootstrap, ...replayed] = await resumed.received(4);
    expect(bootstrap).toMatchObject({ eventType: "gateway.server_time", eventId: seen });
    expect(eventIds(replayed)).toEqual(missed);
    const later = await publishMany(node, device.userId, 1);
    expect(eventIds((await resumed.received(5)).slice(4))).toEqual(later);
    expect(resumed.events.every(hasValidGatewaySignature)).toBe(true);
    expect(await metric(node.admin, 'gateway_push_resumes_total{result="recovered"}')).toBe(1);
  });
});

/** The request body of a binary Connect streaming call: one enveloped message. */
function connectBody(request: SubscribeEventsRequest): Buffer {
  const message = toBinary(
    SubscribeEventsRequestSchema,
    create(SubscribeEventsRequestSchema, {
      ...request,
      timestampMs: BigInt(request.timestampMs),
    }),
  );
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(message.byteLength, 1);
  return Buffer.concat([prefix, message]);
}

/** The messages and the end-stream message of a Connect streaming response body. */
function envelopesOf(body: Buffer): { messages: number; end: unknown } {
  let messages = 0;
  let end: unknown;
  for (let offset = 0; offset + 5 <= body.byteLength; ) {
    const flags = body[offset]!;
    const length = body.readUInt32BE(offset + 1);
    const data = body.subarray(offset + 5, offset + 5 + length);
    if (flags & 0x02) end = JSON.parse(data.toString("utf8"));
    else messages++;
    offset += 5 + length;
  }
  return { messages, end };
}

/** gRPC-Web response frames: how many messages, and the trailers of the trailer frame (flag 0x80). */
function grpcWebFramesOf(body: Buffer): { messages: number; trailers: Record<string, string> } {
  let messages = 0;
  const trailers: Record<string, string> = {};
  for (let offset = 0; offset + 5 <= body.byteLength; ) {
    const flags = body[offset]!;
    const length = body.readUInt32BE(offset + 1);
    const data = body.subarray(offset + 5, offset + 5 + length);
    if (flags & 0x80) {
      for (const line of data.toString("utf8").split("\r\n")) {
        const colon = line.indexOf(":");
        if (colon > 0) trailers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
      }
    } else messages++;
    offset += 5 + length;
  }
  return { messages, trailers };
}

/** The wire protocols of the public listener's push streams. */
type HttpProtocol = "connect" | "grpc-web";

/**
 * A binary Connect or gRPC-Web SubscribeEvents over a raw node:http request
 * whose response is not read until `resume()`: nothing past the socket
 * buffers leaves the gateway meanwhile.
 */
function stalledStream(
  publicHttp: string,
  request: SubscribeEventsRequest,
  protocol: HttpProtocol = "connect",
) {
  const [host, port] = [
    publicHttp.slice(0, publicHttp.lastIndexOf(":")),
    publicHttp.slice(publicHttp.lastIndexOf(":") + 1),
  ];
  // Both protocols envelope the request message the same way.
  const body = connectBody(request);
  let response: IncomingMessage | undefined;
  const chunks: Buffer[] = [];
  const client = httpRequest({
    host,
    port: Number(port),
    method: "POST",
    path: SUBSCRIBE_EVENTS_PATH,
    headers: {
      ...(protocol === "connect"
        ? { "content-type": "application/connect+proto", "connect-protocol-version": "1" }
        : { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" }),
      "content-length": String(body.byteLength),
    },
  });
  const responded = new Promise<IncomingMessage>((resolve, reject) => {
    client.once("response", (answer) => {
      response = answer;
      // Paused: the socket stops being read once its buffers are full.
      answer.pause();
      resolve(answer);
    });
    client.once("error", reject);
  });
  client.on("error", () => {});
  client.end(body);
  cleanup.defer(() => client.destroy());
  return {
    responded,
    /**
     * Reads the rest of the response; resolves once it closed: how many
     * messages it held, its end-stream message (Connect) or trailers
     * (gRPC-Web), the terminal status as a device sees it, and whether the
     * response ended whole.
     */
    async resume(): Promise<{
      messages: number;
      end: unknown;
      outcome: Outcome | undefined;
      complete: boolean;
    }> {
      const answer = response ?? (await responded);
      answer.on("data", (chunk: Buffer) => chunks.push(chunk));
      answer.on("error", () => {});
      const closedAnswer = new Promise<void>((resolve) => answer.once("close", resolve));
      answer.resume();
      await closedAnswer;
      const received = Buffer.concat(chunks);
      if (protocol === "connect") {
        const { messages, end } = envelopesOf(received);
        const error = (end as { error?: { code: string; message: string } } | undefined)?.error;
        const outcome =
          end === undefined
            ? undefined
            : error === undefined
              ? { status: "OK", details: "" }
              : { status: error.code.toUpperCase(), details: error.message };
        return { messages, end, outcome, complete: answer.complete };
      }
      const { messages, trailers } = grpcWebFramesOf(received);
      const code = trailers["grpc-status"];
      const outcome =
        code === undefined
          ? undefined
          : {
              status: Status[Number(code)] ?? code,
              details: decodeURIComponent(trailers["grpc-message"] ?? ""),
            };
      return { messages, end: trailers, outcome, complete: answer.complete };
    },
  };
}

describe("a Connect client that stops reading", () => {
  // The stalled socket fills its buffers; past them every event waits in the
  // stream's queue of 8, and the next one overflows it. Published one at a
  // time, each taken by the healthy client first, so only the stalled stream
  // can fall behind; the bound on the loop is a safety net.
  async function overflowStalledStream(node: PushGateway) {
    const phone = await storedDevice("alice");
    const laptop = await storedDevice("alice");
    const stalled = stalledStream(node.publicHttp, subscribeRequest(phone));
    expect((await stalled.responded).statusCode).toBe(200);
    const healthy = connectSubscribe(
      createConnectTransport({ baseUrl: `http://${node.publicHttp}`, useBinaryFormat: true }),
      subscribeRequest(laptop),
      cleanup,
    );
    await healthy.received(1);
    expect(await metric(node.admin, "gateway_push_streams_active")).toBe(2);

    const published: string[] = [];
    const overflowed = () =>
      metric(node.admin, 'gateway_push_stream_closes_total{reason="overflow"}');
    while ((await overflowed()) === 0) {
      if (published.length >= 1000) throw new Error("the stalled stream never overflowed");
      published.push(...(await publishMany(node, "alice", 1, 256 * 1024)));
      await healthy.received(published.length + 1);
    }
    // The queue never held more than its bound: the stream ended at once, the other one lives.
    const text = await scrapeMetrics(node.admin);
    expect(metricValue(text, 'gateway_push_stream_closes_total{reason="overflow"}')).toBe(1);
    expect(metricValue(text, "gateway_push_streams_active")).toBe(1);
    published.push(...(await publishMany(node, "alice", 3)));
    expect(eventIds((await healthy.received(published.length + 1)).slice(1))).toEqual(published);
    expect(healthy.ended).toBeUndefined();
    return { stalled, published };
  }

  it("overflows its own queue and takes RESOURCE_EXHAUSTED behind the events already sent", async () => {
    const node = await startPushGateway(redis, publisher, cleanup, {
      env: {
        GATEWAY_PUSH_STREAM_QUEUE_SIZE: "8",
        GATEWAY_MAX_EVENT_PAYLOAD_BYTES: String(256 * 1024),
        GATEWAY_SHUTDOWN_TIMEOUT: "20s",
      },
    });
    const { stalled, published } = await overflowStalledStream(node);
    const { messages, end, complete } = await stalled.resume();
    expect(complete).toBe(true);
    expect(end).toEqual({
      error: { code: "resource_exhausted", message: "push stream overflowed" },
    });
    // The bootstrap and some events came through; not all of them.
    expect(messages).toBeGreaterThan(1);
    expect(messages).toBeLessThan(published.length + 1);
  });

  it("is reset when it never takes its terminal status within the shutdown timeout", async () => {
    const node = await startPushGateway(redis, publisher, cleanup, {
      env: {
        GATEWAY_PUSH_STREAM_QUEUE_SIZE: "8",
        GATEWAY_MAX_EVENT_PAYLOAD_BYTES: String(256 * 1024),
        GATEWAY_SHUTDOWN_TIMEOUT: "1s",
      },
    });
    const { stalled } = await overflowStalledStream(node);
    await waitFor("the stalled stream reset", () =>
      node.gateway.logger.lines.some((line) => line.startsWith("info push stream reset")),
    );
    // Reading again finds the response cut off: no terminal status, the socket closed.
    const { messages, end, complete } = await stalled.resume();
    expect(complete).toBe(false);
    expect(end).toBeUndefined();
    expect(messages).toBeGreaterThan(0);
    expect(await metric(node.admin, "gateway_push_streams_active")).toBe(1);
  });
});

const MIB = 1024 * 1024;

const protocols: [string, HttpProtocol, (baseUrl: string) => Transport][] = [
  ["Connect", "connect", (baseUrl) => createConnectTransport({ baseUrl, useBinaryFormat: true })],
  ["gRPC-Web", "grpc-web", (baseUrl) => createGrpcWebTransport({ baseUrl, useBinaryFormat: true })],
];

describe.each(protocols)(
  "a %s client that stops reading, against the gateway bin",
  (_name, protocol, transportFor) => {
    // The bin runs in a process of its own, so its resident memory holds none
    // of the clients'. Delivering events at this rate costs the gateway a
    // steady amount of memory of its own (garbage awaiting collection, the
    // allocator's free lists), reached within the first few MiB: a warm-up
    // reaches it first, with only the reading client. Then far more is
    // published than the stalled client's socket buffers and queue of 8 can
    // hold: a gateway that buffered a stalled stream's events without bound
    // would grow by nearly all of it. Published a few at a time, each batch
    // taken by the reading client first, so only the stalled stream falls behind.
    it("ends it RESOURCE_EXHAUSTED with memory bounded far below what was published, while the other stream reads on", async () => {
      const name = uniqueName("bin-push");
      const clientEvents = `${name}:client_events`;
      cleanup.defer(() => publisher.del(clientEvents));
      const { bin, admin } = await startGatewayBin(redis, cleanup, {
        GATEWAY_CLIENT_EVENTS_REDIS_STREAM: clientEvents,
        GATEWAY_SESSION_EVENTS_REDIS_STREAM: `${name}:session_events`,
        GATEWAY_PUSH_STREAM_QUEUE_SIZE: "8",
        // No per-user history: the stream queues are all that could hold events.
        GATEWAY_PUSH_HISTORY_SIZE: "0",
        // Long enough that the stalled stream still holds its terminal status when read.
        GATEWAY_SHUTDOWN_TIMEOUT: "120s",
      });
      const [, publicHttp] = await bin.waitFor(/public HTTP listening on (\S+)/);
      const pid = bin.child.pid!;
      const user = uniqueName("user");
      const phone = await storedDevice(user);
      const laptop = await storedDevice(user);
      const healthy = connectSubscribe(
        transportFor(`http://${publicHttp}`),
        subscribeRequest(laptop),
        cleanup,
      );
      await healthy.received(1);

      const payloadBytes = 60 * 1024;
      const published: string[] = [];
      const overflows = () => metric(admin, 'gateway_push_stream_closes_total{reason="overflow"}');
      /** Publishes events of `payloadBytes` for the user, 4 at a time, until `bytes` more went out. */
      const publishBytes = async (bytes: number, afterEachBatch: () => Promise<void>) => {
        for (let sent = 0; sent < bytes; sent += 4 * payloadBytes) {
          const first = published.length;
          published.push(
            ...(await Promise.all(
              Array.from({ length: 4 }, (_, index) =>
                publishClientEvent(
                  publisher,
                  {
                    userId: user,
                    eventType: "demo.tick",
                    payload: Buffer.alloc(payloadBytes, first + index),
                  },
                  { stream: clientEvents, maxPayloadBytes: payloadBytes },
                ),
              ),
            )),
          );
          await healthy.received(published.length + 1);
          await afterEachBatch();
        }
      };

      resetPeakResident(pid);
      await publishBytes(32 * MIB, async () => {});
      const warm = processMemory(pid);
      const warmedUpWith = published.length;

      const stalled = stalledStream(publicHttp!, subscribeRequest(phone), protocol);
      expect((await stalled.responded).statusCode).toBe(200);
      await waitFor("the stalled stream open", async () => {
        return (await metric(admin, "gateway_push_streams_active")) === 2;
      });
      let publishedWhenOverflowed: number | undefined;
      await publishBytes(64 * MIB, async () => {
        if (publishedWhenOverflowed === undefined && (await overflows()) > 0) {
          publishedWhenOverflowed = published.length - warmedUpWith;
        }
      });
      const after = processMemory(pid);
      const publishedBytes = (published.length - warmedUpWith) * payloadBytes;
      const grewBy = after.peakResidentBytes - warm.peakResidentBytes;
      const figures = `published ${(publishedBytes / MIB).toFixed(1)} MiB; gateway peak RSS ${(warm.peakResidentBytes / MIB).toFixed(1)} MiB warmed up, ${(after.peakResidentBytes / MIB).toFixed(1)} MiB after`;
      expect(grewBy, figures).toBeLessThan(publishedBytes / 3);

      // The stalled stream overflowed well before the end, and only it.
      expect(publishedWhenOverflowed).toBeDefined();
      expect(publishedWhenOverflowed!).toBeLessThan((published.length - warmedUpWith) / 2);
      const text = await scrapeMetrics(admin);
      expect(metricValue(text, 'gateway_push_stream_closes_total{reason="overflow"}')).toBe(1);
      expect(metricValue(text, "gateway_push_streams_active")).toBe(1);
      expect(bin.output()).toContain("push stream overflowed");
      // The reading stream got every event, in order, those after the overflow included.
      expect(eventIds(healthy.events.slice(1))).toEqual(published);
      expect(healthy.ended).toBeUndefined();

      const { messages, outcome, complete } = await stalled.resume();
      expect(outcome).toEqual({ status: "RESOURCE_EXHAUSTED", details: "push stream overflowed" });
      expect(complete).toBe(true);
      // The bootstrap and the events that fit before the overflow; far from all of them.
      expect(messages).toBeGreaterThan(1);
      expect(messages).toBeLessThan(publishedWhenOverflowed! + 1);
    }, 120_000);
  },
);

describe("shutdown", () => {
  it("ends open Connect and gRPC-Web streams with UNAVAILABLE and closes the public listener", async () => {
    const node = await startPushGateway(redis, publisher, cleanup, {
      env: { GATEWAY_SHUTDOWN_TIMEOUT: "20s" },
    });
    const baseUrl = `http://${node.publicHttp}`;
    const streams = [];
    for (const [, transportFor] of transports) {
      const device = await storedDevice();
      streams.push(connectSubscribe(transportFor(baseUrl), subscribeRequest(device), cleanup));
    }
    await Promise.all(streams.map((stream) => stream.received(1)));
    expect(await metric(node.admin, "gateway_push_streams_active")).toBe(transports.length);

    const started = Date.now();
    await node.gateway.stop();
    for (const stream of streams) expect(await stream.terminal()).toEqual(SHUTTING_DOWN);
    // Nothing held the listeners open for the 20 s budget.
    expect(Date.now() - started).toBeLessThan(SAFETY_MS);
    await expect(fetch(`${baseUrl}/healthz`)).rejects.toThrow();
  });
});

describe("a Connect stream with a timeout", () => {
  it("ends with the deadline_exceeded end-stream message once its timeout passes", async () => {
    const node = await startPushGateway(redis, publisher, cleanup);
    const response = await fetch(`http://${node.publicHttp}${SUBSCRIBE_EVENTS_PATH}`, {
      method: "POST",
      headers: {
        "content-type": "application/connect+proto",
        "connect-protocol-version": "1",
        "connect-timeout-ms": "300",
      },
      body: connectBody(subscribeRequest(await storedDevice())),
    });
    expect(response.status).toBe(200);
    const { messages, end } = envelopesOf(Buffer.from(await response.arrayBuffer()));
    expect(messages).toBe(1);
    expect(end).toMatchObject({ error: { code: "deadline_exceeded" } });
  });
});

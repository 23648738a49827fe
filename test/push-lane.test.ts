/**
 * SubscribeEvents served on the HTTP/2 stream lane (runtime/grpc/push-lane.ts),
 * seen by a raw node:http2 client: grpc-js's response headers, the bootstrap
 * message, a trailers-only refusal, a revoke in the trailers; the lane serving
 * a push session with no grpc-js behind it; and, with a tracer provider
 * registered, grpc-js and nice-grpc serving the same call with a span.
 */
import { createPublicKey, verify } from "node:crypto";
import http2, { type IncomingHttpHeaders } from "node:http2";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { SpanKind } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { eventSignedBytes } from "../handlers/signing.js";
import { createSubscribeEventsAuthenticator, signEvent } from "../handlers/subscribe-events.js";
import {
  SubscribeEventsRequest,
  SubscribeEventsResponse,
} from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { DEFAULTS } from "../runtime/config/defaults.js";
import { createPushLane } from "../runtime/grpc/push-lane.js";
import { maxReceiveMessageBytes } from "../runtime/grpc/server.js";
import { createPushHub } from "../runtime/push/push-hub.js";
import { createMetrics } from "../runtime/telemetry/metrics.js";
import { startTelemetry, type Telemetry } from "../runtime/telemetry/telemetry.js";
import { createCleanup } from "./support/cleanup.js";
import { putSession } from "./support/gateway.js";
import { grpcFrame, grpcRequestHeaders } from "./support/grpc-wire.js";
import { silentLogger } from "./support/logger.js";
import {
  createMemoryReplayStore,
  createMemorySessionStore,
  gatewayPrivateKey,
  systemClock,
  vectorDevice,
  vectorSigner,
} from "./support/ports.js";
import {
  metric,
  newDevice,
  SAFETY_MS,
  startPushGateway,
  subscribe,
  subscribeRequest,
  type TestDevice,
} from "./support/push.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";

const PATH = "/edgegateway.v1.EdgeGatewayService/SubscribeEvents";

/** The response headers grpc-js sends before a server stream's first message. */
const GRPC_JS_HEADERS = {
  ":status": 200,
  "content-type": "application/grpc+proto",
  "grpc-accept-encoding": "identity,deflate,gzip",
  "grpc-encoding": "identity",
};

/** A SubscribeEvents call made with node:http2, recording everything the server sends. */
interface RawSubscription {
  /** The response headers, once they came. */
  readonly headers: Promise<IncomingHttpHeaders>;
  /** The first `count` messages, decoded, once they came. */
  messages(count: number): Promise<SubscribeEventsResponse[]>;
  /** Once the stream closed: its headers, trailers and every message. */
  readonly closed: Promise<{
    headers: IncomingHttpHeaders;
    trailers: IncomingHttpHeaders | undefined;
    messages: SubscribeEventsResponse[];
  }>;
}

const cleanup = createCleanup();
afterEach(() => cleanup.run());

function rawSubscribe(
  address: string,
  request: SubscribeEventsRequest,
  extraHeaders: Record<string, string> = {},
): RawSubscription {
  return rawCall(
    address,
    [grpcFrame(SubscribeEventsRequest.encode(request).finish())],
    extraHeaders,
  );
}

/** A SubscribeEvents call sending `body`, one write per chunk, then ending its side. */
function rawCall(
  address: string,
  body: readonly Buffer[],
  extraHeaders: Record<string, string> = {},
): RawSubscription {
  const session = http2.connect(`http://${address}`);
  session.on("error", () => {});
  cleanup.defer(() => session.destroy());
  const stream = session.request(grpcRequestHeaders(PATH, extraHeaders));
  stream.on("error", () => {});
  const messages: SubscribeEventsResponse[] = [];
  let buffered = Buffer.alloc(0);
  let headers: IncomingHttpHeaders = {};
  let trailers: IncomingHttpHeaders | undefined;
  const waiters = new Set<() => void>();
  const headersCame = new Promise<IncomingHttpHeaders>((resolve) =>
    stream.on("response", (got) => {
      headers = got;
      resolve(got);
    }),
  );
  stream.on("trailers", (got) => {
    trailers = got;
  });
  stream.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 5 && buffered.length >= 5 + buffered.readUInt32BE(1)) {
      const length = buffered.readUInt32BE(1);
      messages.push(SubscribeEventsResponse.decode(buffered.subarray(5, 5 + length)));
      buffered = buffered.subarray(5 + length);
    }
    for (const wake of waiters) wake();
  });
  const closed = new Promise<Awaited<RawSubscription["closed"]>>((resolve) =>
    stream.on("close", () => {
      for (const wake of waiters) wake();
      resolve({ headers, trailers, messages });
    }),
  );
  for (const chunk of body) stream.write(chunk);
  stream.end();
  return {
    headers: headersCame,
    closed,
    messages: (count) =>
      vi.waitFor(
        () => {
          if (messages.length < count) throw new Error(`${messages.length} of ${count} messages`);
          return messages.slice(0, count);
        },
        { timeout: SAFETY_MS },
      ),
  };
}

/** The status of a closed call, from its trailers or a trailers-only response. */
function statusOf(closed: Awaited<RawSubscription["closed"]>) {
  const from = closed.trailers ?? closed.headers;
  return {
    code: from["grpc-status"],
    message: decodeURI(String(from["grpc-message"])),
  };
}

/** The response headers a client can compare: no date (nor Node's symbol-keyed bookkeeping). */
function comparable(headers: IncomingHttpHeaders): Record<string, unknown> {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => name !== "date"));
}

const gatewayPublicKey = createPublicKey(gatewayPrivateKey);

/** Whether `event` is signed by the vectors' gateway key. */
function signedByGateway(event: SubscribeEventsResponse): boolean {
  return verify(null, eventSignedBytes(event), gatewayPublicKey, event.signature);
}

let redis: TestRedis;
let publisher: Redis;
const suite = createCleanup();
let gw: Awaited<ReturnType<typeof startPushGateway>>;

beforeAll(async () => {
  redis = await startRedis();
  publisher = redis.client();
  gw = await startPushGateway(redis, publisher, suite);
});

afterAll(async () => {
  await suite.run();
  publisher?.disconnect();
  await redis?.stop();
});

/** A device whose session is stored as active. */
async function storedDevice(userId: string): Promise<TestDevice> {
  const device = newDevice(userId);
  await putSession(publisher, device);
  return device;
}

function requests(code: string): Promise<number> {
  return metric(gw.admin, `gateway_grpc_requests_total{method="SubscribeEvents",code="${code}"}`);
}

describe("SubscribeEvents on the lane, as a raw HTTP/2 client sees it", () => {
  it("sends grpc-js's response headers, the signed bootstrap, then the user's events", async () => {
    const device = await storedDevice("alice");
    const request = subscribeRequest(device);
    const raw = rawSubscribe(gw.grpc, request);

    expect(comparable(await raw.headers)).toEqual(GRPC_JS_HEADERS);
    const [bootstrap] = await raw.messages(1);
    expect(bootstrap?.eventType).toBe("gateway.server_time");
    expect(bootstrap?.requestId).toBe(request.requestId);
    expect(bootstrap?.payload).toHaveLength(0);
    expect(signedByGateway(bootstrap!)).toBe(true);

    const eventId = await gw.publish({ userId: "alice", eventType: "demo.tick" });
    const [, event] = await raw.messages(2);
    expect(event?.eventId).toBe(eventId);
    expect(event?.eventType).toBe("demo.tick");
    expect(signedByGateway(event!)).toBe(true);
  });

  it("refuses an unknown session with a trailers-only UNAUTHENTICATED, counted", async () => {
    const before = await requests("UNAUTHENTICATED");
    const closed = await rawSubscribe(gw.grpc, subscribeRequest(newDevice("alice"))).closed;

    expect(closed.trailers).toBeUndefined();
    expect(closed.messages).toEqual([]);
    expect(closed.headers[":status"]).toBe(200);
    expect(closed.headers["content-type"]).toBe("application/grpc+proto");
    expect(statusOf(closed)).toEqual({ code: "16", message: "device session not found" });
    expect(await requests("UNAUTHENTICATED")).toBe(before + 1);
  });

  it("ends an open stream with FAILED_PRECONDITION in the trailers once its session is revoked", async () => {
    const device = newDevice("bob");
    await gw.snapshot(device, "active");
    const raw = rawSubscribe(gw.grpc, subscribeRequest(device));
    await raw.messages(1);

    await gw.snapshot(device, "revoked");
    const closed = await raw.closed;

    expect(comparable(closed.headers)).toEqual(GRPC_JS_HEADERS);
    expect(closed.messages).toHaveLength(1);
    expect(statusOf(closed)).toEqual({ code: "9", message: "device session is revoked" });
  });
});

describe("SubscribeEvents on the lane with a grpc-timeout", () => {
  it("ends the stream with DEADLINE_EXCEEDED in the trailers once it passes, and frees it", async () => {
    const device = await storedDevice("frank");
    const raw = rawSubscribe(gw.grpc, subscribeRequest(device), { "grpc-timeout": "300m" });
    await raw.messages(1);
    const closed = await raw.closed;

    expect(comparable(closed.headers)).toEqual(GRPC_JS_HEADERS);
    expect(closed.messages).toHaveLength(1);
    expect(statusOf(closed)).toEqual({ code: "4", message: "Deadline exceeded" });
    await vi.waitFor(
      async () => expect(await metric(gw.admin, "gateway_push_streams_active")).toBe(0),
      { timeout: SAFETY_MS },
    );
  });
});

describe("SubscribeEvents on the lane refuses a malformed request as grpc-js does", () => {
  let bare: Server;
  let bareAddress: string;

  beforeAll(async () => {
    // grpc-js itself, with the gateway's message limit and a server stream at the same path.
    bare = new Server({
      "grpc.max_receive_message_length": maxReceiveMessageBytes(DEFAULTS.maxCommandPayloadBytes),
    });
    const identity = (bytes: Buffer) => bytes;
    bare.addService(
      {
        SubscribeEvents: {
          path: PATH,
          requestStream: false,
          responseStream: true,
          requestSerialize: identity,
          requestDeserialize: identity,
          responseSerialize: identity,
          responseDeserialize: identity,
        },
      },
      { SubscribeEvents: (call: { end(): void }) => call.end() },
    );
    const port = await new Promise<number>((resolve, reject) =>
      bare.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
    bareAddress = `127.0.0.1:${port}`;
  });

  afterAll(() => bare?.forceShutdown());

  const request = () =>
    grpcFrame(SubscribeEventsRequest.encode(subscribeRequest(newDevice("erin"))).finish());
  const cases: ReadonlyArray<[string, () => Buffer[]]> = [
    ["two request messages", () => [request(), request()]],
    ["no request message", () => []],
    ["a length prefix over the limit", () => [Buffer.from([0, 0x7f, 0xff, 0xff, 0xff])]],
  ];
  for (const [name, body] of cases) {
    it(`answers ${name} with grpc-js's trailers-only status and message`, async () => {
      const chunks = body();
      const [answer, bareAnswer] = await Promise.all([
        rawCall(gw.grpc, chunks).closed,
        rawCall(bareAddress, chunks).closed,
      ]);
      expect(bareAnswer.trailers).toBeUndefined();
      expect(statusOf(bareAnswer).code).not.toBe("0");
      expect(answer.trailers).toBeUndefined();
      expect(comparable(answer.headers)).toEqual(comparable(bareAnswer.headers));
      expect(answer.messages).toEqual([]);
    });
  }
});

describe("createPushLane", () => {
  // No grpc-js at all: whatever the client gets, the lane sent.
  it("serves a push session on a plain node:http2 server and frees its stream when the client leaves", async () => {
    const sessions = createMemorySessionStore([
      {
        deviceSessionId: "ds-plain",
        userId: "carol",
        publicKey: vectorDevice.publicKey,
        status: "active",
      },
    ]);
    const metrics = createMetrics();
    const hub = createPushHub({
      queueSize: 16,
      maxStreamsPerSession: 4,
      maxStreams: 100,
      terminalTimeoutMs: 25_000,
      metrics,
      logger: silentLogger,
    });
    const lane = createPushLane(
      {
        authenticate: createSubscribeEventsAuthenticator({
          sessions,
          replay: createMemoryReplayStore(),
          clock: systemClock,
          maxClockSkewMs: 30_000,
        }),
        sessions,
        hub,
        signer: vectorSigner,
        clock: systemClock,
        delivery: { cursor: () => "1764028800000-5" },
        logger: silentLogger,
      },
      {
        logger: silentLogger,
        metrics,
        isShuttingDown: () => false,
        maxReceiveMessageBytes: 4096,
      },
    );
    const server = http2.createServer();
    server.on("stream", (stream, headers) => {
      if (!lane(stream, headers)) stream.respond({ ":status": 404 }, { endStream: true });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    cleanup.defer(
      () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
        }),
    );
    const { port } = server.address() as { port: number };
    const device = { deviceSessionId: "ds-plain", privateKey: vectorDevice.privateKey };
    const raw = rawSubscribe(`127.0.0.1:${port}`, subscribeRequest(device as TestDevice));

    expect(comparable(await raw.headers)).toEqual(GRPC_JS_HEADERS);
    const [bootstrap] = await raw.messages(1);
    expect(bootstrap?.eventId).toBe("1764028800000-5");
    expect(hub.size).toBe(1);

    const event = signEvent(vectorSigner, {
      eventId: "1764028800001-0",
      eventType: "demo.tick",
      requestId: "",
      timestampMs: Date.now(),
      payload: Buffer.from("tick"),
    });
    expect(hub.publish(event, { userId: "carol" })).toBe(1);
    const [, received] = await raw.messages(2);
    expect(SubscribeEventsResponse.encode(received!).finish()).toEqual(
      SubscribeEventsResponse.encode(event).finish(),
    );

    await cleanup.run();
    await vi.waitFor(() => expect(hub.size).toBe(0), { timeout: SAFETY_MS });
    await hub.close();
  });
});

describe("SubscribeEvents with a tracer provider registered", () => {
  const exporter = new InMemorySpanExporter();
  let telemetry: Telemetry | undefined;
  afterAll(() => telemetry?.shutdown());

  it("is served by grpc-js and nice-grpc, with a SERVER span, and answers as the lane does", async () => {
    telemetry = startTelemetry({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
    const device = await storedDevice("dave");
    const subscription = subscribe(gw.grpc, subscribeRequest(device), cleanup);
    const [bootstrap] = await subscription.received(1);
    expect(bootstrap?.eventType).toBe("gateway.server_time");

    const closed = await rawSubscribe(gw.grpc, subscribeRequest(newDevice("dave"))).closed;
    expect(closed.trailers).toBeUndefined();
    expect(closed.headers["content-type"]).toBe("application/grpc+proto");
    expect(statusOf(closed)).toEqual({ code: "16", message: "device session not found" });

    const span = await vi.waitFor(
      () => {
        const found = exporter
          .getFinishedSpans()
          .find(
            (finished) => finished.name === "edgegateway.v1.EdgeGatewayService/SubscribeEvents",
          );
        if (found === undefined) throw new Error("no SubscribeEvents span yet");
        return found;
      },
      { timeout: SAFETY_MS },
    );
    expect(span.kind).toBe(SpanKind.SERVER);
  });
});

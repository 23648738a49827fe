/**
 * The HTTP/2 stream lane in front of grpc-js (runtime/grpc/http2-lane.ts) and
 * ExecuteCommand served on it (runtime/grpc/direct-unary.ts). The first part
 * fails when a grpc-js release no longer lets a lane see streams first; the
 * second sends the same raw requests to the gateway and to a bare grpc-js
 * server, and expects the answers grpc-js gives.
 */
import { randomUUID } from "node:crypto";
import http2, { type IncomingHttpHeaders } from "node:http2";
import { gzipSync } from "node:zlib";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import type { Redis } from "ioredis";
import { createChannel, createClient, createServer } from "nice-grpc";
import { HealthDefinition, HealthServiceImpl } from "nice-grpc-server-health";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ExecuteCommandRequest,
  ExecuteCommandResponse,
} from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { addSessionHook, addStreamLane, streamLanesSupported } from "../runtime/grpc/http2-lane.js";
import { maxReceiveMessageBytes } from "../runtime/grpc/server.js";
import { signExecuteCommandRequest } from "../runtime/kit/device-client.js";
import { putSession, startGateway } from "./support/gateway.js";
import { grpcFrame, grpcRequestHeaders } from "./support/grpc-wire.js";
import { newDeviceKey } from "./support/keys.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";

const PATH = "/edgegateway.v1.EdgeGatewayService/ExecuteCommand";

/** What a raw HTTP/2 gRPC call got back. */
interface Answer {
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders;
  body: Buffer;
}

/** Sends `chunks` as the request body, each in its own write, and collects the answer. */
function call(
  address: string,
  chunks: readonly Buffer[],
  extraHeaders: Record<string, string> = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${address}`);
    session.on("error", reject);
    const stream = session.request(grpcRequestHeaders(PATH, extraHeaders));
    const answer: Answer = { headers: {}, trailers: {}, body: Buffer.alloc(0) };
    const body: Buffer[] = [];
    stream.on("response", (headers) => {
      answer.headers = headers;
    });
    stream.on("trailers", (trailers) => {
      answer.trailers = trailers;
    });
    stream.on("data", (chunk: Buffer) => body.push(chunk));
    stream.on("error", reject);
    stream.on("close", () => {
      answer.body = Buffer.concat(body);
      session.close();
      resolve(answer);
    });
    for (const chunk of chunks) stream.write(chunk);
    stream.end();
  });
}

/** The status of an answer, from its trailers or a trailers-only response. */
function statusOf(answer: Answer): { code: string | undefined; message: string | undefined } {
  const from = answer.trailers["grpc-status"] === undefined ? answer.headers : answer.trailers;
  return {
    code: from["grpc-status"] as string | undefined,
    message:
      from["grpc-message"] === undefined ? undefined : decodeURI(String(from["grpc-message"])),
  };
}

/** The response headers a client can compare: no date. */
function comparable(headers: IncomingHttpHeaders): Record<string, unknown> {
  const { date: _date, ...rest } = headers;
  return rest;
}

describe("addStreamLane", () => {
  it("offers each stream to the lane before grpc-js and leaves the rest to grpc-js", async () => {
    expect(streamLanesSupported()).toBe(true);
    const options = {};
    const seen: string[] = [];
    addStreamLane(options, (stream, headers) => {
      seen.push(String(headers[":path"]));
      if (headers[":path"] !== PATH) return false;
      stream.respond(
        { ":status": 200, "content-type": "application/grpc", "grpc-status": "7" },
        { endStream: true },
      );
      return true;
    });
    const server = createServer(options);
    server.add(HealthDefinition, HealthServiceImpl());
    const port = await server.listen("127.0.0.1:0");
    const channel = createChannel(`127.0.0.1:${port}`);
    try {
      const health = await createClient(HealthDefinition, channel).check({ service: "" });
      expect(health.status).toBe(1); // SERVING
      const answer = await call(`127.0.0.1:${port}`, [grpcFrame(Buffer.from("x"))]);
      expect(statusOf(answer).code).toBe("7");
      expect(seen).toEqual(["/grpc.health.v1.Health/Check", PATH]);
    } finally {
      channel.close();
      await server.shutdown();
    }
  });
});

describe("addSessionHook", () => {
  // The gRPC listener's keepalive wheel sees connections only through this
  // hook; without it the gateway falls back to grpc-js's per-connection timers.
  it("hands each HTTP/2 connection of the grpc-js server to the hook once, and grpc-js still serves it", async () => {
    const options = {};
    const sessions: http2.ServerHttp2Session[] = [];
    expect(addSessionHook(options, (session) => sessions.push(session))).toBe(true);
    const server = createServer(options);
    server.add(HealthDefinition, HealthServiceImpl());
    const port = await server.listen("127.0.0.1:0");
    const channels = [0, 1].map(() =>
      createChannel(`127.0.0.1:${port}`, undefined, { "grpc.use_local_subchannel_pool": 1 }),
    );
    try {
      for (const channel of channels) {
        const health = await createClient(HealthDefinition, channel).check({ service: "" });
        expect(health.status).toBe(1); // SERVING
      }
      expect(sessions).toHaveLength(2);
      expect(new Set(sessions).size).toBe(2);
    } finally {
      for (const channel of channels) channel.close();
      await server.shutdown();
    }
  });
});

describe("ExecuteCommand on the lane answers as grpc-js does", () => {
  const device = newDeviceKey();
  const sessionId = "ds-lane";
  const maxCommandPayloadBytes = 1024;
  let redis: TestRedis;
  let admin: Redis;
  let gateway: Awaited<ReturnType<typeof startGateway>>;
  let bare: Server;
  let bareAddress: string;

  /** A signed, encoded request `demo.echo` answers. */
  function signedRequest(): Uint8Array {
    const request = signExecuteCommandRequest(
      {
        deviceSessionId: sessionId,
        messageType: "demo.echo",
        requestId: randomUUID(),
        timestampMs: Date.now(),
        payload: Buffer.from("hello"),
      },
      device.privateKey,
    );
    return ExecuteCommandRequest.encode(request).finish();
  }

  beforeAll(async () => {
    redis = await startRedis();
    admin = redis.client();
    await putSession(admin, {
      deviceSessionId: sessionId,
      userId: "u-lane",
      publicKeyText: device.publicKeyText,
    });
    gateway = await startGateway(redis, {
      routes: { "demo.echo": async (command) => ({ resultCode: "ok", payload: command.payload }) },
      env: { GATEWAY_MAX_COMMAND_PAYLOAD_BYTES: String(maxCommandPayloadBytes) },
    });
    // grpc-js itself, with the gateway's message limit and an echo at the same path.
    bare = new Server({
      "grpc.max_receive_message_length": maxReceiveMessageBytes(maxCommandPayloadBytes),
    });
    const identity = (bytes: Buffer) => bytes;
    bare.addService(
      {
        ExecuteCommand: {
          path: PATH,
          requestStream: false,
          responseStream: false,
          requestSerialize: identity,
          requestDeserialize: identity,
          responseSerialize: identity,
          responseDeserialize: identity,
        },
      },
      {
        ExecuteCommand: (unary: { request: Buffer }, done: (e: null, v: Buffer) => void) =>
          done(null, unary.request),
      },
    );
    const port = await new Promise<number>((resolve, reject) =>
      bare.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
    bareAddress = `127.0.0.1:${port}`;
  });

  afterAll(async () => {
    bare?.forceShutdown();
    await gateway?.stop();
    admin?.disconnect();
    await redis?.stop();
  });

  it("answers a request in one-byte writes with grpc-js's headers, the signed response and status 0", async () => {
    const bytes = grpcFrame(signedRequest());
    const chunks = [...bytes].map((byte) => Buffer.from([byte]));
    const [answer, bareAnswer] = await Promise.all([
      call(gateway.addresses.grpc, chunks),
      call(bareAddress, chunks),
    ]);
    expect(comparable(answer.headers)).toEqual(comparable(bareAnswer.headers));
    expect(answer.trailers).toEqual(bareAnswer.trailers);
    expect(statusOf(answer)).toEqual({ code: "0", message: "OK" });
    const response = ExecuteCommandResponse.decode(answer.body.subarray(5));
    expect(answer.body.readUInt32BE(1)).toBe(answer.body.length - 5);
    expect(response.resultCode).toBe("ok");
    expect(Buffer.from(response.payload).toString()).toBe("hello");
  });

  const cases: ReadonlyArray<[string, () => Buffer[], Record<string, string>?]> = [
    ["two request messages", () => [grpcFrame(signedRequest()), grpcFrame(signedRequest())]],
    ["no request message", () => []],
    [
      "a message over the limit",
      () => [grpcFrame(Buffer.alloc(maxReceiveMessageBytes(maxCommandPayloadBytes) + 1))],
    ],
    ["a length prefix over the limit alone", () => [Buffer.from([0, 0x7f, 0xff, 0xff, 0xff])]],
    ["a malformed grpc-timeout", () => [grpcFrame(signedRequest())], { "grpc-timeout": "soon" }],
    [
      "an unsupported grpc-encoding",
      () => [grpcFrame(signedRequest(), true)],
      { "grpc-encoding": "br" },
    ],
  ];
  for (const [name, chunks, headers] of cases) {
    it(`answers ${name} with grpc-js's status and message`, async () => {
      const body = chunks();
      const [answer, bareAnswer] = await Promise.all([
        call(gateway.addresses.grpc, body, headers),
        call(bareAddress, body, headers),
      ]);
      const expected = statusOf(bareAnswer);
      expect(expected.code).not.toBe("0");
      expect(statusOf(answer)).toEqual(expected);
      expect(answer.body.length).toBe(0);
    });
  }

  it("leaves a gzip request to grpc-js, which decompresses it and the gateway serves it", async () => {
    const answer = await call(
      gateway.addresses.grpc,
      [grpcFrame(gzipSync(signedRequest()), true)],
      {
        "grpc-encoding": "gzip",
      },
    );
    expect(statusOf(answer)).toEqual({ code: "0", message: "OK" });
    expect(ExecuteCommandResponse.decode(answer.body.subarray(5)).resultCode).toBe("ok");
  });

  it("refuses a content type that is not gRPC as grpc-js does, with HTTP 415", async () => {
    const body = [grpcFrame(signedRequest())];
    const [answer, bareAnswer] = await Promise.all([
      call(gateway.addresses.grpc, body, { "content-type": "text/plain" }),
      call(bareAddress, body, { "content-type": "text/plain" }),
    ]);
    expect(bareAnswer.headers[":status"]).toBe(415);
    expect(answer.headers[":status"]).toBe(415);
  });

  it("answers DEADLINE_EXCEEDED when grpc-timeout passes before the request ends", async () => {
    const answer = await new Promise<Answer>((resolve, reject) => {
      const session = http2.connect(`http://${gateway.addresses.grpc}`);
      const stream = session.request(grpcRequestHeaders(PATH, { "grpc-timeout": "50m" }));
      session.on("error", reject);
      const got: Answer = { headers: {}, trailers: {}, body: Buffer.alloc(0) };
      stream.on("response", (headers) => {
        got.headers = headers;
        // The answer came: the client ends its side, as gRPC clients do.
        stream.close();
      });
      stream.on("error", reject);
      stream.on("close", () => {
        session.close();
        resolve(got);
      });
      // Half a message, never finished: only the deadline can end the call.
      stream.write(grpcFrame(signedRequest()).subarray(0, 10));
    });
    expect(statusOf(answer)).toEqual({ code: "4", message: "Deadline exceeded" });
  });
});

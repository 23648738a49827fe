/**
 * ExecuteCommand over Connect and gRPC-Web on the public listener (contract
 * §14): a real redis-server, the gateway host on real sockets, and the
 * connect-web transports as the client, in both codecs. Every status the
 * unary path answers, with the gRPC listener's messages, and CORS as a
 * browser sees it.
 */
import { type KeyObject, randomUUID } from "node:crypto";
import { create, type MessageInitShape, toBinary, toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Routes } from "../handlers/ports.js";
import {
  EdgeGatewayService,
  ExecuteCommandRequestSchema,
  type ExecuteCommandResponse,
} from "../proto/gen-es/edgegateway/v1/edge_gateway_pb.js";
import {
  importGatewayKey,
  signExecuteCommandRequest,
  verifyExecuteCommandResponse,
} from "../runtime/kit/device-client.js";
import { putSession, startGateway } from "./support/gateway.js";
import { newDeviceKey, vectors } from "./support/keys.js";
import { metricValue } from "./support/push.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";

const SKEW_MS = 30_000;
const ALLOWED_ORIGIN = "https://app.example.com";
const EXECUTE_COMMAND_PATH = "/edgegateway.v1.EdgeGatewayService/ExecuteCommand";

let redis: TestRedis;
let admin: Redis;
let gateway: Awaited<ReturnType<typeof startGateway>>;
let baseUrl: string;
let now = Date.now();

const device = newDeviceKey();
const userId = "user-1";
const sessionId = "ds-connect";

/** What the failing route throws: a secret of the gateway's that no client may see. */
const THROWN_TEXT = "database password is hunter2";

const routes: Routes = {
  "demo.echo": async (command) => ({ resultCode: "ok", payload: command.payload }),
  "demo.fail": async () => {
    throw new Error(THROWN_TEXT);
  },
  "demo.slow": async (_command, ctx) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => resolve({ resultCode: "late" }), 10_000);
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(ctx.signal.reason);
      });
    }),
};

type RequestInit = MessageInitShape<typeof ExecuteCommandRequestSchema>;

/** A request signed by `key` (the session's device key by default), with `overrides` applied after signing. */
function request(
  fields: {
    deviceSessionId?: string;
    messageType?: string;
    requestId?: string;
    timestampMs?: number;
    payload?: Uint8Array;
    key?: KeyObject;
  } = {},
  overrides: Partial<RequestInit> = {},
): RequestInit {
  const signed = signExecuteCommandRequest(
    {
      deviceSessionId: fields.deviceSessionId ?? sessionId,
      messageType: fields.messageType ?? "demo.echo",
      requestId: fields.requestId ?? randomUUID(),
      timestampMs: fields.timestampMs ?? now,
      payload: fields.payload ?? Buffer.from("hello"),
    },
    fields.key ?? device.privateKey,
  );
  return { ...signed, timestampMs: BigInt(signed.timestampMs), ...overrides };
}

/** The response in the shape the kit verifies (numbers and Buffers, as ts-proto decodes them). */
function asKitResponse(response: ExecuteCommandResponse) {
  return {
    ...response,
    timestampMs: Number(response.timestampMs),
    payload: Buffer.from(response.payload),
    signature: Buffer.from(response.signature),
  };
}

async function expectStatus(
  call: Promise<unknown>,
  code: Code,
  message?: string,
): Promise<ConnectError> {
  const error = await call.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error, "the call should fail").toBeInstanceOf(ConnectError);
  expect(Code[(error as ConnectError).code]).toBe(Code[code]);
  if (message !== undefined) expect((error as ConnectError).rawMessage).toBe(message);
  return error as ConnectError;
}

/** How many times the gateway logged the failing route's error, with its text, so far. */
const routeFailuresLogged = () =>
  gateway.logger.lines.filter((line) => line === `error route failed ${THROWN_TEXT}`).length;

const transports: [string, () => Transport][] = [
  ["Connect, binary", () => createConnectTransport({ baseUrl, useBinaryFormat: true })],
  ["Connect, JSON", () => createConnectTransport({ baseUrl, useBinaryFormat: false })],
  ["gRPC-Web, binary", () => createGrpcWebTransport({ baseUrl, useBinaryFormat: true })],
  ["gRPC-Web, JSON", () => createGrpcWebTransport({ baseUrl, useBinaryFormat: false })],
];

beforeAll(async () => {
  redis = await startRedis();
  admin = redis.client();
  await putSession(admin, {
    deviceSessionId: sessionId,
    userId,
    publicKeyText: device.publicKeyText,
  });
  gateway = await startGateway(redis, {
    routes,
    now: () => now,
    env: { GATEWAY_CORS_ALLOWED_ORIGINS: ALLOWED_ORIGIN },
  });
  baseUrl = `http://${gateway.addresses.publicHttp}`;
});

afterAll(async () => {
  await gateway?.stop();
  admin?.disconnect();
  await redis?.stop();
});

describe.each(transports)("ExecuteCommand over %s", (_name, transport) => {
  const client = () => createClient(EdgeGatewayService, transport());

  it("routes a signed command and signs the response with the gateway key", async () => {
    now = Date.now();
    const sent = request({ payload: Buffer.from("ping") });
    const response = await client().executeCommand(sent);
    expect(response.resultCode).toBe("ok");
    expect(Buffer.from(response.payload).toString()).toBe("ping");
    expect(response.requestId).toBe(sent.requestId);
    expect(response.protocolVersion).toBe(1);
    expect(response.keyId).toBe(vectors.gateway_key.key_id);
    expect(response.timestampMs).toBe(BigInt(now));
    await verifyExecuteCommandResponse(
      asKitResponse(response),
      sessionId,
      importGatewayKey(vectors.gateway_key.public_key_base64url),
    );
  });

  it("answers INVALID_ARGUMENT for each shape rule, with the gRPC listener's messages", async () => {
    await expectStatus(
      client().executeCommand(request({}, { protocolVersion: 2 })),
      Code.InvalidArgument,
      "protocol_version must be 1",
    );
    await expectStatus(
      client().executeCommand(request({}, { deviceSessionId: "bad/id" })),
      Code.InvalidArgument,
      "device_session_id must be 1-128 characters of [A-Za-z0-9._:-]",
    );
    await expectStatus(
      client().executeCommand(request({}, { messageType: "a b" })),
      Code.InvalidArgument,
      "message_type must be 1-128 characters of [A-Za-z0-9._:/-]",
    );
    await expectStatus(
      client().executeCommand(request({}, { signature: new Uint8Array(63) })),
      Code.InvalidArgument,
      "signature must be 64 bytes",
    );
    await expectStatus(
      client().executeCommand(request({ payload: Buffer.alloc(262_145) })),
      Code.InvalidArgument,
      "payload exceeds 262144 bytes",
    );
  });

  it("refuses a message over the payload limit + 4 KiB with RESOURCE_EXHAUSTED", async () => {
    await expectStatus(
      client().executeCommand(request({ payload: Buffer.alloc(262_144 * 2 + 8192) })),
      Code.ResourceExhausted,
    );
  });

  it("answers UNAUTHENTICATED for a stale timestamp, an unknown session and a bad signature", async () => {
    now = Date.now();
    await expectStatus(
      client().executeCommand(request({ timestampMs: now - SKEW_MS - 1 })),
      Code.Unauthenticated,
      "request timestamp outside allowed clock skew",
    );
    await expectStatus(
      client().executeCommand(request({ deviceSessionId: "ds-nobody" })),
      Code.Unauthenticated,
      "device session not found",
    );
    await expectStatus(
      client().executeCommand(request({ key: newDeviceKey().privateKey })),
      Code.Unauthenticated,
      "invalid request signature",
    );
  });

  it("answers FAILED_PRECONDITION for a revoked session", async () => {
    const revoked = newDeviceKey();
    const deviceSessionId = `ds-revoked-${randomUUID()}`;
    await putSession(admin, {
      deviceSessionId,
      userId,
      publicKeyText: revoked.publicKeyText,
      status: "revoked",
    });
    await expectStatus(
      client().executeCommand(request({ deviceSessionId, key: revoked.privateKey })),
      Code.FailedPrecondition,
      "device session is revoked",
    );
  });

  it("answers ALREADY_EXISTS for a reused request_id", async () => {
    now = Date.now();
    const requestId = randomUUID();
    await client().executeCommand(request({ requestId }));
    await expectStatus(
      client().executeCommand(request({ requestId })),
      Code.AlreadyExists,
      "request_id already used",
    );
  });

  it("answers UNIMPLEMENTED for a message type without a route", async () => {
    await expectStatus(
      client().executeCommand(request({ messageType: "billing/charge" })),
      Code.Unimplemented,
      "no route for message_type billing/charge",
    );
  });

  // A route's own failure stays in the gateway's log: the client learns only
  // that the call failed, as on the gRPC listener.
  it("answers INTERNAL with the generic message when a route throws, never the thrown text", async () => {
    now = Date.now();
    const logged = routeFailuresLogged();
    const error = await expectStatus(
      client().executeCommand(request({ messageType: "demo.fail" })),
      Code.Internal,
      "internal error",
    );
    expect(error.message).not.toContain("hunter2");
    expect(error.details).toEqual([]);
    for (const [name, value] of error.metadata) {
      expect(`${name}: ${value}`).not.toContain("hunter2");
    }
    expect(routeFailuresLogged()).toBe(logged + 1);
  });

  it("aborts the route when the call's timeout passes", async () => {
    now = Date.now();
    await expectStatus(
      client().executeCommand(request({ messageType: "demo.slow" }), { timeoutMs: 300 }),
      Code.DeadlineExceeded,
    );
  });

  it("serves SubscribeEvents on the same listener: an unknown session answers UNAUTHENTICATED", async () => {
    now = Date.now();
    const stream = client().subscribeEvents({
      protocolVersion: 1,
      deviceSessionId: "ds-nobody",
      requestId: randomUUID(),
      timestampMs: BigInt(now),
      signature: new Uint8Array(64),
    });
    await expectStatus(
      (async () => {
        for await (const _event of stream) {
          // No event is expected.
        }
      })(),
      Code.Unauthenticated,
      "device session not found",
    );
  });
});

describe("ExecuteCommand over Connect: raw requests", () => {
  // A body that is not a request message answers as on the gRPC listener,
  // not with the transport's INTERNAL.
  it("answers INVALID_ARGUMENT for a binary body that does not decode", async () => {
    const response = await fetch(`${baseUrl}${EXECUTE_COMMAND_PATH}`, {
      method: "POST",
      headers: { "content-type": "application/proto", "connect-protocol-version": "1" },
      // Field 2 (a string) says 5 bytes follow; only one does.
      body: new Uint8Array([0x12, 0x05, 0x61]),
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toEqual({
      code: "invalid_argument",
      message: "request message could not be decoded",
    });
  });

  it("answers INVALID_ARGUMENT for a JSON body that does not decode", async () => {
    const response = await fetch(`${baseUrl}${EXECUTE_COMMAND_PATH}`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-protocol-version": "1" },
      body: '{"protocolVersion": "not a number"',
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toEqual({
      code: "invalid_argument",
      message: "request message could not be decoded",
    });
  });

  // What reaches the wire for a route that throws: the generic status and
  // message, and nothing of the thrown text in any byte or header.
  it("answers a throwing route with the internal envelope and nothing of the thrown text", async () => {
    now = Date.now();
    const logged = routeFailuresLogged();
    const response = await fetch(`${baseUrl}${EXECUTE_COMMAND_PATH}`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-protocol-version": "1" },
      body: toJsonString(
        ExecuteCommandRequestSchema,
        create(ExecuteCommandRequestSchema, request({ messageType: "demo.fail" })),
      ),
    });
    const body = await response.text();
    expect(response.status).toBe(500);
    expect(JSON.parse(body)).toEqual({ code: "internal", message: "internal error" });
    expect(body).not.toContain("hunter2");
    for (const [name, value] of response.headers) {
      expect(`${name}: ${value}`).not.toContain("hunter2");
    }
    expect(routeFailuresLogged()).toBe(logged + 1);
  });

  it("answers a throwing route over gRPC-Web with grpc-status 13 and nothing of the thrown text", async () => {
    now = Date.now();
    const logged = routeFailuresLogged();
    const message = toBinary(
      ExecuteCommandRequestSchema,
      create(ExecuteCommandRequestSchema, request({ messageType: "demo.fail" })),
    );
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(message.byteLength, 1);
    const response = await fetch(`${baseUrl}${EXECUTE_COMMAND_PATH}`, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
      body: Buffer.concat([prefix, message]),
    });
    expect(response.status).toBe(200);
    const body = Buffer.from(await response.arrayBuffer());
    // The status comes in the headers (trailers-only) or in a trailer frame (flag 0x80).
    const trailers = new Map(response.headers);
    for (let offset = 0; offset + 5 <= body.byteLength; ) {
      const length = body.readUInt32BE(offset + 1);
      expect(body[offset]! & 0x80, "only a trailer frame answers a failed call").toBe(0x80);
      for (const line of body
        .subarray(offset + 5, offset + 5 + length)
        .toString()
        .split("\r\n")) {
        const colon = line.indexOf(":");
        if (colon > 0) trailers.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
      }
      offset += 5 + length;
    }
    expect(trailers.get("grpc-status")).toBe("13");
    expect(decodeURIComponent(trailers.get("grpc-message") ?? "")).toBe("internal error");
    expect(body.toString("latin1")).not.toContain("hunter2");
    for (const [name, value] of response.headers) {
      expect(`${name}: ${value}`).not.toContain("hunter2");
    }
    expect(routeFailuresLogged()).toBe(logged + 1);
  });

  it("refuses an oversized body by its Content-Length before reading it", async () => {
    const response = await fetch(`${baseUrl}${EXECUTE_COMMAND_PATH}`, {
      method: "POST",
      headers: { "content-type": "application/proto", "connect-protocol-version": "1" },
      body: new Uint8Array(262_144 + 4096 + 1),
    });
    expect(response.status).toBe(429);
    expect(await response.json()).toEqual({
      code: "resource_exhausted",
      message: "request message exceeds 266240 bytes",
    });
  });

  it("answers the protocol's own 415 for a content type no protocol takes", async () => {
    const response = await fetch(`${baseUrl}${EXECUTE_COMMAND_PATH}`, {
      method: "POST",
      headers: { "content-type": "text/plain" },
      body: "hello",
    });
    expect(response.status).toBe(415);
  });

  it("keeps the §8 routes and their envelope beside the Connect routes", async () => {
    const health = await fetch(`${baseUrl}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: "ok" });
    const unknown = await fetch(`${baseUrl}/edgegateway.v1.EdgeGatewayService/Nope`, {
      method: "POST",
    });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({
      error: { code: "not_found", message: expect.any(String) },
    });
  });

  it("counts the Connect calls' failed authentication steps in the admin /metrics", async () => {
    const text = await (await fetch(`http://${gateway.addresses.adminHttp}/metrics`)).text();
    // One bad signature per transport.
    expect(metricValue(text, 'gateway_auth_failures_total{reason="bad_signature"}')).toBe(4);
  });
});

describe("CORS on the public listener", () => {
  const preflight = (origin: string, path = EXECUTE_COMMAND_PATH) =>
    fetch(`${baseUrl}${path}`, {
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,connect-protocol-version",
      },
    });

  const corsHeaders = (response: Response) =>
    [...response.headers.keys()].filter((name) => name.startsWith("access-control-"));

  it("answers a preflight from an allowed origin with the Connect and gRPC-Web headers", async () => {
    const response = await preflight(ALLOWED_ORIGIN);
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-origin")).toBe(ALLOWED_ORIGIN);
    expect(response.headers.get("access-control-allow-methods")).toContain("POST");
    const allowHeaders = (response.headers.get("access-control-allow-headers") ?? "").split(", ");
    for (const header of [
      "content-type",
      "connect-protocol-version",
      "connect-timeout-ms",
      "grpc-timeout",
      "x-grpc-web",
      "x-user-agent",
    ]) {
      expect(allowHeaders).toContain(header);
    }
  });

  it("answers a preflight for a §8 route from an allowed origin", async () => {
    const response = await preflight(ALLOWED_ORIGIN, "/api/v1/public/auth/send-email-code");
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-origin")).toBe(ALLOWED_ORIGIN);
  });

  it("gives a preflight from another origin no CORS headers", async () => {
    const response = await preflight("https://evil.example.com");
    expect(corsHeaders(response)).toEqual([]);
  });

  it("lets an allowed origin read a call's answer and its gRPC-Web status headers", async () => {
    now = Date.now();
    const response = await fetch(`${baseUrl}${EXECUTE_COMMAND_PATH}`, {
      method: "POST",
      headers: {
        origin: ALLOWED_ORIGIN,
        "content-type": "application/proto",
        "connect-protocol-version": "1",
      },
      body: new Uint8Array([0x0a, 0xff]),
    });
    expect(response.headers.get("access-control-allow-origin")).toBe(ALLOWED_ORIGIN);
    const exposed = (response.headers.get("access-control-expose-headers") ?? "").split(", ");
    for (const header of ["grpc-status", "grpc-message", "grpc-status-details-bin"]) {
      expect(exposed).toContain(header);
    }
    expect(response.headers.get("vary")).toContain("Origin");
  });

  it("adds the same headers to the §8 routes for an allowed origin", async () => {
    const response = await fetch(`${baseUrl}/healthz`, { headers: { origin: ALLOWED_ORIGIN } });
    expect(response.status).toBe(200);
    expect(response.headers.get("access-control-allow-origin")).toBe(ALLOWED_ORIGIN);
  });

  it("gives another origin's requests no CORS headers", async () => {
    for (const path of ["/healthz", "/readyz"]) {
      const response = await fetch(`${baseUrl}${path}`, {
        headers: { origin: "https://evil.example.com" },
      });
      expect(response.status).toBe(200);
      expect(corsHeaders(response)).toEqual([]);
    }
  });
});

describe("ExecuteCommand over Connect and gRPC-Web with Redis down", () => {
  // Fail closed as on the gRPC listener: UNAVAILABLE within the command
  // timeout, then served again once Redis is back.
  it("answers UNAVAILABLE in every protocol and codec, then serves again after Redis restarts", async () => {
    now = Date.now();
    const fresh = newDeviceKey();
    await putSession(admin, {
      deviceSessionId: "ds-connect-outage",
      userId,
      publicKeyText: fresh.publicKeyText,
    });
    const first = createClient(EdgeGatewayService, transports[0]![1]());
    // Warm the session cache, so the replay reservation is what meets the outage.
    await first.executeCommand(
      request({ deviceSessionId: "ds-connect-outage", key: fresh.privateKey }),
    );
    admin.disconnect();
    await redis.kill();

    for (const [, transport] of transports) {
      const client = createClient(EdgeGatewayService, transport());
      await expectStatus(
        client.executeCommand(
          request({ deviceSessionId: "ds-connect-outage", key: fresh.privateKey }),
          { timeoutMs: 3000 },
        ),
        Code.Unavailable,
        "replay store unavailable",
      );
      await expectStatus(
        client.executeCommand(request({ deviceSessionId: "ds-connect-uncached" }), {
          timeoutMs: 3000,
        }),
        Code.Unavailable,
        "session store unavailable",
      );
    }

    await redis.restart();
    admin = redis.client();
    await putSession(admin, {
      deviceSessionId: sessionId,
      userId,
      publicKeyText: device.publicKeyText,
    });
    await expect
      .poll(
        async () => {
          now = Date.now();
          return first.executeCommand(request()).then(
            (response) => response.resultCode,
            (error: ConnectError) => Code[error.code],
          );
        },
        { timeout: 15_000, interval: 100 },
      )
      .toBe("ok");
  });
});

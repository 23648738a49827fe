/**
 * The public HTTP listener (contract §8) served by `node:http` on a loopback
 * port and called with real `fetch`: every route and status, each step of the
 * check order, the upstream failures as a device sees them, and the request
 * counter of §9.
 */
import { generateKeyPairSync } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it, vi } from "vitest";
import { GatewayError } from "../handlers/errors.js";
import { CONFIRM_EMAIL_CODE_PATH, SEND_EMAIL_CODE_PATH } from "../handlers/public-auth.js";
import { createHttpAuthUpstream } from "../runtime/http/auth-upstream.js";
import {
  createPublicHttpApp,
  MAX_PUBLIC_BODY_BYTES,
  type PublicHttpOptions,
  toNodeListener,
} from "../runtime/http/public.js";
import { createMetrics } from "../runtime/telemetry/metrics.js";
import { captureLogger } from "./support/logger.js";
import { createMemoryAuthUpstream } from "./support/ports.js";

const servers: Server[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

async function listen(server: Server): Promise<string> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Serves the public app with the given options (defaults: a fake upstream, ready). */
async function startGateway(options: Partial<PublicHttpOptions> = {}) {
  const fake = createMemoryAuthUpstream();
  const { logger, errors } = captureLogger();
  const metrics = createMetrics();
  const app = createPublicHttpApp({
    authUpstream: "authUpstream" in options ? options.authUpstream : fake.upstream,
    isReady: options.isReady ?? (() => true),
    logger: options.logger ?? logger,
    metrics,
    ...(options.redisMode === undefined ? {} : { redisMode: options.redisMode }),
  });
  const baseUrl = await listen(createServer(toNodeListener(app)));
  /** `gateway_http_requests_total` for one route and status. */
  async function counted(route: string, status: number): Promise<number> {
    const { values } = await metrics.httpRequests.get();
    return (
      values.find((value) => value.labels.route === route && value.labels.status === String(status))
        ?.value ?? 0
    );
  }
  return { baseUrl, calls: fake.calls, errors, counted };
}

function postJson(url: string, body: unknown, contentType = "application/json") {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": contentType },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

async function expectEnvelope(response: Response, status: number, code: string) {
  expect(response.status).toBe(status);
  expect(response.headers.get("content-type")).toBe("application/json; charset=utf-8");
  const body = (await response.json()) as { error: { code: string; message: string } };
  expect(body).toEqual({ error: { code, message: expect.any(String) } });
  expect(body.error.message.length).toBeGreaterThan(0);
  return body.error.message;
}

const devicePublicKey = generateKeyPairSync("ed25519").publicKey.export({ format: "jwk" }).x!;
const confirmBody = {
  challenge_id: "ch_01J9Z",
  code: "123456",
  client_public_key: devicePublicKey,
};
/** A body that is valid JSON and over the limit (so only its size can fail it). */
const oversizedJson = JSON.stringify({ email: "ada@example.com", pad: "x".repeat(20 * 1024) });

describe("public HTTP probes", () => {
  it("answers GET /healthz with 200 ok", async () => {
    const { baseUrl } = await startGateway({ isReady: () => false });
    const response = await fetch(`${baseUrl}/healthz`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("application/json; charset=utf-8");
    expect(response.headers.get("cache-control")).toBe("no-store");
    expect(await response.json()).toEqual({ status: "ok" });
  });

  it("answers HEAD on the probes without a body", async () => {
    const { baseUrl } = await startGateway();
    const response = await fetch(`${baseUrl}/healthz`, { method: "HEAD" });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe("");
  });

  it("answers /readyz 503 not_ready until ready, 200 ready while ready, and 503 again", async () => {
    let ready = false;
    const { baseUrl } = await startGateway({ isReady: () => ready });
    const before = await fetch(`${baseUrl}/readyz`);
    expect([before.status, await before.json()]).toEqual([503, { status: "not_ready" }]);
    ready = true;
    const during = await fetch(`${baseUrl}/readyz`);
    expect([during.status, await during.json()]).toEqual([200, { status: "ready" }]);
    ready = false;
    const after = await fetch(`${baseUrl}/readyz`);
    expect([after.status, await after.json()]).toEqual([503, { status: "not_ready" }]);
  });

  it("answers §8's /readyz body exactly in single mode", async () => {
    const { baseUrl } = await startGateway({ isReady: () => true, redisMode: "single" });
    const ready = await fetch(`${baseUrl}/readyz`);
    expect([ready.status, await ready.json()]).toEqual([200, { status: "ready" }]);
  });

  it("names cluster mode in /readyz, with the same statuses", async () => {
    let ready = false;
    const { baseUrl } = await startGateway({ isReady: () => ready, redisMode: "cluster" });
    const before = await fetch(`${baseUrl}/readyz`);
    expect([before.status, await before.json()]).toEqual([
      503,
      { status: "not_ready", redis_mode: "cluster" },
    ]);
    ready = true;
    const during = await fetch(`${baseUrl}/readyz`);
    expect([during.status, await during.json()]).toEqual([
      200,
      { status: "ready", redis_mode: "cluster" },
    ]);
  });

  it("ignores the query string", async () => {
    const { baseUrl } = await startGateway();
    expect((await fetch(`${baseUrl}/healthz?probe=1`)).status).toBe(200);
  });
});

describe("public HTTP auth routes", () => {
  it("forwards send-email-code and answers 200 with the challenge id", async () => {
    const { baseUrl, calls } = await startGateway();
    const response = await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, {
      email: "ada@example.com",
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("application/json; charset=utf-8");
    expect(response.headers.get("cache-control")).toBe("no-store");
    expect(await response.json()).toEqual({ challenge_id: "ch_01J9Z" });
    expect(calls.map((call) => call.body)).toEqual([{ email: "ada@example.com" }]);
  });

  it("forwards confirm-email-code and answers 200 with the new session", async () => {
    const { baseUrl, calls } = await startGateway();
    const response = await postJson(`${baseUrl}${CONFIRM_EMAIL_CODE_PATH}`, confirmBody);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ device_session_id: "ds-1", user_id: "user-1" });
    expect(calls.map((call) => call.body)).toEqual([confirmBody]);
  });

  it.each([
    "application/json; charset=utf-8",
    "Application/JSON",
    "application/json;charset=UTF-8",
  ])("accepts the content type %j", async (contentType) => {
    const { baseUrl } = await startGateway();
    const response = await postJson(
      `${baseUrl}${SEND_EMAIL_CODE_PATH}`,
      { email: "ada@example.com" },
      contentType,
    );
    expect(response.status).toBe(200);
  });

  it("accepts a body of exactly 16 KiB", async () => {
    const { baseUrl } = await startGateway();
    const json = JSON.stringify({ email: "ada@example.com" });
    const body = json + " ".repeat(MAX_PUBLIC_BODY_BYTES - json.length);
    expect(Buffer.byteLength(body)).toBe(16384);
    const response = await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, body);
    expect(response.status).toBe(200);
  });

  it("passes the client's disconnect on to the upstream call", async () => {
    let upstreamSignal: AbortSignal | undefined;
    const { upstream } = createMemoryAuthUpstream({
      sendEmailCode: (_body, ctx) => {
        upstreamSignal = ctx.signal;
        return new Promise(() => {});
      },
    });
    const { baseUrl } = await startGateway({ authUpstream: upstream });
    const client = new AbortController();
    const pending = fetch(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "ada@example.com" }),
      signal: client.signal,
    }).catch(() => undefined);
    await vi.waitFor(() => expect(upstreamSignal).toBeDefined());
    expect(upstreamSignal?.aborted).toBe(false);
    client.abort();
    await pending;
    await vi.waitFor(() => expect(upstreamSignal?.aborted).toBe(true));
  });
});

describe("public HTTP check order (§8)", () => {
  it("answers an unknown path 404 not_found, whatever the method", async () => {
    const { baseUrl } = await startGateway();
    await expectEnvelope(await fetch(`${baseUrl}/`), 404, "not_found");
    await expectEnvelope(await fetch(`${baseUrl}/metrics`), 404, "not_found");
    await expectEnvelope(
      await postJson(`${baseUrl}/api/v1/public/auth/send-sms-code`, { phone: "1" }),
      404,
      "not_found",
    );
    await expectEnvelope(await fetch(`${baseUrl}/HEALTHZ`), 404, "not_found");
    // A malformed escape matches no route rather than failing differently.
    await expectEnvelope(await fetch(`${baseUrl}/healthz%`), 404, "not_found");
  });

  it("answers a wrong method on a probe 405 with Allow", async () => {
    const { baseUrl } = await startGateway();
    const response = await fetch(`${baseUrl}/healthz`, { method: "POST" });
    await expectEnvelope(response, 405, "method_not_allowed");
    expect(response.headers.get("allow")).toBe("GET, HEAD");
  });

  it("answers a wrong method on an auth route 405 with Allow", async () => {
    const { baseUrl } = await startGateway();
    for (const method of ["GET", "PUT", "DELETE", "OPTIONS"]) {
      const response = await fetch(`${baseUrl}${CONFIRM_EMAIL_CODE_PATH}`, { method });
      await expectEnvelope(response, 405, "method_not_allowed");
      expect(response.headers.get("allow")).toBe("POST");
    }
  });

  // 405 comes before the adapter check: the route exists whether or not it can be served.
  it("answers a wrong method 405, not 503, when there is no auth upstream", async () => {
    const { baseUrl } = await startGateway({ authUpstream: undefined });
    const response = await fetch(`${baseUrl}${SEND_EMAIL_CODE_PATH}`);
    await expectEnvelope(response, 405, "method_not_allowed");
    expect(response.headers.get("allow")).toBe("POST");
  });

  it("answers the auth routes 503 service_unavailable without an auth upstream", async () => {
    const { baseUrl } = await startGateway({ authUpstream: undefined });
    await expectEnvelope(
      await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, { email: "ada@example.com" }),
      503,
      "service_unavailable",
    );
    await expectEnvelope(
      await postJson(`${baseUrl}${CONFIRM_EMAIL_CODE_PATH}`, confirmBody),
      503,
      "service_unavailable",
    );
  });

  it("answers 503, not 415 or 413, without an auth upstream", async () => {
    const { baseUrl } = await startGateway({ authUpstream: undefined });
    await expectEnvelope(
      await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, "x".repeat(20 * 1024), "text/plain"),
      503,
      "service_unavailable",
    );
  });

  it.each([
    ["text/plain", "text/plain"],
    ["form-encoded", "application/x-www-form-urlencoded"],
    ["a JSON-like subtype", "application/jsonx"],
    ["a JSON suffix type", "application/problem+json"],
  ])("answers a %s body 415 unsupported_media_type", async (_name, contentType) => {
    const { baseUrl, calls } = await startGateway();
    await expectEnvelope(
      await postJson(
        `${baseUrl}${SEND_EMAIL_CODE_PATH}`,
        { email: "ada@example.com" },
        contentType,
      ),
      415,
      "unsupported_media_type",
    );
    expect(calls).toEqual([]);
  });

  it("answers a body without Content-Type 415", async () => {
    const { baseUrl } = await startGateway();
    const response = await fetch(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, {
      method: "POST",
      body: new Blob([JSON.stringify({ email: "ada@example.com" })]),
    });
    await expectEnvelope(response, 415, "unsupported_media_type");
  });

  it("answers a 20 KiB body of the wrong type 415, not 413", async () => {
    const { baseUrl } = await startGateway();
    await expectEnvelope(
      await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, oversizedJson, "text/plain"),
      415,
      "unsupported_media_type",
    );
  });

  it("answers a JSON body over 16 KiB 413 payload_too_large", async () => {
    const { baseUrl, calls } = await startGateway();
    const response = await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, oversizedJson);
    await expectEnvelope(response, 413, "payload_too_large");
    expect(calls).toEqual([]);
  });

  it("answers 16 KiB + 1 byte 413", async () => {
    const { baseUrl } = await startGateway();
    const json = JSON.stringify({ email: "ada@example.com" });
    const body = json + " ".repeat(MAX_PUBLIC_BODY_BYTES + 1 - json.length);
    await expectEnvelope(
      await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, body),
      413,
      "payload_too_large",
    );
  });

  it("answers an oversized body that is not JSON 413, not 400", async () => {
    const { baseUrl } = await startGateway();
    await expectEnvelope(
      await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, "{".repeat(20 * 1024)),
      413,
      "payload_too_large",
    );
  });

  // Chunked: no Content-Length to trust, so the bytes are counted as they arrive.
  it("counts a streamed body without Content-Length and answers 413", async () => {
    const { baseUrl, calls } = await startGateway();
    const chunk = new TextEncoder().encode(" ".repeat(4096));
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        // 1 MiB in all: far over the limit, and more than the gateway will read.
        if (sent >= 256) return controller.close();
        sent += 1;
        controller.enqueue(chunk);
      },
    });
    const response = await fetch(`${baseUrl}${CONFIRM_EMAIL_CODE_PATH}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
      duplex: "half",
    } as RequestInit);
    await expectEnvelope(response, 413, "payload_too_large");
    expect(response.headers.get("connection")).toBe("close");
    expect(calls).toEqual([]);
  });

  it.each([
    ["not JSON", "{email:"],
    ["empty", ""],
    ["JSON that is not an object", "[]"],
    ["not UTF-8", Buffer.from([0x7b, 0xff, 0x7d])],
  ])("answers a body that is %s 400 invalid_request", async (_name, body) => {
    const { baseUrl, calls } = await startGateway();
    const response = await fetch(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    await expectEnvelope(response, 400, "invalid_request");
    expect(calls).toEqual([]);
  });

  it("answers a body failing validation 400 invalid_request with the rule broken", async () => {
    const { baseUrl } = await startGateway();
    const message = await expectEnvelope(
      await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, { email: "not-an-address" }),
      400,
      "invalid_request",
    );
    expect(message).toBe("email must be an email address of at most 254 characters");
  });

  it("answers a low-order client_public_key 400 invalid_request", async () => {
    const { baseUrl, calls } = await startGateway();
    const lowOrder = Buffer.from(
      "0100000000000000000000000000000000000000000000000000000000000000",
      "hex",
    ).toString("base64url");
    await expectEnvelope(
      await postJson(`${baseUrl}${CONFIRM_EMAIL_CODE_PATH}`, {
        ...confirmBody,
        client_public_key: lowOrder,
      }),
      400,
      "invalid_request",
    );
    await expectEnvelope(
      await postJson(`${baseUrl}${CONFIRM_EMAIL_CODE_PATH}`, {
        ...confirmBody,
        client_public_key: Buffer.alloc(31, 1).toString("base64"),
      }),
      400,
      "invalid_request",
    );
    expect(calls).toEqual([]);
  });
});

describe("public HTTP upstream failures", () => {
  it("answers an unexpected failure 500 internal_error without its text, and logs it", async () => {
    const { upstream } = createMemoryAuthUpstream({
      sendEmailCode: () => Promise.reject(new Error("redis://:hunter2@10.0.0.7 refused")),
    });
    const { baseUrl, errors } = await startGateway({ authUpstream: upstream });
    const response = await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, {
      email: "ada@example.com",
    });
    expect(response.status).toBe(500);
    expect(await response.json()).toEqual({
      error: { code: "internal_error", message: "internal error" },
    });
    expect(errors).toHaveLength(1);
  });

  it("answers an upstream answer of the wrong shape 503 service_unavailable", async () => {
    const { upstream } = createMemoryAuthUpstream({
      confirmEmailCode: async () => ({ device_session_id: "ds 1", user_id: "u" }),
    });
    const { baseUrl } = await startGateway({ authUpstream: upstream });
    await expectEnvelope(
      await postJson(`${baseUrl}${CONFIRM_EMAIL_CODE_PATH}`, confirmBody),
      503,
      "service_unavailable",
    );
  });

  it("answers a relayed error with the upstream's status and envelope", async () => {
    const { upstream } = createMemoryAuthUpstream({
      sendEmailCode: () =>
        Promise.reject(
          new GatewayError("resource_exhausted", "too many codes requested", {
            httpStatus: 429,
            envelopeCode: "rate_limited",
          }),
        ),
    });
    const { baseUrl } = await startGateway({ authUpstream: upstream });
    const response = await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, {
      email: "ada@example.com",
    });
    expect(response.status).toBe(429);
    expect(await response.json()).toEqual({
      error: { code: "rate_limited", message: "too many codes requested" },
    });
  });

  describe("through the HTTP auth upstream", () => {
    async function startFakeAuthService(
      handler: (path: string | undefined, response: import("node:http").ServerResponse) => void,
    ) {
      return listen(
        createServer((request, response) => {
          request.resume();
          request.on("end", () => handler(request.url, response));
        }),
      );
    }

    it("relays an upstream 4xx with its envelope", async () => {
      const upstreamUrl = await startFakeAuthService((_path, response) => {
        response
          .writeHead(401, { "content-type": "application/json" })
          .end(
            JSON.stringify({ error: { code: "wrong_code", message: "the code does not match" } }),
          );
      });
      const { baseUrl } = await startGateway({
        authUpstream: createHttpAuthUpstream({ baseUrl: upstreamUrl }),
      });
      const response = await postJson(`${baseUrl}${CONFIRM_EMAIL_CODE_PATH}`, confirmBody);
      expect(response.status).toBe(401);
      expect(await response.json()).toEqual({
        error: { code: "wrong_code", message: "the code does not match" },
      });
    });

    it("answers an upstream 5xx 503 service_unavailable", async () => {
      const upstreamUrl = await startFakeAuthService((_path, response) => {
        response.writeHead(502).end("bad gateway from the auth service's proxy");
      });
      const { baseUrl } = await startGateway({
        authUpstream: createHttpAuthUpstream({ baseUrl: upstreamUrl }),
      });
      const message = await expectEnvelope(
        await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, { email: "ada@example.com" }),
        503,
        "service_unavailable",
      );
      expect(message).toBe("auth upstream unavailable");
    });

    it("answers an unreachable upstream 503 service_unavailable", async () => {
      const closed = createServer();
      await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
      const { port } = closed.address() as AddressInfo;
      await new Promise((resolve) => closed.close(resolve));
      const { baseUrl } = await startGateway({
        authUpstream: createHttpAuthUpstream({ baseUrl: `http://127.0.0.1:${port}` }),
      });
      await expectEnvelope(
        await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, { email: "ada@example.com" }),
        503,
        "service_unavailable",
      );
    });

    it("answers an upstream that does not answer in time 504 upstream_timeout", async () => {
      const upstreamUrl = await startFakeAuthService(() => {});
      const { baseUrl } = await startGateway({
        authUpstream: createHttpAuthUpstream({ baseUrl: upstreamUrl, timeoutMs: 150 }),
      });
      await expectEnvelope(
        await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, { email: "ada@example.com" }),
        504,
        "upstream_timeout",
      );
    });
  });
});

describe("public HTTP metrics", () => {
  it("counts every response by matched route and status, and unknown paths as unmatched", async () => {
    let ready = false;
    const { baseUrl, counted } = await startGateway({ isReady: () => ready });
    await fetch(`${baseUrl}/healthz`);
    await fetch(`${baseUrl}/healthz`);
    await fetch(`${baseUrl}/readyz`);
    ready = true;
    await fetch(`${baseUrl}/readyz`);
    await fetch(`${baseUrl}/no/such/path`);
    await fetch(`${baseUrl}/another-${Math.random()}`);
    await fetch(`${baseUrl}${SEND_EMAIL_CODE_PATH}`);
    await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, { email: "ada@example.com" });
    await postJson(`${baseUrl}${SEND_EMAIL_CODE_PATH}`, oversizedJson);
    await postJson(`${baseUrl}${CONFIRM_EMAIL_CODE_PATH}`, "{}", "text/plain");

    expect(await counted("/healthz", 200)).toBe(2);
    expect(await counted("/readyz", 503)).toBe(1);
    expect(await counted("/readyz", 200)).toBe(1);
    expect(await counted("unmatched", 404)).toBe(2);
    expect(await counted(SEND_EMAIL_CODE_PATH, 405)).toBe(1);
    expect(await counted(SEND_EMAIL_CODE_PATH, 200)).toBe(1);
    expect(await counted(SEND_EMAIL_CODE_PATH, 413)).toBe(1);
    expect(await counted(CONFIRM_EMAIL_CODE_PATH, 415)).toBe(1);
  });
});

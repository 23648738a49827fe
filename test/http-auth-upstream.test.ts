/**
 * The HTTP auth upstream adapter against a fake auth service on a loopback
 * port: what it sends, and how each kind of answer (or silence) becomes the
 * GatewayError the public routes answer with.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  createHttpAuthUpstream,
  MAX_UPSTREAM_RESPONSE_BYTES,
} from "../runtime/http/auth-upstream.js";
import { captureLogger } from "./support/logger.js";
import { rejectionOf } from "./support/rejection.js";

interface ReceivedRequest {
  readonly method: string | undefined;
  readonly url: string | undefined;
  readonly contentType: string | undefined;
  readonly body: unknown;
}

type FakeHandler = (request: IncomingMessage, response: ServerResponse) => void;

const servers: Server[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** A fake auth service on 127.0.0.1; records each request once its body has arrived. */
async function startFakeUpstream(handler: FakeHandler) {
  const received: ReceivedRequest[] = [];
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      received.push({
        method: request.method,
        url: request.url,
        contentType: request.headers["content-type"],
        body: text === "" ? undefined : JSON.parse(text),
      });
      handler(request, response);
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { baseUrl: `http://127.0.0.1:${port}`, received, server };
}

function answerJson(status: number, body: unknown): FakeHandler {
  return (_request, response) => {
    response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
  };
}

/** A loopback port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const ctx = { signal: new AbortController().signal };
const confirmRequest = { challenge_id: "ch_1", code: "123456", client_public_key: "k" };

describe("createHttpAuthUpstream", () => {
  it("POSTs send-email-code as JSON and resolves the challenge id", async () => {
    const fake = await startFakeUpstream(answerJson(200, { challenge_id: "ch_1" }));
    const upstream = createHttpAuthUpstream({ baseUrl: fake.baseUrl });
    await expect(upstream.sendEmailCode({ email: "ada@example.com" }, ctx)).resolves.toEqual({
      challenge_id: "ch_1",
    });
    expect(fake.received).toEqual([
      {
        method: "POST",
        url: "/api/v1/public/auth/send-email-code",
        contentType: "application/json",
        body: { email: "ada@example.com" },
      },
    ]);
  });

  it("POSTs confirm-email-code below the base URL's own path", async () => {
    const fake = await startFakeUpstream(
      answerJson(201, { device_session_id: "ds-1", user_id: "user-1", extra: true }),
    );
    const upstream = createHttpAuthUpstream({ baseUrl: `${fake.baseUrl}/auth/` });
    const answer = await upstream.confirmEmailCode(confirmRequest, ctx);
    expect(answer).toEqual({ device_session_id: "ds-1", user_id: "user-1" });
    expect(fake.received.map((request) => [request.url, request.body])).toEqual([
      ["/auth/api/v1/public/auth/confirm-email-code", confirmRequest],
    ]);
  });

  it("relays a 4xx with its envelope's status, code and message", async () => {
    const fake = await startFakeUpstream(
      answerJson(409, { error: { code: "challenge_used", message: "challenge already used" } }),
    );
    const upstream = createHttpAuthUpstream({ baseUrl: fake.baseUrl });
    const error = await rejectionOf(upstream.confirmEmailCode(confirmRequest, ctx));
    expect(error.code).toBe("already_exists");
    expect(error.message).toBe("challenge already used");
    expect(error.details).toEqual({ httpStatus: 409, envelopeCode: "challenge_used" });
  });

  it("relays a 4xx the error table does not know with its envelope", async () => {
    const fake = await startFakeUpstream(
      answerJson(422, { error: { code: "wrong_code", message: "code does not match" } }),
    );
    const upstream = createHttpAuthUpstream({ baseUrl: fake.baseUrl });
    const error = await rejectionOf(upstream.confirmEmailCode(confirmRequest, ctx));
    expect(error.message).toBe("code does not match");
    expect(error.details).toEqual({ httpStatus: 422, envelopeCode: "wrong_code" });
  });

  it("relays a 4xx without a valid envelope with a generic code and message", async () => {
    const fake = await startFakeUpstream((request, response) => {
      if (request.url?.endsWith("send-email-code")) {
        response.writeHead(400, { "content-type": "text/html" }).end("<h1>Bad Request</h1>");
      } else {
        answerJson(403, { error: { code: "Not Snake", message: "nope" } })(request, response);
      }
    });
    const upstream = createHttpAuthUpstream({ baseUrl: fake.baseUrl });

    const badRequest = await rejectionOf(upstream.sendEmailCode({ email: "a@b.co" }, ctx));
    expect(badRequest.code).toBe("invalid_argument");
    expect(badRequest.message).toBe("auth upstream rejected the request");
    // No envelope code: the error table's `invalid_request` applies.
    expect(badRequest.details).toEqual({ httpStatus: 400 });

    const forbidden = await rejectionOf(upstream.confirmEmailCode(confirmRequest, ctx));
    expect(forbidden.message).toBe("auth upstream rejected the request");
    expect(forbidden.details).toEqual({ httpStatus: 403, envelopeCode: "request_rejected" });
  });

  it("answers a 5xx as unavailable without relaying its text", async () => {
    const fake = await startFakeUpstream((_request, response) => {
      response.writeHead(500, { "content-type": "text/plain" }).end("db password is hunter2");
    });
    const { logger, warnings } = captureLogger();
    const upstream = createHttpAuthUpstream({ baseUrl: fake.baseUrl, logger });
    const error = await rejectionOf(upstream.sendEmailCode({ email: "a@b.co" }, ctx));
    expect([error.code, error.message, error.details]).toEqual([
      "unavailable",
      "auth upstream unavailable",
      undefined,
    ]);
    expect(warnings).toEqual([
      "auth upstream /api/v1/public/auth/send-email-code answered HTTP 500",
    ]);
  });

  it("does not follow redirects", async () => {
    const fake = await startFakeUpstream((request, response) => {
      if (request.url === "/elsewhere")
        answerJson(200, { challenge_id: "ch_1" })(request, response);
      else response.writeHead(307, { location: "/elsewhere" }).end();
    });
    const upstream = createHttpAuthUpstream({ baseUrl: fake.baseUrl });
    const error = await rejectionOf(upstream.sendEmailCode({ email: "a@b.co" }, ctx));
    expect(error.code).toBe("unavailable");
    expect(fake.received.map((request) => request.url)).toEqual([
      "/api/v1/public/auth/send-email-code",
    ]);
  });

  it.each([
    ["a body that is not JSON", "text/plain", "ok"],
    ["JSON without the expected field", "application/json", '{"id":"ch_1"}'],
    ["a field of the wrong type", "application/json", '{"challenge_id":1}'],
    ["an empty body", "application/json", ""],
  ])("answers a 2xx with %s as unavailable", async (_name, contentType, body) => {
    const fake = await startFakeUpstream((_request, response) => {
      response.writeHead(200, { "content-type": contentType }).end(body);
    });
    const upstream = createHttpAuthUpstream({ baseUrl: fake.baseUrl });
    const error = await rejectionOf(upstream.sendEmailCode({ email: "a@b.co" }, ctx));
    expect([error.code, error.message]).toEqual([
      "unavailable",
      "auth upstream returned an invalid response",
    ]);
  });

  // Counted as it arrives: a chunked answer declares no length up front.
  it("stops reading an answer longer than 64 KiB", async () => {
    const fake = await startFakeUpstream((_request, response) => {
      response.writeHead(200, { "content-type": "application/json" });
      response.write(`{"challenge_id":"ch_1","pad":"`);
      response.write("x".repeat(MAX_UPSTREAM_RESPONSE_BYTES));
      response.end(`"}`);
    });
    const upstream = createHttpAuthUpstream({ baseUrl: fake.baseUrl });
    const error = await rejectionOf(upstream.sendEmailCode({ email: "a@b.co" }, ctx));
    expect([error.code, error.message]).toEqual([
      "unavailable",
      "auth upstream returned an invalid response",
    ]);
  });

  it("answers upstream_timeout when no answer arrives in time", async () => {
    const fake = await startFakeUpstream(() => {});
    const upstream = createHttpAuthUpstream({ baseUrl: fake.baseUrl, timeoutMs: 150 });
    const started = performance.now();
    const error = await rejectionOf(upstream.sendEmailCode({ email: "a@b.co" }, ctx));
    expect([error.code, error.message]).toEqual(["upstream_timeout", "auth upstream timed out"]);
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it("answers upstream_timeout when the answer's body stalls", async () => {
    const fake = await startFakeUpstream((_request, response) => {
      response.writeHead(200, { "content-type": "application/json" });
      response.write('{"challenge_id":');
    });
    const upstream = createHttpAuthUpstream({ baseUrl: fake.baseUrl, timeoutMs: 150 });
    const error = await rejectionOf(upstream.sendEmailCode({ email: "a@b.co" }, ctx));
    expect(error.code).toBe("upstream_timeout");
  });

  it("answers unavailable when the connection is refused", async () => {
    const port = await closedPort();
    const { logger, warnings } = captureLogger();
    const upstream = createHttpAuthUpstream({ baseUrl: `http://127.0.0.1:${port}`, logger });
    const error = await rejectionOf(upstream.confirmEmailCode(confirmRequest, ctx));
    expect([error.code, error.message]).toEqual(["unavailable", "auth upstream unavailable"]);
    expect(warnings).toEqual(["auth upstream /api/v1/public/auth/confirm-email-code unreachable"]);
  });

  it("answers unavailable when the fetch itself fails", async () => {
    const upstream = createHttpAuthUpstream({
      baseUrl: "http://127.0.0.1:1",
      fetch: () => Promise.reject(new TypeError("fetch failed")),
    });
    const error = await rejectionOf(upstream.sendEmailCode({ email: "a@b.co" }, ctx));
    expect(error.code).toBe("unavailable");
  });

  it("gives up as soon as the caller's signal aborts", async () => {
    let upstreamRequestClosed = false;
    const fake = await startFakeUpstream((request) => {
      request.socket.on("close", () => {
        upstreamRequestClosed = true;
      });
    });
    const upstream = createHttpAuthUpstream({ baseUrl: fake.baseUrl, timeoutMs: 10_000 });
    const caller = new AbortController();
    const pending = rejectionOf(
      upstream.sendEmailCode({ email: "a@b.co" }, { signal: caller.signal }),
    );
    await vi.waitFor(() => expect(fake.received).toHaveLength(1));
    caller.abort();
    const error = await pending;
    expect([error.code, error.message]).toEqual(["unavailable", "request cancelled"]);
    await vi.waitFor(() => expect(upstreamRequestClosed).toBe(true));
  });
});

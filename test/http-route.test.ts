/**
 * The HTTP forwarding route against a local fake downstream: what it sends,
 * and how each downstream answer maps to a result or an error.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { isGatewayError } from "../handlers/errors.js";
import type { Command, RouteContext } from "../handlers/ports.js";
import { createHttpRoute } from "../runtime/http/route.js";
import { createMemoryLogger } from "./support/gateway.js";

const servers: Server[] = [];

async function downstream(
  handler: (request: IncomingMessage, body: Buffer, response: ServerResponse) => void,
): Promise<string> {
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => handler(request, Buffer.concat(chunks), response));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/commands`;
}

afterEach(async () => {
  await Promise.all(
    servers.splice(0).map(
      (server) =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    ),
  );
});

const command: Command = {
  userId: "u-1",
  deviceSessionId: "ds-1",
  messageType: "profile.get",
  requestId: "req-1",
  payload: Buffer.from([0, 1, 2, 255]),
};

function context(overrides: Partial<RouteContext> = {}): RouteContext {
  return {
    signal: new AbortController().signal,
    deadline: undefined,
    logger: createMemoryLogger(),
    traceHeaders: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
    ...overrides,
  };
}

async function codeOf(call: Promise<unknown>): Promise<string> {
  const error = await call.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(isGatewayError(error), "the route should fail with a GatewayError").toBe(true);
  return (error as { code: string }).code;
}

describe("createHttpRoute", () => {
  it("forwards the payload with the user, session, request id, message type and trace context", async () => {
    let seen: { headers: IncomingMessage["headers"]; body: Buffer } | undefined;
    const url = await downstream((request, body, response) => {
      seen = { headers: request.headers, body };
      response.writeHead(200, { "x-edge-result-code": "found" }).end(Buffer.from("profile"));
    });
    const result = await createHttpRoute({ url, headers: { authorization: "Bearer svc" } })(
      command,
      context(),
    );
    expect(result.resultCode).toBe("found");
    expect(Buffer.from(result.payload ?? []).toString()).toBe("profile");
    expect(seen?.body).toEqual(Buffer.from([0, 1, 2, 255]));
    expect(seen?.headers["x-edge-user-id"]).toBe("u-1");
    expect(seen?.headers["x-edge-device-session-id"]).toBe("ds-1");
    expect(seen?.headers["x-edge-request-id"]).toBe("req-1");
    expect(seen?.headers["x-edge-message-type"]).toBe("profile.get");
    expect(seen?.headers.traceparent).toBe(
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    );
    expect(seen?.headers.authorization).toBe("Bearer svc");
  });

  it("answers ok for a 2xx without a result code, and rejected with the body for a 4xx", async () => {
    const ok = await downstream((_request, _body, response) => response.writeHead(204).end());
    const empty = await createHttpRoute({ url: ok })(command, context());
    expect(empty.resultCode).toBe("ok");
    expect(empty.payload?.byteLength).toBe(0);
    const rejected = await downstream((_request, _body, response) =>
      response.writeHead(404).end("no such profile"),
    );
    const result = await createHttpRoute({ url: rejected })(command, context());
    expect(result.resultCode).toBe("rejected");
    expect(Buffer.from(result.payload ?? []).toString()).toBe("no such profile");
  });

  it("maps 5xx to unavailable, 504 and a timeout to deadline_exceeded, a refused connection to unavailable", async () => {
    const broken = await downstream((_request, _body, response) =>
      response.writeHead(500).end("stack trace"),
    );
    expect(await codeOf(createHttpRoute({ url: broken })(command, context()))).toBe("unavailable");
    const gatewayTimeout = await downstream((_request, _body, response) =>
      response.writeHead(504).end(),
    );
    expect(await codeOf(createHttpRoute({ url: gatewayTimeout })(command, context()))).toBe(
      "deadline_exceeded",
    );
    const slow = await downstream(() => {});
    expect(await codeOf(createHttpRoute({ url: slow, timeoutMs: 100 })(command, context()))).toBe(
      "deadline_exceeded",
    );
    const closed = await downstream(() => {});
    const server = servers.pop()!;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    expect(await codeOf(createHttpRoute({ url: closed })(command, context()))).toBe("unavailable");
  });

  it("refuses a response body over the limit", async () => {
    const big = await downstream((_request, _body, response) =>
      response.writeHead(200).end(Buffer.alloc(2048)),
    );
    expect(
      await codeOf(createHttpRoute({ url: big, maxResponseBytes: 1024 })(command, context())),
    ).toBe("unavailable");
  });
});

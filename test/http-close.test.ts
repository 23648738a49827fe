/**
 * Closing an HTTP listener at shutdown (contract §10): connections that carry
 * no request close at once, also those that never sent one, a request in
 * flight still gets its whole answer, and a gateway whose Connect stream was
 * cancelled stops without waiting out its shutdown budget. Each close here is
 * given a budget far beyond the test's timeout, so waiting it out fails.
 */
import { once } from "node:events";
import { createServer, type RequestListener, type Server } from "node:http";
import { connect, type Socket } from "node:net";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EdgeGatewayService } from "../proto/gen-es/edgegateway/v1/edge_gateway_pb.js";
import { parseAddress } from "../runtime/config/config.js";
import { closeHttp, listenHttp } from "../runtime/http/listen.js";
import { createCleanup } from "./support/cleanup.js";
import { metric, newDevice, startPushGateway, subscribeRequest } from "./support/push.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";
import { waitFor } from "./support/wait.js";

/** Far beyond every test's timeout: a close that waits it out fails the test. */
const BUDGET_MS = 600_000;
const TEST_TIMEOUT_MS = 20_000;

const cleanup = createCleanup();
afterEach(() => cleanup.run());

async function listening(handler: RequestListener): Promise<{
  server: Server;
  port: number;
}> {
  const server = createServer(handler);
  // Node's own keep-alive timeout (5 s) would end idle connections in the
  // end; here only closeHttp may.
  server.keepAliveTimeout = BUDGET_MS;
  const address = await listenHttp(server, parseAddress("127.0.0.1:0")!);
  cleanup.defer(() => server.closeAllConnections());
  return { server, port: Number(address.slice(address.lastIndexOf(":") + 1)) };
}

async function connected(port: number): Promise<Socket> {
  const socket = connect(port, "127.0.0.1");
  await once(socket, "connect");
  cleanup.defer(() => socket.destroy());
  return socket;
}

/**
 * A raw HTTP/1.1 client connection to `server` (it never closes by itself),
 * with the server's side of it and everything the server wrote.
 */
async function rawConnection(server: Server, port: number) {
  const accepted = once(server, "connection") as Promise<[Socket]>;
  const socket = await connected(port);
  const [serverSide] = await accepted;
  let received = "";
  socket.on("data", (chunk: Buffer) => {
    received += chunk.toString();
  });
  return {
    socket,
    serverSide,
    closed: once(socket, "close"),
    received: () => received,
  };
}

describe("closeHttp", () => {
  it(
    "closes at once a connection that never sent a byte",
    async () => {
      const { server, port } = await listening((_request, response) => response.end("ok"));
      const connection = await rawConnection(server, port);
      await closeHttp(server, BUDGET_MS);
      await connection.closed;
      expect(connection.received()).toBe("");
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "closes at once a keep-alive connection between requests",
    async () => {
      const { server, port } = await listening((_request, response) => response.end("ok"));
      const connection = await rawConnection(server, port);
      connection.socket.write("GET / HTTP/1.1\r\nHost: gateway.test\r\n\r\n");
      await waitFor("the answer", () => connection.received().endsWith("ok"));
      expect(connection.received()).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      await closeHttp(server, BUDGET_MS);
      await connection.closed;
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "answers a request in flight in full, then closes its connection",
    async () => {
      let answer: (() => void) | undefined;
      const { server, port } = await listening((_request, response) => {
        response.writeHead(200, { "content-type": "text/plain" });
        response.write("first part, ");
        answer = () => response.end("last part");
      });
      const connection = await rawConnection(server, port);
      connection.socket.write("GET / HTTP/1.1\r\nHost: gateway.test\r\n\r\n");
      await waitFor("the request to arrive", () => answer !== undefined);
      const closing = closeHttp(server, BUDGET_MS);
      answer!();
      await connection.closed;
      await closing;
      expect(connection.received()).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      // Chunked: the two parts, then the last chunk.
      expect(connection.received()).toMatch(/first part, \r\n[\s\S]*last part\r\n0\r\n\r\n$/);
    },
    TEST_TIMEOUT_MS,
  );

  // A connection whose request head is on its way is not cut: the request is
  // served, as Node serves a request that arrives on a busy connection.
  it(
    "serves a request whose head was still arriving when the close began",
    async () => {
      const { server, port } = await listening((_request, response) => response.end("ok"));
      const connection = await rawConnection(server, port);
      connection.socket.write("GET / HTTP/1.1\r\n");
      await waitFor("the server to read the first bytes", () => {
        return connection.serverSide.bytesRead > 0;
      });
      const closing = closeHttp(server, BUDGET_MS);
      connection.socket.write("Host: gateway.test\r\n\r\n");
      await connection.closed;
      await closing;
      expect(connection.received()).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*ok$/);
    },
    TEST_TIMEOUT_MS,
  );
});

describe("a gateway's public listener at stop()", () => {
  let redis: TestRedis;
  let publisher: Redis;

  beforeAll(async () => {
    redis = await startRedis();
    publisher = redis.client();
  });

  afterAll(async () => {
    publisher?.disconnect();
    await redis?.stop();
  });

  // A fetch client aborting a streaming response drops that connection and
  // opens a fresh one right away, which sends nothing; browsers and proxies
  // preconnect the same way. Such a connection used to hold the listener's
  // close for the whole GATEWAY_SHUTDOWN_TIMEOUT.
  it(
    "stops without waiting out its shutdown budget with a cancelled Connect stream and a preconnected socket",
    async () => {
      const node = await startPushGateway(redis, publisher, cleanup, {
        env: { GATEWAY_SHUTDOWN_TIMEOUT: `${BUDGET_MS / 1000}s` },
      });
      const device = newDevice("u-cancelled");
      await node.snapshot(device, "active");
      const request = subscribeRequest(device);
      const client = createClient(
        EdgeGatewayService,
        createConnectTransport({ baseUrl: `http://${node.publicHttp}`, useBinaryFormat: true }),
      );
      const abort = new AbortController();
      const stream = client
        .subscribeEvents(
          { ...request, timestampMs: BigInt(request.timestampMs) },
          { signal: abort.signal },
        )
        [Symbol.asyncIterator]();
      expect((await stream.next()).value).toMatchObject({ eventType: "gateway.server_time" });
      abort.abort();
      await expect(stream.next()).rejects.toThrow(/aborted/);
      await waitFor("the cancelled stream released", async () => {
        return (await metric(node.admin, "gateway_push_streams_active")) === 0;
      });

      const publicPort = Number(node.publicHttp.slice(node.publicHttp.lastIndexOf(":") + 1));
      const preconnected = await connected(publicPort);
      const closed = once(preconnected, "close");

      await node.gateway.stop();
      await closed;
      expect(node.gateway.ready).toBe(false);
    },
    TEST_TIMEOUT_MS,
  );
});

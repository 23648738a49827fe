/**
 * The grpc-js internals the gateway reads (runtime/grpc/grpc-js-http2-stream.ts),
 * checked on real server calls: these tests fail when a grpc-js release moves
 * the HTTP/2 stream out of reach, before the push streams silently lose their
 * reset.
 */
import { constants as http2Constants } from "node:http2";
import * as grpc from "@grpc/grpc-js";
import { ClientError, createServer, ServerError, Status } from "nice-grpc";
import { afterEach, describe, expect, it } from "vitest";
import { EdgeGatewayServiceDefinition } from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { http2StreamOf, type ResettableHttp2Stream } from "../runtime/grpc/grpc-js-http2-stream.js";
import { createCleanup } from "./support/cleanup.js";
import { grpcClient } from "./support/push.js";

const cleanup = createCleanup();
afterEach(() => cleanup.run());

const passThrough: grpc.ServerInterceptor = (_method, call) =>
  new grpc.ServerInterceptingCall(call);

/** A server whose interceptors record, at two depths, the stream each call finds. */
async function startServer() {
  const outer: (ResettableHttp2Stream | undefined)[] = [];
  const inner: (ResettableHttp2Stream | undefined)[] = [];
  const probe =
    (found: (ResettableHttp2Stream | undefined)[]): grpc.ServerInterceptor =>
    (_method, call) => {
      found.push(http2StreamOf(call));
      return new grpc.ServerInterceptingCall(call);
    };
  let started!: () => void;
  const methodStarted = new Promise<void>((resolve) => {
    started = resolve;
  });
  let methodSignal: AbortSignal | undefined;

  const server = createServer({ interceptors: [probe(inner), passThrough, probe(outer)] });
  server.add(EdgeGatewayServiceDefinition, {
    async executeCommand() {
      throw new ServerError(Status.UNIMPLEMENTED, "not served by this test server");
    },
    async *subscribeEvents(_request, context) {
      methodSignal = context.signal;
      started();
      await new Promise((resolve) => context.signal.addEventListener("abort", resolve));
    },
  });
  const port = await server.listen("127.0.0.1:0");
  cleanup.defer(() => server.forceShutdown());
  return {
    address: `127.0.0.1:${port}`,
    outer,
    inner,
    methodStarted,
    methodSignal: () => methodSignal,
  };
}

describe("http2StreamOf on @grpc/grpc-js", () => {
  it("finds the call's open HTTP/2 stream from an interceptor at any depth", async () => {
    const server = await startServer();
    const call = grpcClient(server.address, cleanup).subscribeEvents({ deviceSessionId: "d" });
    const iterator = call[Symbol.asyncIterator]();
    const ended = iterator.next().catch((error: unknown) => error);
    await server.methodStarted;

    const [stream] = server.outer;
    expect(server.outer).toHaveLength(1);
    expect(stream?.constructor.name).toBe("ServerHttp2Stream");
    expect(stream?.closed).toBe(false);
    // The innermost interceptor wraps grpc-js's base call directly: same stream.
    expect(server.inner).toEqual([stream]);

    stream?.close(http2Constants.NGHTTP2_CANCEL);
    await ended;
  });

  it("resets the call through it: the client sees CANCELLED and the method's signal aborts", async () => {
    const server = await startServer();
    const call = grpcClient(server.address, cleanup).subscribeEvents({ deviceSessionId: "d" });
    const iterator = call[Symbol.asyncIterator]();
    const ended = iterator.next().catch((error: unknown) => error);
    await server.methodStarted;

    const [stream] = server.outer;
    expect(stream).toBeDefined();
    stream?.close(http2Constants.NGHTTP2_CANCEL);

    const error = await ended;
    expect(error).toBeInstanceOf(ClientError);
    expect((error as ClientError).code).toBe(Status.CANCELLED);
    await expect.poll(() => server.methodSignal()?.aborted, { timeout: 5_000 }).toBe(true);
  });
});

/**
 * The gRPC listener's standard services and tracing: `grpc.health.v1.Health`
 * follows readiness, server reflection (v1 and v1alpha) describes the edge
 * gateway's API and the health service, `buf curl` works through it, and
 * each call gets a SERVER span continuing the caller's `traceparent`.
 */
import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { loadSync } from "@grpc/proto-loader";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import {
  type Channel,
  type CompatServiceDefinition,
  createChannel,
  createClient,
  createServer,
  Metadata,
  type Server,
  ServerError,
  Status,
} from "nice-grpc";
import { HealthDefinition } from "nice-grpc-server-health";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  EdgeGatewayServiceDefinition,
  type EdgeGatewayServiceImplementation,
} from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { createGrpcHealth, type GrpcHealth } from "../runtime/grpc/health.js";
import { addGrpcReflection } from "../runtime/grpc/reflection.js";
import { createGrpcTracingMiddleware, traceHeadersOf } from "../runtime/grpc/tracing.js";
import { startTelemetry, type Telemetry } from "../runtime/telemetry/telemetry.js";

const SERVICE = "edgegateway.v1.EdgeGatewayService";
/** `grpc.health.v1.HealthCheckResponse.ServingStatus` values. */
const SERVING = 1;
const NOT_SERVING = 2;

const exporter = new InMemorySpanExporter();
let telemetry: Telemetry;
let server: Server;
let health: GrpcHealth;
let channel: Channel;
let address: string;

/** A stub of the gateway's service: answers with the trace headers it saw. */
const stub: EdgeGatewayServiceImplementation = {
  async executeCommand(request) {
    if (request.messageType === "unavailable") {
      throw new ServerError(Status.UNAVAILABLE, "downstream unavailable");
    }
    if (request.messageType === "unauthenticated") {
      throw new ServerError(Status.UNAUTHENTICATED, "invalid request signature");
    }
    return {
      requestId: request.requestId,
      resultCode: "ok",
      payload: Buffer.from(JSON.stringify(traceHeadersOf())),
    };
  },
  async *subscribeEvents(request) {
    yield { eventId: "0-0", eventType: "gateway.server_time", requestId: request.requestId };
    yield { eventId: "1-0", eventType: "test.event" };
  },
};

beforeAll(async () => {
  telemetry = startTelemetry({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  server = createServer({
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
  });
  server.with(createGrpcTracingMiddleware()).add(EdgeGatewayServiceDefinition, stub);
  health = createGrpcHealth();
  server.add(health.definition, health.implementation);
  addGrpcReflection(server);
  const port = await server.listen("127.0.0.1:0");
  address = `127.0.0.1:${port}`;
  channel = createChannel(address);
});

afterAll(async () => {
  channel?.close();
  health?.close();
  server?.forceShutdown();
  await telemetry?.shutdown();
});

describe("gRPC health", () => {
  it("reports NOT_SERVING until ready, SERVING while ready, NOT_SERVING after", async () => {
    const client = createClient(HealthDefinition, channel);
    const statuses = async () => [
      (await client.check({ service: "" })).status,
      (await client.check({ service: SERVICE })).status,
    ];

    expect(await statuses()).toEqual([NOT_SERVING, NOT_SERVING]);
    health.setServing(true);
    expect(await statuses()).toEqual([SERVING, SERVING]);
    health.setServing(false);
    expect(await statuses()).toEqual([NOT_SERVING, NOT_SERVING]);
  });

  it("answers NOT_FOUND for a service it does not serve", async () => {
    const client = createClient(HealthDefinition, channel);

    await expect(client.check({ service: "other.v1.OtherService" })).rejects.toMatchObject({
      code: Status.NOT_FOUND,
    });
  });

  // An open Watch stream must not hold up a graceful server shutdown.
  it("streams changes to Watch, and ends every Watch on close()", async () => {
    const watched = createGrpcHealth();
    const watchServer = createServer();
    watchServer.add(watched.definition, watched.implementation);
    const port = await watchServer.listen("127.0.0.1:0");
    const watchChannel = createChannel(`127.0.0.1:${port}`);
    try {
      const client = createClient(HealthDefinition, watchChannel);
      const seen: number[] = [];
      const watching = (async () => {
        for await (const response of client.watch({ service: SERVICE })) {
          seen.push(response.status);
          if (seen.length === 1) watched.setServing(true);
          if (seen.length === 2) watched.close();
        }
      })();

      await expect(watching).rejects.toMatchObject({
        code: Status.UNAVAILABLE,
        details: "gateway is shutting down",
      });
      expect(seen).toEqual([NOT_SERVING, SERVING]);
      await watchServer.shutdown();
    } finally {
      watchChannel.close();
      watchServer.forceShutdown();
    }
  });
});

/** A reflection client of `grpc.reflection.<version>.ServerReflection`. */
function reflectionClient(version: "v1" | "v1alpha") {
  const reflectionRoot = join(
    dirname(createRequire(import.meta.url).resolve("@grpc/reflection")),
    "../proto",
  );
  const definition = loadSync(`grpc/reflection/${version}/reflection.proto`, {
    includeDirs: [reflectionRoot],
    oneofs: true,
  })[`grpc.reflection.${version}.ServerReflection`] as CompatServiceDefinition;
  const client = createClient(definition, channel) as unknown as {
    ServerReflectionInfo(requests: AsyncIterable<object>): AsyncIterable<ReflectionResponse>;
  };
  return async (request: object): Promise<ReflectionResponse> => {
    async function* one() {
      yield request;
    }
    for await (const response of client.ServerReflectionInfo(one())) return response;
    throw new Error("no reflection response");
  };
}

interface ReflectionResponse {
  listServicesResponse?: { service: { name: string }[] };
  fileDescriptorResponse?: { fileDescriptorProto: Buffer[] };
  errorResponse?: { errorCode: number; errorMessage: string };
}

describe("gRPC reflection", () => {
  for (const version of ["v1", "v1alpha"] as const) {
    it(`lists the gateway and health services (${version})`, async () => {
      const reflect = reflectionClient(version);

      const response = await reflect({ listServices: "*" });

      const names = response.listServicesResponse?.service.map((service) => service.name);
      expect(names).toEqual(expect.arrayContaining([SERVICE, "grpc.health.v1.Health"]));
    });
  }

  it("returns the gateway's proto file for a symbol it contains", async () => {
    const reflect = reflectionClient("v1");

    const response = await reflect({ fileContainingSymbol: `${SERVICE}.ExecuteCommand` });

    const [bytes] = response.fileDescriptorResponse?.fileDescriptorProto ?? [];
    expect(bytes).toBeDefined();
    const file = fromBinary(FileDescriptorProtoSchema, bytes ?? new Uint8Array());
    expect(file.name).toBe("edgegateway/v1/edge_gateway.proto");
    expect(file.package).toBe("edgegateway.v1");
    expect(file.service.map((service) => service.name)).toEqual(["EdgeGatewayService"]);
    expect(file.service[0]?.method.map((method) => method.name)).toEqual([
      "ExecuteCommand",
      "SubscribeEvents",
    ]);
    expect(file.messageType.map((message) => message.name)).toContain("ExecuteCommandRequest");
  });

  it("returns the health service's proto file", async () => {
    const reflect = reflectionClient("v1");

    const response = await reflect({ fileContainingSymbol: "grpc.health.v1.Health" });

    const [bytes] = response.fileDescriptorResponse?.fileDescriptorProto ?? [];
    const file = fromBinary(FileDescriptorProtoSchema, bytes ?? new Uint8Array());
    expect(file.name).toBe("grpc/health/v1/health.proto");
    expect(file.service[0]?.method.map((method) => method.name)).toEqual(["Check", "Watch"]);
  });

  it("answers NOT_FOUND for an unknown symbol", async () => {
    const reflect = reflectionClient("v1");

    const response = await reflect({ fileContainingSymbol: "no.such.Symbol" });

    expect(response.errorResponse?.errorCode).toBe(Status.NOT_FOUND);
  });
});

describe("buf curl through reflection", () => {
  const buf = fileURLToPath(new URL("../node_modules/.bin/buf", import.meta.url));
  const run = async (...args: string[]) =>
    (
      await promisify(execFile)(buf, [
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        ...args,
      ])
    ).stdout;

  it("lists every method", async () => {
    const methods = (await run("--list-methods", `http://${address}`)).trim().split("\n");

    expect(methods).toEqual(
      expect.arrayContaining([
        `${SERVICE}/ExecuteCommand`,
        `${SERVICE}/SubscribeEvents`,
        "grpc.health.v1.Health/Check",
        "grpc.health.v1.Health/Watch",
      ]),
    );
  });

  it("calls ExecuteCommand with the schema reflection gives it", async () => {
    const output = await run(
      "-d",
      JSON.stringify({ requestId: "r-curl", messageType: "test" }),
      `http://${address}/${SERVICE}/ExecuteCommand`,
    );

    expect(JSON.parse(output)).toMatchObject({ requestId: "r-curl", resultCode: "ok" });
  });

  it("calls Health/Check", async () => {
    health.setServing(true);
    try {
      const output = await run(
        "-d",
        JSON.stringify({ service: SERVICE }),
        `http://${address}/grpc.health.v1.Health/Check`,
      );

      expect(JSON.parse(output)).toEqual({ status: "SERVING" });
    } finally {
      health.setServing(false);
    }
  });
});

describe("gRPC tracing", () => {
  const callerTraceId = "0af7651916cd43dd8448eb211c80319c";
  const callerSpanId = "b7ad6b7169203331";
  const traceparent = `00-${callerTraceId}-${callerSpanId}-01`;

  function spansOf(method: string) {
    return exporter.getFinishedSpans().filter((span) => span.name === `${SERVICE}/${method}`);
  }

  it("continues the caller's traceparent in a SERVER span the handler sees", async () => {
    exporter.reset();
    const client = createClient(EdgeGatewayServiceDefinition, channel);

    const response = await client.executeCommand(
      { requestId: "r-1", messageType: "test" },
      { metadata: Metadata({ traceparent, tracestate: "vendor=value" }) },
    );

    const [span] = spansOf("ExecuteCommand");
    expect(span?.kind).toBe(SpanKind.SERVER);
    expect(span?.spanContext().traceId).toBe(callerTraceId);
    expect(span?.parentSpanContext?.spanId).toBe(callerSpanId);
    expect(span?.attributes).toMatchObject({
      "rpc.system": "grpc",
      "rpc.service": SERVICE,
      "rpc.method": "ExecuteCommand",
      "rpc.grpc.status_code": Status.OK,
    });
    // the route would be called with the server span as its parent
    expect(JSON.parse(Buffer.from(response.payload).toString())).toEqual({
      traceparent: `00-${callerTraceId}-${span?.spanContext().spanId}-01`,
      tracestate: "vendor=value",
    });
  });

  it("starts a new trace when the caller sends none", async () => {
    exporter.reset();
    const client = createClient(EdgeGatewayServiceDefinition, channel);

    await client.executeCommand({ requestId: "r-2", messageType: "test" });

    const [span] = spansOf("ExecuteCommand");
    expect(span?.parentSpanContext).toBeUndefined();
    expect(span?.spanContext().traceId).toMatch(/^[0-9a-f]{32}$/);
  });

  it("records the status code, and marks server errors only", async () => {
    exporter.reset();
    const client = createClient(EdgeGatewayServiceDefinition, channel);

    await expect(client.executeCommand({ messageType: "unavailable" })).rejects.toThrow();
    await expect(client.executeCommand({ messageType: "unauthenticated" })).rejects.toThrow();

    const [unavailable, unauthenticated] = spansOf("ExecuteCommand");
    expect(unavailable?.attributes["rpc.grpc.status_code"]).toBe(Status.UNAVAILABLE);
    expect(unavailable?.status.code).toBe(SpanStatusCode.ERROR);
    expect(unauthenticated?.attributes["rpc.grpc.status_code"]).toBe(Status.UNAUTHENTICATED);
    expect(unauthenticated?.status.code).toBe(SpanStatusCode.UNSET);
  });

  it("ends a server stream's span when the stream ends", async () => {
    exporter.reset();
    const client = createClient(EdgeGatewayServiceDefinition, channel);

    const events = [];
    for await (const event of client.subscribeEvents(
      { requestId: "r-3" },
      { metadata: Metadata({ traceparent }) },
    )) {
      events.push(event.eventType);
    }

    expect(events).toEqual(["gateway.server_time", "test.event"]);
    const [span] = spansOf("SubscribeEvents");
    expect(span?.spanContext().traceId).toBe(callerTraceId);
    expect(span?.attributes["rpc.grpc.status_code"]).toBe(Status.OK);
  });

  it("does not trace health checks, which sit outside the middleware", async () => {
    exporter.reset();

    await createClient(HealthDefinition, channel).check({ service: "" });

    expect(exporter.getFinishedSpans()).toEqual([]);
  });
});

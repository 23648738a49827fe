/**
 * ExecuteCommand is served straight on grpc-js while no tracer provider is
 * registered, and through nice-grpc's middleware (with its SERVER span) once
 * one is: a route sees the same context on both paths.
 */
import { randomUUID } from "node:crypto";
import { credentials, Metadata, makeGenericClientConstructor } from "@grpc/grpc-js";
import { SpanKind } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { Routes } from "../handlers/ports.js";
import {
  ExecuteCommandRequest,
  ExecuteCommandResponse,
} from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { signExecuteCommandRequest } from "../runtime/kit/device-client.js";
import { startTelemetry, type Telemetry } from "../runtime/telemetry/telemetry.js";
import { putSession, startGateway } from "./support/gateway.js";
import { newDeviceKey } from "./support/keys.js";
import { metric } from "./support/push.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";

const device = newDeviceKey();
const sessionId = "ds-paths";
const callerTraceId = "0af7651916cd43dd8448eb211c80319c";
const traceparent = `00-${callerTraceId}-b7ad6b7169203331-01`;

/** What the route saw of its context. */
interface Seen {
  deadline: number | undefined;
  aborted: boolean;
  traceHeaders: Record<string, string>;
}

const routes: Routes = {
  "demo.context": async (_command, ctx) => ({
    resultCode: "ok",
    payload: Buffer.from(
      JSON.stringify({
        deadline: ctx.deadline,
        aborted: ctx.signal.aborted,
        traceHeaders: { ...ctx.traceHeaders },
      } satisfies Seen),
    ),
  }),
};

let redis: TestRedis;
let admin: Redis;
let gateway: Awaited<ReturnType<typeof startGateway>>;
let telemetry: Telemetry | undefined;

/** Calls `demo.context` through grpc-js, which sends the deadline to the server. */
async function callContext(deadline: Date): Promise<Seen> {
  const Raw = makeGenericClientConstructor({}, "Raw");
  const raw = new Raw(gateway.addresses.grpc, credentials.createInsecure());
  const metadata = new Metadata();
  metadata.set("traceparent", traceparent);
  const request = signExecuteCommandRequest(
    {
      deviceSessionId: sessionId,
      messageType: "demo.context",
      requestId: randomUUID(),
      timestampMs: Date.now(),
      payload: Buffer.alloc(0),
    },
    device.privateKey,
  );
  try {
    const response = await new Promise<ExecuteCommandResponse>((resolve, reject) => {
      raw.makeUnaryRequest(
        "/edgegateway.v1.EdgeGatewayService/ExecuteCommand",
        (value: ExecuteCommandRequest) => Buffer.from(ExecuteCommandRequest.encode(value).finish()),
        (bytes: Buffer) => ExecuteCommandResponse.decode(bytes),
        request,
        metadata,
        { deadline },
        (error, value) => (error || value === undefined ? reject(error) : resolve(value)),
      );
    });
    expect(response.resultCode).toBe("ok");
    return JSON.parse(Buffer.from(response.payload).toString()) as Seen;
  } finally {
    raw.close();
  }
}

function okCalls(): Promise<number> {
  return metric(
    gateway.addresses.adminHttp ?? "",
    'gateway_grpc_requests_total{method="ExecuteCommand",code="OK"}',
  );
}

beforeAll(async () => {
  redis = await startRedis();
  admin = redis.client();
  await putSession(admin, {
    deviceSessionId: sessionId,
    userId: "user-paths",
    publicKeyText: device.publicKeyText,
  });
  gateway = await startGateway(redis, { routes });
});

afterAll(async () => {
  await gateway?.stop();
  await telemetry?.shutdown();
  admin?.disconnect();
  await redis?.stop();
});

describe("ExecuteCommand without a tracer provider", () => {
  it("gives the route the call's deadline, a live signal and no trace headers, and counts the call", async () => {
    const before = await okCalls();
    const deadline = new Date(Date.now() + 5000);

    const seen = await callContext(deadline);

    // grpc-js sends the timeout rounded to the millisecond.
    expect(Math.abs((seen.deadline ?? 0) - deadline.getTime())).toBeLessThan(1000);
    expect(seen.aborted).toBe(false);
    expect(seen.traceHeaders).toEqual({});
    expect(await okCalls()).toBe(before + 1);
  });
});

describe("ExecuteCommand with a tracer provider", () => {
  const exporter = new InMemorySpanExporter();

  it("makes a SERVER span continuing the caller's trace, which the route's trace headers carry", async () => {
    telemetry = startTelemetry({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
    const before = await okCalls();
    const deadline = new Date(Date.now() + 5000);

    const seen = await callContext(deadline);

    // The span processor exports a span a little after the call ends.
    const span = await vi.waitFor(() => {
      const found = exporter
        .getFinishedSpans()
        .find((finished) => finished.name === "edgegateway.v1.EdgeGatewayService/ExecuteCommand");
      if (found === undefined) throw new Error("no ExecuteCommand span yet");
      return found;
    });
    expect(span?.kind).toBe(SpanKind.SERVER);
    expect(span?.spanContext().traceId).toBe(callerTraceId);
    expect(seen.traceHeaders).toEqual({
      traceparent: `00-${callerTraceId}-${span?.spanContext().spanId}-01`,
    });
    expect(Math.abs((seen.deadline ?? 0) - deadline.getTime())).toBeLessThan(1000);
    expect(seen.aborted).toBe(false);
    expect(await okCalls()).toBe(before + 1);
  });
});

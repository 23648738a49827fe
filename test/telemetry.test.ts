/**
 * Telemetry (contract §2, §9): ioredis commands are traced on every
 * connection, stream readers' duplicates included; Redis command durations
 * reach `gateway_redis_command_duration_seconds`; exporters exist only when
 * `OTEL_*` variables ask for them.
 */
import { spawn } from "node:child_process";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { traceHeadersOf, withHttpSpan } from "../runtime/grpc/tracing.js";
import { createMetrics } from "../runtime/telemetry/metrics.js";
import {
  observeRedisCommands,
  startTelemetry,
  type Telemetry,
} from "../runtime/telemetry/telemetry.js";
import { metricValue } from "./support/push.js";
import type { TestRedis } from "./support/redis-server.js";

const exporter = new InMemorySpanExporter();
let telemetry: Telemetry;
let redis: TestRedis;
let client: Redis;
const opened: Redis[] = [];

beforeAll(async () => {
  telemetry = startTelemetry({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  // ioredis must load after the SDK started. vitest imports packages by file
  // path, which the ESM hook does not match, so this file loads it through
  // `require` (the instrumentation's CommonJS hook) before anything imports
  // it; the `node --import` tests below cover the ESM hook.
  createRequire(import.meta.url)("ioredis");
  const { startRedis } = await import("./support/redis-server.js");
  redis = await startRedis();
  client = redis.client();
  opened.push(client);
});

afterAll(async () => {
  for (const connection of opened) connection.disconnect();
  await redis?.stop();
  await telemetry?.shutdown();
});

function spansNamed(name: string) {
  return exporter.getFinishedSpans().filter((span) => span.name === name);
}

describe("ioredis tracing", () => {
  it("records a client span for a command sent outside any span", async () => {
    exporter.reset();
    await client.set("telemetry:key", "value");

    const [span] = spansNamed("set");
    expect(span).toBeDefined();
    expect(span?.kind).toBe(SpanKind.CLIENT);
    expect(span?.parentSpanContext).toBeUndefined();
    expect(span?.attributes["db.system.name"]).toBe("redis");
    expect(span?.attributes["server.port"]).toBe(redis.port);
  });

  // ioredis 6 authenticates inside HELLO: its arguments must not reach a span.
  it("never puts the Redis password in a span", async () => {
    exporter.reset();
    const fresh = redis.client();
    opened.push(fresh);
    await fresh.ping();

    const names = exporter.getFinishedSpans().map((span) => span.name);
    expect(names).toContain("hello");
    expect(
      JSON.stringify(exporter.getFinishedSpans().map((span) => span.attributes)),
    ).not.toContain(redis.password);
  });

  // A stream reader blocks on its own duplicate() connection, with no
  // parent span: its XREADs must be traced too.
  it("records commands on a duplicate() connection with no parent span", async () => {
    const reader = client.duplicate();
    opened.push(reader);
    await client.xadd("telemetry:stream", "*", "field", "value");
    exporter.reset();

    const entries = await reader.xread(
      "COUNT",
      10,
      "BLOCK",
      100,
      "STREAMS",
      "telemetry:stream",
      "0-0",
    );

    expect(entries).toHaveLength(1);
    const [span] = spansNamed("xread");
    expect(span?.parentSpanContext).toBeUndefined();
    expect(span?.attributes["db.query.text"]).toMatch(/^xread /);
  });

  it("makes a command sent inside an active span its child", async () => {
    exporter.reset();
    const parent = await telemetry.tracer.startActiveSpan("parent", async (span) => {
      await client.get("telemetry:key");
      span.end();
      return span;
    });

    const [get] = spansNamed("get");
    expect(get?.spanContext().traceId).toBe(parent.spanContext().traceId);
    expect(get?.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
  });
});

describe("observeRedisCommands", () => {
  /** How many `command` durations `metrics` holds. */
  async function observations(metrics: ReturnType<typeof createMetrics>, command: string) {
    const { values } = await metrics.redisCommandDuration.get();
    return (
      values.find(
        (value) => value.metricName?.endsWith("_count") && value.labels.command === command,
      )?.value ?? 0
    );
  }

  it("records each command's duration by command, on duplicates too", async () => {
    const metrics = createMetrics();
    const observedClient = observeRedisCommands(redis.client(), metrics.redisCommandDuration);
    opened.push(observedClient);
    const duplicate = observedClient.duplicate();
    opened.push(duplicate);

    await observedClient.set("telemetry:observed", "1");
    await observedClient.get("telemetry:observed");
    await observedClient.get("telemetry:observed");
    await duplicate.xadd("telemetry:observed-stream", "*", "field", "value");
    await expect(observedClient.xadd("telemetry:observed", "*", "f", "v")).rejects.toThrow(
      /WRONGTYPE/,
    );

    expect(await observations(metrics, "set")).toBe(1);
    expect(await observations(metrics, "get")).toBe(2);
    // one on the duplicate, one failed on the observed client
    expect(await observations(metrics, "xadd")).toBe(2);
    const text = await metrics.registry.getSingleMetricAsString(
      "gateway_redis_command_duration_seconds",
    );
    expect(text).toMatch(
      /^gateway_redis_command_duration_seconds_bucket\{le="0.005",command="get"\} \d+$/m,
    );
  });

  // ioredis sends a command again when it flushes its offline queue.
  it("counts a command once when ioredis queues it and sends it later", async () => {
    const metrics = createMetrics();
    const { Redis: RedisClient } = await import("ioredis");
    const lazy = new RedisClient({
      host: redis.host,
      port: redis.port,
      password: redis.password,
      lazyConnect: true,
    });
    opened.push(lazy);
    observeRedisCommands(lazy, metrics.redisCommandDuration);
    observeRedisCommands(lazy, metrics.redisCommandDuration);

    await lazy.get("telemetry:observed");
    await lazy.ping();

    expect(await observations(metrics, "get")).toBe(1);
  });
});

describe("event-loop delay metrics", () => {
  // RUNBOOK §12: the delay is sampled every 50 ms, so a stall of 50 ms or
  // more always shows, as at least its length less 50 ms.
  it("show a 200 ms stall in nodejs_eventloop_lag_max_seconds as at least 150 ms", async () => {
    const metrics = createMetrics();
    await metrics.registry.metrics(); // each scrape starts the figures afresh
    await new Promise((resolve) => setTimeout(resolve, 120));
    const stalledUntil = performance.now() + 200;
    while (performance.now() < stalledUntil) {
      // The event loop is blocked: no timer fires.
    }
    await new Promise((resolve) => setTimeout(resolve, 120));
    const text = await metrics.registry.metrics();
    expect(metricValue(text, "nodejs_eventloop_lag_max_seconds")).toBeGreaterThanOrEqual(0.15);
  });
});

describe("withHttpSpan", () => {
  const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

  it("wraps a request in a SERVER span that continues its traceparent", async () => {
    exporter.reset();
    const headers = new Headers({ traceparent });

    const response = await withHttpSpan(
      { route: "/api/v1/public/auth/send-email-code", method: "post", headers },
      async () => Response.json(traceHeadersOf(), { status: 503 }),
    );

    const [span] = spansNamed("POST /api/v1/public/auth/send-email-code");
    expect(span?.kind).toBe(SpanKind.SERVER);
    expect(span?.parentSpanContext?.spanId).toBe("00f067aa0ba902b7");
    expect(span?.attributes).toMatchObject({
      "http.request.method": "POST",
      "http.route": "/api/v1/public/auth/send-email-code",
      "http.response.status_code": 503,
    });
    expect(span?.status.code).toBe(SpanStatusCode.ERROR);
    // the handler runs inside the span
    expect(await response.json()).toEqual({
      traceparent: `00-4bf92f3577b34da6a3ce929d0e0e4736-${span?.spanContext().spanId}-01`,
    });
  });

  it("records the status of an HTTP error the handler throws", async () => {
    exporter.reset();
    const notFound = Object.assign(new Error("not found"), { status: 404 });

    await expect(
      withHttpSpan({ route: "/healthz", method: "GET", headers: new Headers() }, () => {
        throw notFound;
      }),
    ).rejects.toBe(notFound);

    const [span] = spansNamed("GET /healthz");
    expect(span?.parentSpanContext).toBeUndefined();
    expect(span?.attributes["http.response.status_code"]).toBe(404);
    expect(span?.status.code).toBe(SpanStatusCode.UNSET);
  });
});

/** What one `node --import runtime/telemetry/register` child saw and sent. */
interface ChildReport {
  /** Ports it opened TCP connections to. */
  connectedPorts: number[];
}

/**
 * Runs a child process that loads telemetry with `--import`, as the bin
 * does, sends Redis commands on a client and a duplicate, emits an
 * OpenTelemetry metric and log, then shuts telemetry down (flushing).
 */
async function runChild(env: Record<string, string>): Promise<ChildReport> {
  const script = `
    import net from "node:net";
    const connectedPorts = [];
    const connect = net.Socket.prototype.connect;
    net.Socket.prototype.connect = function (...args) {
      const first = Array.isArray(args[0]) ? args[0][0] : args[0];
      connectedPorts.push(Number(typeof first === "object" ? first.port : first));
      return connect.apply(this, args);
    };
    const { metrics } = await import("@opentelemetry/api");
    const { logs } = await import("@opentelemetry/api-logs");
    const { Redis } = await import("ioredis");
    const { startTelemetry } = await import("./runtime/telemetry/telemetry.ts");
    const client = new Redis({ host: "127.0.0.1", port: ${redis.port}, password: ${JSON.stringify(redis.password)} });
    const reader = client.duplicate();
    await client.set("child:key", "v");
    await reader.xread("COUNT", 1, "STREAMS", "child:stream", "0-0");
    metrics.getMeter("child").createCounter("child_counter").add(1);
    logs.getLogger("child").emit({ body: "child log" });
    client.disconnect();
    reader.disconnect();
    await startTelemetry().shutdown();
    process.stdout.write(JSON.stringify({ connectedPorts }));
  `;
  const childEnv: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith("OTEL_") && value !== undefined) childEnv[name] = value;
  }
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "--import",
      "./runtime/telemetry/register.ts",
      "--input-type=module",
      "-e",
      script,
    ],
    { cwd: new URL("..", import.meta.url), env: { ...childEnv, ...env } },
  );
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => {
    stdout += chunk;
  });
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
  });
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  if (code !== 0) throw new Error(`child exited with ${code}: ${stderr}`);
  return JSON.parse(stdout) as ChildReport;
}

interface Received {
  path: string;
  body: string;
}

async function startCollector(): Promise<{ server: Server; port: number; received: Received[] }> {
  const received: Received[] = [];
  const server = createServer((request: IncomingMessage, response) => {
    let body = "";
    request.on("data", (chunk) => {
      body += chunk;
    });
    request.on("end", () => {
      received.push({ path: request.url ?? "", body });
      response.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as AddressInfo).port, received };
}

describe("telemetry under node --import", () => {
  it("exports nothing and connects nowhere but Redis with no OTEL_* variables", async () => {
    const report = await runChild({});

    expect(new Set(report.connectedPorts)).toEqual(new Set([redis.port]));
  });

  it("exports Redis spans, and only traces, to the OTLP endpoint OTEL_* names", async () => {
    const collector = await startCollector();
    try {
      const report = await runChild({
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collector.port}`,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      });

      expect(new Set(report.connectedPorts)).toEqual(new Set([redis.port, collector.port]));
      expect(new Set(collector.received.map((request) => request.path))).toEqual(
        new Set(["/v1/traces"]),
      );
      const exported = collector.received.map((request) => request.body).join("\n");
      expect(exported).toContain('"name":"set"');
      expect(exported).toContain('"name":"xread"');
      expect(exported).toContain('"stringValue":"edge-gateway"');
    } finally {
      await new Promise((resolve) => collector.server.close(resolve));
    }
  });
});

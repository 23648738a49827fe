/**
 * Process-wide OpenTelemetry tracing: the NodeSDK with W3C trace context
 * propagation and the ioredis instrumentation, exporting only what the
 * standard `OTEL_*` variables ask for. Loaded only when they ask for an
 * export (see `requested.ts`). Re-exports the per-client Redis command
 * duration hook, which works with or without tracing.
 */
import { register } from "node:module";
import { context, metrics, propagation, type Tracer, trace } from "@opentelemetry/api";
import { IORedisInstrumentation } from "@opentelemetry/instrumentation-ioredis";
import { core, NodeSDK, type NodeSDKConfiguration } from "@opentelemetry/sdk-node";
import { otelSetting as setting, tracesRequested } from "./requested.js";

export { observeRedisCommands, type RedisCommandHistogram } from "./ioredis-command-timing.js";

/** A span processor, as the NodeSDK takes them. */
export type SpanProcessor = NonNullable<NodeSDKConfiguration["spanProcessors"]>[number];

/** Options of {@link startTelemetry}. */
export interface TelemetryOptions {
  /** `service.name` of every span, unless `OTEL_SERVICE_NAME` says otherwise. Default `edge-gateway`. */
  readonly serviceName?: string;
  /**
   * Span processors to use instead of the exporters the environment asks for
   * (tests pass an in-memory exporter here).
   */
  readonly spanProcessors?: readonly SpanProcessor[];
}

/** The process's running telemetry. */
export interface Telemetry {
  /** The gateway's tracer. */
  readonly tracer: Tracer;
  /** Flushes every pending span and stops the SDK; safe to call twice. */
  shutdown(): Promise<void>;
}

let running: Telemetry | undefined;
let hooksRegistered = false;

/**
 * Registers the ESM loader hook through which the ioredis instrumentation
 * patches ioredis when it is `import`ed. Only modules loaded after this call
 * are patched, so it must run before the application's modules load (that is
 * what `runtime/telemetry/register` does under `node --import`). Idempotent.
 */
export function registerInstrumentationHooks(): void {
  if (hooksRegistered) return;
  hooksRegistered = true;
  // Only ioredis goes through the hook: every other module loads untouched.
  register("import-in-the-middle/hook.mjs", import.meta.url, {
    data: { include: ["ioredis"] },
  });
}

/**
 * Starts the OpenTelemetry SDK for this process, or returns the telemetry
 * already running (OpenTelemetry's globals admit one SDK per process).
 *
 * Traces are exported only when `OTEL_TRACES_EXPORTER` names an exporter or an
 * OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
 * is set; OpenTelemetry metrics and logs only when `OTEL_METRICS_EXPORTER` or
 * `OTEL_LOGS_EXPORTER` is set. With none of them set nothing is exported and
 * nothing connects anywhere. Propagation is W3C trace context unless
 * `OTEL_PROPAGATORS` says otherwise. Every ioredis command is traced, also on
 * connections with no active span (stream readers).
 *
 * @example
 * const telemetry = startTelemetry();
 * // ... on shutdown, last:
 * await telemetry.shutdown();
 */
export function startTelemetry(options: TelemetryOptions = {}): Telemetry {
  if (running !== undefined) return running;
  const serviceName = options.serviceName ?? "edge-gateway";
  const ioredis = new IORedisInstrumentation({ requireParentSpan: false });
  const sdk = new NodeSDK({
    serviceName: setting("OTEL_SERVICE_NAME") === undefined ? serviceName : undefined,
    instrumentations: [ioredis],
    textMapPropagator:
      setting("OTEL_PROPAGATORS") === undefined ? new core.W3CTraceContextPropagator() : undefined,
    spanProcessors:
      options.spanProcessors !== undefined
        ? [...options.spanProcessors]
        : tracesRequested()
          ? undefined // the SDK builds the exporters OTEL_* names
          : [],
    metricReaders: setting("OTEL_METRICS_EXPORTER") === undefined ? [] : undefined,
    logRecordProcessors: setting("OTEL_LOGS_EXPORTER") === undefined ? [] : undefined,
  });
  sdk.start();

  let stopped: Promise<void> | undefined;
  const telemetry: Telemetry = {
    tracer: trace.getTracer(serviceName),
    shutdown() {
      stopped ??= sdk.shutdown().finally(() => {
        ioredis.disable();
        // Leaves the process as it was, so telemetry can be started again.
        trace.disable();
        context.disable();
        propagation.disable();
        metrics.disable();
        if (running === telemetry) running = undefined;
      });
      return stopped;
    },
  };
  running = telemetry;
  return telemetry;
}

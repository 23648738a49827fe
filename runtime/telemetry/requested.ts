/**
 * Whether the standard `OTEL_*` variables ask for any export. The gateway
 * loads and starts OpenTelemetry only when they do: with none set nothing
 * would be exported, and the SDK, its context tracking and the loader hook
 * would cost memory and per-call time for nothing.
 */

/** The variable's trimmed value, or `undefined` when it is unset or blank. */
export function otelSetting(
  name: string,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === "" ? undefined : value;
}

/**
 * True when traces are to be exported: `OTEL_TRACES_EXPORTER` names an
 * exporter, or an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`,
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
 */
export function tracesRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  return (
    otelSetting("OTEL_TRACES_EXPORTER", env) !== undefined ||
    otelSetting("OTEL_EXPORTER_OTLP_ENDPOINT", env) !== undefined ||
    otelSetting("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", env) !== undefined
  );
}

/**
 * True when any telemetry is to be exported: traces (see {@link tracesRequested}),
 * or OpenTelemetry metrics or logs (`OTEL_METRICS_EXPORTER`, `OTEL_LOGS_EXPORTER`).
 */
export function telemetryRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  return (
    tracesRequested(env) ||
    otelSetting("OTEL_METRICS_EXPORTER", env) !== undefined ||
    otelSetting("OTEL_LOGS_EXPORTER", env) !== undefined
  );
}

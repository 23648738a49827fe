/**
 * Starts telemetry before the application loads:
 * `node --import ./dist/runtime/telemetry/register.js dist/runtime/bin.js`.
 * When the `OTEL_*` variables ask for an export, it registers the ESM loader
 * hook the ioredis instrumentation needs and starts the SDK, so ioredis is
 * instrumented when the application imports it; `startTelemetry()` later in
 * the process returns this same telemetry. With none of them set it loads
 * nothing: no hook thread, no SDK.
 */
import { telemetryRequested } from "./requested.js";

if (telemetryRequested()) {
  const { registerInstrumentationHooks, startTelemetry } = await import("./telemetry.js");
  registerInstrumentationHooks();
  startTelemetry();
}

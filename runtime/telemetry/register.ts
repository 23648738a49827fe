/**
 * Starts telemetry before the application loads:
 * `node --import ./dist/runtime/telemetry/register.js dist/runtime/bin.js`.
 * It registers the ESM loader hook the ioredis instrumentation needs and
 * starts the SDK, so ioredis is instrumented when the application imports it.
 * `startTelemetry()` later in the process returns this same telemetry.
 */
import { registerInstrumentationHooks, startTelemetry } from "./telemetry.js";

registerInstrumentationHooks();
startTelemetry();

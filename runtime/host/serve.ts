/**
 * The gateway process behind the bin: builds the host from the environment,
 * traps SIGTERM and SIGINT for the ordered shutdown, and sets the exit code.
 */
import { loadConfig } from "../config/config.js";
import { createLogger } from "../telemetry/logger.js";
import { telemetryRequested } from "../telemetry/requested.js";
import { createGateway } from "./gateway.js";
import { trapShutdownSignals } from "./signals.js";

/** Runs the gateway until a signal; exits the process with the §10 exit codes. */
export async function serve(): Promise<void> {
  const early = createLogger(process.env.GATEWAY_LOG_LEVEL);
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(process.env);
  } catch (error) {
    early.error(`startup failed: ${(error as Error).message}`);
    process.exit(1);
  }
  const logger = createLogger(config.logLevel);

  // The SDK loads only when OTEL_* asks for an export: otherwise it would cost
  // memory and per-call time to export nothing.
  const telemetry = telemetryRequested()
    ? (await import("../telemetry/telemetry.js")).startTelemetry()
    : undefined;
  // createGateway loads GATEWAY_ROUTES_MODULE itself.
  const gateway = createGateway({ config, logger, telemetry });
  trapShutdownSignals({ logger, what: "shutting down", stop: () => gateway.stop() });
  try {
    await gateway.start();
  } catch (error) {
    logger.error(`startup failed: ${(error as Error).message}`);
    process.exit(1);
  }
}

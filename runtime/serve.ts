/**
 * The gateway process behind the bin: builds the host from the environment,
 * traps SIGTERM and SIGINT for the ordered shutdown, and sets the exit code.
 */
import { loadConfig } from "./config.js";
import { createGateway } from "./gateway.js";
import { createLogger } from "./logger.js";
import { loadRoutesModule } from "./routes-module.js";
import { startTelemetry } from "./telemetry.js";

/** Runs the gateway until a signal; exits the process with the §10 exit codes. */
export async function serve(): Promise<void> {
  const early = createLogger((process.env.GATEWAY_LOG_LEVEL as "info" | undefined) || "info");
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(process.env);
  } catch (error) {
    early.error(`startup failed: ${(error as Error).message}`);
    process.exit(1);
  }
  const logger = createLogger(config.logLevel);

  let signals = 0;
  let gateway: ReturnType<typeof createGateway> | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      logger.warn(`${signal} again: exiting at once`);
      process.exit(130);
    }
    logger.info(`${signal} received: shutting down`);
    (gateway?.stop() ?? Promise.resolve()).then(
      () => {
        logger.info("shutdown complete");
        process.exit(0);
      },
      (error: unknown) => {
        logger.error("shutdown failed", error);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);

  try {
    const routes = config.routesModule ? await loadRoutesModule(config.routesModule) : undefined;
    gateway = createGateway({ config, routes, logger, telemetry: startTelemetry() });
    await gateway.start();
  } catch (error) {
    logger.error(`startup failed: ${(error as Error).message}`);
    process.exit(1);
  }
}

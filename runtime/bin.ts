#!/usr/bin/env node
import { loadConfig } from "./config.js";
/**
 * The gateway process: builds the host from the environment, traps SIGTERM
 * and SIGINT for the ordered shutdown, and sets the exit code.
 */
import { createGateway } from "./gateway.js";
import { createLogger } from "./logger.js";
import { loadRoutesModule } from "./routes-module.js";

async function serve(): Promise<void> {
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
    gateway = createGateway({ config, routes, logger });
    await gateway.start();
  } catch (error) {
    logger.error(`startup failed: ${(error as Error).message}`);
    process.exit(1);
  }
}

const [command, ...args] = process.argv.slice(2);
if (command === undefined || command === "serve") {
  await serve();
} else if (command === "dev") {
  const { runDev } = await import("./dev.js");
  await runDev().catch((error: unknown) => {
    createLogger("info").error(`dev mode failed: ${(error as Error).message}`);
    process.exit(1);
  });
} else {
  const { runCli } = await import("./cli.js");
  process.exit(await runCli([command, ...args]));
}

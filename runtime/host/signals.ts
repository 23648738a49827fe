/** SIGTERM/SIGINT handling shared by the gateway process and dev mode (contract §10). */
import type { Logger } from "../../handlers/ports.js";

/**
 * Runs `stop` on the first SIGTERM or SIGINT and exits 0 (1 if it fails); a
 * second signal exits at once with 130 after `onExitNow`. Returns the handler,
 * for other events that should stop the process the same way.
 */
export function trapShutdownSignals(options: {
  readonly logger: Logger;
  /** Logged with the first signal: `SIGTERM received: <what>`. */
  readonly what: string;
  readonly stop: () => Promise<unknown>;
  readonly onExitNow?: () => void;
}): (signal: NodeJS.Signals) => void {
  const { logger } = options;
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      logger.warn(`${signal} again: exiting at once`);
      options.onExitNow?.();
      process.exit(130);
    }
    logger.info(`${signal} received: ${options.what}`);
    options.stop().then(
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
  return onSignal;
}

/** The gateway's consola logger. */
import { createConsola } from "consola";
import type { Logger } from "../handlers/ports.js";

const LEVELS = { error: 0, warn: 1, info: 3, debug: 4 } as const;

/** Creates the process logger at a configured level (`GATEWAY_LOG_LEVEL`). */
export function createLogger(level: keyof typeof LEVELS = "info"): Logger {
  return createConsola({ level: LEVELS[level] }).withTag("edge-gateway");
}

/** The gateway's consola logger. */
import { createConsola } from "consola";
import type { Logger } from "../../handlers/ports.js";

const LEVELS = { error: 0, warn: 1, info: 3, debug: 4 } as const;

/**
 * Creates the process logger at a `GATEWAY_LOG_LEVEL` level; anything else
 * (unset, or not yet validated) logs at `info`.
 */
export function createLogger(level?: string): Logger {
  const value = Object.hasOwn(LEVELS, level ?? "") ? LEVELS[level as keyof typeof LEVELS] : 3;
  return createConsola({ level: value }).withTag("edge-gateway");
}

/** A logger that drops everything (CLI tools that report on their own). */
export const SILENT_LOGGER: Logger = { debug() {}, info() {}, warn() {}, error() {} };

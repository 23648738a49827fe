/**
 * A logger that holds its lines back until released: dev mode's startup log
 * waits behind the device console's URL, so the URL is the first line a
 * developer sees.
 */
import type { Logger } from "../../handlers/ports.js";

/** A {@link Logger} whose lines wait until {@link HeldLogger.release}. */
export interface HeldLogger extends Logger {
  /** Writes the held lines in order; from then on every line goes straight through. */
  release(): void;
}

type Level = keyof Logger;

/** Holds the lines logged through it until `release()`, then writes them to `logger`. */
export function holdLogLines(logger: Logger): HeldLogger {
  let held: [Level, string, unknown[]][] | undefined = [];
  const at =
    (level: Level) =>
    (message: string, ...args: unknown[]) => {
      if (held) held.push([level, message, args]);
      else logger[level](message, ...args);
    };
  return {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    release() {
      const lines = held ?? [];
      held = undefined;
      for (const [level, message, args] of lines) logger[level](message, ...args);
    },
  };
}

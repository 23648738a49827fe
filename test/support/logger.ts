/** Loggers for tests: recording ones for assertions, and one that drops everything; none prints. */
import type { Logger } from "../../handlers/ports.js";

/** One call made to a captured logger. */
export interface LogLine {
  readonly level: keyof Logger;
  readonly message: string;
  readonly args: unknown[];
}

/** A captured logger and what it has recorded so far (the arrays grow as it logs). */
export interface CapturedLogger {
  /** The logger to hand to the code under test. */
  readonly logger: Logger;
  /** Every call, in order. */
  readonly lines: LogLine[];
  /** The message of every `warn` call, in order. */
  readonly warnings: string[];
  /** The message of every `error` call, in order. */
  readonly errors: string[];
}

function recordingLogger(record: (line: LogLine) => void): Logger {
  const at =
    (level: keyof Logger) =>
    (message: string, ...args: unknown[]): void => {
      record({ level, message, args });
    };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/** A logger that records each call with its level, message and arguments. */
export function captureLogger(): CapturedLogger {
  const lines: LogLine[] = [];
  const warnings: string[] = [];
  const errors: string[] = [];
  const logger = recordingLogger((line) => {
    lines.push(line);
    if (line.level === "warn") warnings.push(line.message);
    if (line.level === "error") errors.push(line.message);
  });
  return { logger, lines, warnings, errors };
}

/** A logger that records each call as one line of text: the level, the message, then the arguments. */
export function createMemoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const logger = recordingLogger(({ level, message, args }) => {
    lines.push(
      `${level} ${[message, ...args.map((arg) => (arg instanceof Error ? arg.message : String(arg)))].join(" ")}`,
    );
  });
  return Object.assign(logger, { lines });
}

/** A logger that drops everything, for code whose logs a test does not look at. */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

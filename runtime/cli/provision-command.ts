/**
 * `edge-gateway infra provision [--check] [--trim] [--max-len N]`, also run as
 * `node --import tsx infra/provision-redis.ts`: reads the gateway's own
 * environment (`GATEWAY_REDIS_*` and the two stream variables, parsed by the
 * same rules as the gateway), runs {@link provisionRedis} and prints its report.
 */
import { parseArgs } from "node:util";
import {
  ConfigError,
  formatAddress,
  loadRedisToolConfig,
  type RedisToolConfig,
  redactSecret,
} from "../config/config.js";
import { DEFAULTS } from "../config/defaults.js";
import { connectRedis, type RedisClient } from "../redis/connection.js";
import { type ProvisionLog, provisionRedis } from "../redis/provision.js";
import { SILENT_LOGGER } from "../telemetry/logger.js";
import { type CliIo, PROCESS_IO } from "./io.js";

/** Bound of each provisioning command: `XTRIM` on a long stream takes longer than a request-path command. */
const PROVISION_COMMAND_TIMEOUT_MS = 30_000;

const USAGE = `Usage: provision-redis [--check] [--trim] [--max-len N]

Prepares the Redis the edge gateway uses, reading the gateway's environment
(GATEWAY_REDIS_MASTER_ADDR, GATEWAY_REDIS_PASSWORD, GATEWAY_REDIS_DB,
GATEWAY_SESSION_EVENTS_REDIS_STREAM, GATEWAY_CLIENT_EVENTS_REDIS_STREAM, ...):
creates a missing stream key as an empty stream, fails on a key of another
type, reports each stream's length and first/last id, and warns unless
maxmemory-policy is noeviction.

  --check       only inspect: change nothing; a missing stream is a failure
  --trim        apply XTRIM <key> MAXLEN ~ N to each stream once
  --max-len N   the retention to report and trim to (default ${DEFAULTS.streamMaxLen})
  -h, --help    show this help

Exit status: 0 when both keys are streams, 1 on any failure, 2 on bad usage.`;

/** What the command line asks for, once its arguments are valid. */
interface ProvisionArgs {
  readonly check: boolean;
  readonly trim: boolean;
  readonly maxLen: number;
}

/** The arguments, or the exit code when they end the run (help: 0, bad usage: 2). */
function parseProvisionArgs(argv: readonly string[], io: CliIo): ProvisionArgs | number {
  let values: { check?: boolean; trim?: boolean; "max-len"?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        check: { type: "boolean" },
        trim: { type: "boolean" },
        "max-len": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    io.stderr(`error: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout(USAGE);
    return 0;
  }
  const maxLenText = values["max-len"];
  const maxLen = maxLenText === undefined ? DEFAULTS.streamMaxLen : Number(maxLenText);
  if (maxLenText !== undefined && !(/^\d+$/.test(maxLenText) && maxLen >= 1)) {
    io.stderr(`error: --max-len expects a positive integer, got "${maxLenText}"`);
    return 2;
  }
  if (values.check && values.trim) {
    io.stderr("error: --check changes nothing, so it cannot be combined with --trim");
    return 2;
  }
  return { check: values.check === true, trim: values.trim === true, maxLen };
}

/**
 * The command line: parses `argv` (without node and script), reads the
 * configuration from `env`, runs {@link provisionRedis} and resolves with the
 * exit code. The Redis password never appears in its output.
 *
 * @example
 * process.exitCode = await runProvisionCli(["--check"]);
 */
export async function runProvisionCli(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>> = process.env,
  io: CliIo = PROCESS_IO,
): Promise<number> {
  const args = parseProvisionArgs(argv, io);
  if (typeof args === "number") return args;

  // The gateway's own parser, limited to the Redis and stream variables: the
  // same rules (deprecated variables fail, empty means unset), and variables
  // the provisioner does not use cannot fail it.
  let config: RedisToolConfig;
  try {
    config = loadRedisToolConfig(env);
  } catch (error) {
    const message = error instanceof ConfigError ? error.message : "invalid configuration";
    io.stderr(`error: ${message}`);
    return 1;
  }

  const scrub = (line: string) => redactSecret(line, config.redis.password);
  const log: ProvisionLog = {
    info: (line) => io.stdout(scrub(line)),
    warn: (line) => io.stderr(scrub(`WARNING: ${line}`)),
    error: (line) => io.stderr(scrub(`error: ${line}`)),
  };

  const address = formatAddress(config.redis.master);
  log.info(
    `redis ${address} db ${config.redis.db}${args.check ? " (check only: nothing will be changed)" : ""}`,
  );
  // The gateway's own fail-closed connection and bounded PING, with a
  // longer bound on the (few, possibly slow) provisioning commands.
  let redis: RedisClient;
  try {
    redis = await connectRedis(
      { ...config.redis, commandTimeoutMs: PROVISION_COMMAND_TIMEOUT_MS },
      SILENT_LOGGER,
    );
  } catch (error) {
    log.error(`cannot reach Redis at ${address}: ${(error as Error).message}`);
    return 1;
  }

  try {
    const report = await provisionRedis(redis, {
      sessionEventsStream: config.sessionEventsStream,
      clientEventsStream: config.clientEventsStream,
      ...args,
      log,
    });
    if (report.ok) {
      log.info(
        report.warnings.length === 0 ? "ok" : `ok, with ${report.warnings.length} warning(s) above`,
      );
      return 0;
    }
    log.error(`failed: ${report.errors.length} problem(s) above`);
    return 1;
  } finally {
    redis.disconnect();
  }
}

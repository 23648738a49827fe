/**
 * Prepares (or, with `--check`, only inspects) the Redis the gateway uses:
 * both stream keys exist and are streams, their length and first/last ids,
 * the retention publishers apply, and `maxmemory-policy`.
 *
 * Run it with the gateway's own environment (`GATEWAY_REDIS_*` and the two
 * stream variables, parsed by the same rules as the gateway):
 *
 *     node --import tsx infra/provision-redis.ts [--check] [--trim] [--max-len N]
 *
 * A missing stream is created empty with `XGROUP CREATE <key> <group> $ MKSTREAM`
 * followed by `XGROUP DESTROY` in one `MULTI`: the key then exists as an empty
 * stream whose last id is `0-0`, no entry was ever added (so no reader can see
 * a placeholder, and `entries-added` stays 0), and no consumer group is left
 * behind. `XADD` + `XDEL` of a placeholder would instead advance the stream's
 * last id and its `entries-added` counter, and a reader blocked on the key
 * could be woken for an entry that is gone.
 */
import { realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import type { Redis } from "ioredis";
import { type CliIo, PROCESS_IO } from "../runtime/cli/io.js";
import {
  ConfigError,
  formatAddress,
  loadRedisToolConfig,
  type RedisToolConfig,
  redactSecret,
} from "../runtime/config/config.js";
import { connectRedis } from "../runtime/redis/connection.js";
import { SILENT_LOGGER } from "../runtime/telemetry/logger.js";

/** The approximate `MAXLEN` publishers pass to `XADD`, and the default `--max-len`. */
export const DEFAULT_STREAM_MAX_LEN = 100_000;

/** Bound of each provisioning command: `XTRIM` on a long stream takes longer than a request-path command. */
const PROVISION_COMMAND_TIMEOUT_MS = 30_000;

/** Where the provisioner's report lines go. */
export interface ProvisionLog {
  /** A progress or report line. */
  info(line: string): void;
  /** Something that works now but puts the gateway's guarantees at risk. */
  warn(line: string): void;
  /** A failed check or command; the run then fails. */
  error(line: string): void;
}

/** Options of one provisioning run. */
export interface ProvisionOptions {
  readonly sessionEventsStream: string;
  readonly clientEventsStream: string;
  /** Only inspect: create nothing, trim nothing, fail on a missing stream. */
  readonly check?: boolean;
  /** Apply `XTRIM <key> MAXLEN ~ maxLen` to each stream once. */
  readonly trim?: boolean;
  /** The retention reported and, with `trim`, applied; defaults to 100000. */
  readonly maxLen?: number;
  readonly log?: ProvisionLog;
}

/** What one stream key looked like after the run. */
export interface StreamReport {
  /** Which reader consumes it. */
  readonly role: "session events" | "client events";
  readonly key: string;
  /** `created` only outside `--check`; `missing` only in `--check`. */
  readonly state: "exists" | "created" | "missing" | "wrong_type" | "failed";
  /** The Redis type found when it is not a stream. */
  readonly type?: string;
  readonly length?: number;
  /** Id of the oldest entry still held; `undefined` for an empty stream. */
  readonly firstId?: string;
  /** Id of the newest entry still held; `undefined` for an empty stream. */
  readonly lastId?: string;
  /** The id a reader starting now resolves its cursor to (`0-0` for a never-used stream). */
  readonly lastGeneratedId?: string;
  /** Entries removed by `--trim`. */
  readonly trimmed?: number;
}

/** The outcome of one provisioning run. */
export interface ProvisionReport {
  /** No error: both keys are streams (created if needed, outside `--check`). */
  readonly ok: boolean;
  readonly streams: readonly StreamReport[];
  /** `undefined` when `CONFIG GET` was refused. */
  readonly maxmemoryPolicy: string | undefined;
  readonly warnings: readonly string[];
  readonly errors: readonly string[];
}

const SILENT: ProvisionLog = { info() {}, warn() {}, error() {} };

/**
 * Ensures both stream keys exist as streams (creating a missing one empty),
 * reports each stream, the retention and `maxmemory-policy`, and with `trim`
 * trims each stream once. In `check` mode it sends no write command. Resolves
 * with a report whose `ok` is false on any failure; never rejects for a Redis
 * error, which becomes part of the report.
 *
 * @example
 * const report = await provisionRedis(redis, {
 *   sessionEventsStream: "gateway:session_events",
 *   clientEventsStream: "gateway:client_events",
 * });
 * if (!report.ok) process.exitCode = 1;
 */
export async function provisionRedis(
  redis: Redis,
  options: ProvisionOptions,
): Promise<ProvisionReport> {
  const log = options.log ?? SILENT;
  const maxLen = options.maxLen ?? DEFAULT_STREAM_MAX_LEN;
  const check = options.check === true;
  const trim = options.trim === true && !check;
  const warnings: string[] = [];
  const errors: string[] = [];
  const warn = (line: string) => {
    warnings.push(line);
    log.warn(line);
  };
  const fail = (line: string) => {
    errors.push(line);
    log.error(line);
  };

  const targets = [
    { role: "session events", key: options.sessionEventsStream },
    { role: "client events", key: options.clientEventsStream },
  ] as const;
  if (targets[0].key === targets[1].key) {
    fail(
      `GATEWAY_SESSION_EVENTS_REDIS_STREAM and GATEWAY_CLIENT_EVENTS_REDIS_STREAM both name ${targets[0].key}: each reader needs its own stream`,
    );
  }

  const streams: StreamReport[] = [];
  for (const { role, key } of targets) {
    if (streams.some((stream) => stream.key === key)) continue;
    let report: StreamReport;
    try {
      report = await provisionStream(redis, { role, key, check, trim, maxLen });
    } catch (error) {
      report = { role, key, state: "failed" };
      fail(`stream ${key} (${role}): ${(error as Error).message}`);
    }
    streams.push(report);
    if (report.state === "missing") {
      fail(
        `stream ${key} (${role}) does not exist; run without --check to create it, or let a publisher write to it first`,
      );
    } else if (report.state === "wrong_type") {
      fail(
        `key ${key} holds a ${report.type}, not a stream: the ${role} reader cannot read it. Find out what wrote it, then rename or delete it and run again (the key was left as it is)`,
      );
    } else if (report.state !== "failed") {
      log.info(describeStream(report));
      if (!trim && (report.length ?? 0) > maxLen + maxLen / 10) {
        warn(
          `stream ${key} (${role}) holds ${report.length} entries, well over the ~${maxLen} publishers keep: a publisher may be adding entries without MAXLEN (run with --trim to trim once)`,
        );
      }
    }
  }

  log.info(
    `retention: ~${maxLen} entries per stream: publishers append with XADD <key> MAXLEN ~ N (the publisher helpers default to ${DEFAULT_STREAM_MAX_LEN}); the gateway never trims${
      trim
        ? `; trimmed each stream once to ~${maxLen}`
        : check
          ? ""
          : `; --trim applies XTRIM <key> MAXLEN ~ ${maxLen} once`
    }`,
  );

  let maxmemoryPolicy: string | undefined;
  try {
    maxmemoryPolicy = configValue(await redis.call("CONFIG", "GET", "maxmemory-policy"));
  } catch (error) {
    warn(
      `could not read maxmemory-policy (${(error as Error).message}): make sure this Redis runs with maxmemory-policy noeviction`,
    );
  }
  if (maxmemoryPolicy === "noeviction") {
    log.info("maxmemory-policy: noeviction");
  } else if (maxmemoryPolicy !== undefined) {
    warn(
      `maxmemory-policy is ${maxmemoryPolicy}, not noeviction: under memory pressure Redis will silently evict replay reservations (reopening replays of recent request_ids), session hashes and whole streams. Set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in the server's configuration so it survives a restart).`,
    );
  }

  return { ok: errors.length === 0, streams, maxmemoryPolicy, warnings, errors };
}

async function provisionStream(
  redis: Redis,
  target: {
    role: StreamReport["role"];
    key: string;
    check: boolean;
    trim: boolean;
    maxLen: number;
  },
): Promise<StreamReport> {
  const { role, key } = target;
  const type = String(await redis.call("TYPE", key));
  let state: StreamReport["state"] = "exists";
  if (type === "none") {
    if (target.check) return { role, key, state: "missing" };
    await createEmptyStream(redis, key);
    state = "created";
  } else if (type !== "stream") {
    return { role, key, state: "wrong_type", type };
  }

  let trimmed: number | undefined;
  if (target.trim) {
    trimmed = Number(await redis.call("XTRIM", key, "MAXLEN", "~", target.maxLen));
  }
  const info = toRecord(await redis.call("XINFO", "STREAM", key));
  return {
    role,
    key,
    state,
    length: Number(info.length ?? 0),
    firstId: entryId(info["first-entry"]),
    lastId: entryId(info["last-entry"]),
    lastGeneratedId:
      typeof info["last-generated-id"] === "string" ? info["last-generated-id"] : undefined,
    ...(trimmed === undefined ? {} : { trimmed }),
  };
}

/** Creates `key` as an empty stream with no entry ever added and no group left (see the file comment). */
async function createEmptyStream(redis: Redis, key: string): Promise<void> {
  const group = `edge-gateway-provision-${process.pid}-${Date.now()}`;
  const results = await redis
    .multi()
    .call("XGROUP", "CREATE", key, group, "$", "MKSTREAM")
    .call("XGROUP", "DESTROY", key, group)
    .exec();
  for (const [error] of results ?? []) {
    if (error) throw error;
  }
}

function describeStream(report: StreamReport): string {
  const parts = [
    `length ${report.length ?? 0}`,
    `first ${report.firstId ?? "-"}`,
    `last ${report.lastId ?? "-"}`,
    `last generated id ${report.lastGeneratedId ?? "-"}`,
  ];
  if (report.trimmed !== undefined) parts.push(`trimmed ${report.trimmed}`);
  return `stream ${report.key} (${report.role}): ${report.state}; ${parts.join(", ")}`;
}

/** `XINFO STREAM` as a record, whether the reply came as a flat list or a map. */
function toRecord(reply: unknown): Record<string, unknown> {
  if (Array.isArray(reply)) {
    const record: Record<string, unknown> = {};
    for (let index = 0; index + 1 < reply.length; index += 2) {
      record[String(reply[index])] = reply[index + 1];
    }
    return record;
  }
  if (reply instanceof Map) return Object.fromEntries(reply);
  if (typeof reply === "object" && reply !== null) return reply as Record<string, unknown>;
  return {};
}

function entryId(entry: unknown): string | undefined {
  return Array.isArray(entry) && typeof entry[0] === "string" ? entry[0] : undefined;
}

/** The value of a one-parameter `CONFIG GET` reply (flat list or map). */
function configValue(reply: unknown): string | undefined {
  const value = Object.values(toRecord(reply))[0];
  return value === undefined ? undefined : String(value);
}

const USAGE = `Usage: provision-redis [--check] [--trim] [--max-len N]

Prepares the Redis the edge gateway uses, reading the gateway's environment
(GATEWAY_REDIS_MASTER_ADDR, GATEWAY_REDIS_PASSWORD, GATEWAY_REDIS_DB,
GATEWAY_SESSION_EVENTS_REDIS_STREAM, GATEWAY_CLIENT_EVENTS_REDIS_STREAM, ...):
creates a missing stream key as an empty stream, fails on a key of another
type, reports each stream's length and first/last id, and warns unless
maxmemory-policy is noeviction.

  --check       only inspect: change nothing; a missing stream is a failure
  --trim        apply XTRIM <key> MAXLEN ~ N to each stream once
  --max-len N   the retention to report and trim to (default ${DEFAULT_STREAM_MAX_LEN})
  -h, --help    show this help

Exit status: 0 when both keys are streams, 1 on any failure, 2 on bad usage.`;

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
  const maxLen = maxLenText === undefined ? DEFAULT_STREAM_MAX_LEN : Number(maxLenText);
  if (maxLenText !== undefined && !(/^\d+$/.test(maxLenText) && maxLen >= 1)) {
    io.stderr(`error: --max-len expects a positive integer, got "${maxLenText}"`);
    return 2;
  }
  if (values.check && values.trim) {
    io.stderr("error: --check changes nothing, so it cannot be combined with --trim");
    return 2;
  }

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
    `redis ${address} db ${config.redis.db}${values.check ? " (check only: nothing will be changed)" : ""}`,
  );
  // The gateway's own fail-closed connection and bounded PING, with a
  // longer bound on the (few, possibly slow) provisioning commands.
  let redis: Redis;
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
      check: values.check === true,
      trim: values.trim === true,
      maxLen,
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

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  process.exitCode = await runProvisionCli(process.argv.slice(2));
}

/**
 * Prepares (or, with `check`, only inspects) the Redis the gateway uses:
 * both stream keys exist and are streams, their length and first/last ids,
 * the retention publishers apply, and `maxmemory-policy`. The `infra
 * provision` command, the `infra/provision-redis.ts` script and dev mode run it.
 *
 * A missing stream is created empty with `XGROUP CREATE <key> <group> $ MKSTREAM`
 * followed by `XGROUP DESTROY` in one `MULTI`: the key then exists as an empty
 * stream whose last id is `0-0`, no entry was ever added (so no reader can see
 * a placeholder, and `entries-added` stays 0), and no consumer group is left
 * behind. `XADD` + `XDEL` of a placeholder would instead advance the stream's
 * last id and its `entries-added` counter, and a reader blocked on the key
 * could be woken for an entry that is gone.
 */
import type { Cluster } from "ioredis";
import { DEFAULTS } from "../config/defaults.js";
import type { RedisClient } from "./connection.js";

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
  /** `GATEWAY_SESSION_EVENTS_REDIS_STREAM`. */
  readonly sessionEventsStream: string;
  /** `GATEWAY_CLIENT_EVENTS_REDIS_STREAM`. */
  readonly clientEventsStream: string;
  /** Only inspect: create nothing, trim nothing, fail on a missing stream. */
  readonly check?: boolean;
  /** Apply `XTRIM <key> MAXLEN ~ maxLen` to each stream once. */
  readonly trim?: boolean;
  /** The retention reported and, with `trim`, applied; defaults to 100000. */
  readonly maxLen?: number;
  /** Where report lines go; nowhere when omitted. */
  readonly log?: ProvisionLog;
}

/** What one stream key looked like after the run. */
export interface StreamReport {
  /** Which reader consumes it. */
  readonly role: "session events" | "client events";
  /** The stream key. */
  readonly key: string;
  /** `created` only outside `--check`; `missing` only in `--check`. */
  readonly state: "exists" | "created" | "missing" | "wrong_type" | "failed";
  /** The Redis type found when it is not a stream. */
  readonly type?: string;
  /** Entries the stream holds. */
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
  /** Each distinct stream key, session events first. */
  readonly streams: readonly StreamReport[];
  /** `undefined` when `CONFIG GET` was refused. */
  readonly maxmemoryPolicy: string | undefined;
  /** Every warning logged, in order. */
  readonly warnings: readonly string[];
  /** Every error logged, in order. */
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
  redis: RedisClient,
  options: ProvisionOptions,
): Promise<ProvisionReport> {
  const log = options.log ?? SILENT;
  const maxLen = options.maxLen ?? DEFAULTS.streamMaxLen;
  const check = options.check === true;
  const trim = options.trim === true && !check;
  const findings = collectFindings(log);

  const targets = [
    { role: "session events", key: options.sessionEventsStream },
    { role: "client events", key: options.clientEventsStream },
  ] as const;
  if (targets[0].key === targets[1].key) {
    findings.fail(
      `GATEWAY_SESSION_EVENTS_REDIS_STREAM and GATEWAY_CLIENT_EVENTS_REDIS_STREAM both name ${targets[0].key}: each reader needs its own stream`,
    );
  }
  const streams: StreamReport[] = [];
  for (const { role, key } of targets) {
    if (streams.some((stream) => stream.key === key)) continue;
    streams.push(await checkStream(redis, { role, key, check, trim, maxLen }, findings));
  }

  log.info(
    `retention: ~${maxLen} entries per stream: publishers append with XADD <key> MAXLEN ~ N (the publisher helpers default to ${DEFAULTS.streamMaxLen}); the gateway never trims${
      trim
        ? `; trimmed each stream once to ~${maxLen}`
        : check
          ? ""
          : `; --trim applies XTRIM <key> MAXLEN ~ ${maxLen} once`
    }`,
  );
  const maxmemoryPolicy = await checkMaxmemoryPolicy(redis, findings);
  const { warnings, errors } = findings;
  return { ok: errors.length === 0, streams, maxmemoryPolicy, warnings, errors };
}

/** A run's log, keeping every warning and error it logs for the report. */
interface Findings {
  readonly log: ProvisionLog;
  readonly warnings: string[];
  readonly errors: string[];
  warn(line: string): void;
  fail(line: string): void;
}

function collectFindings(log: ProvisionLog): Findings {
  const warnings: string[] = [];
  const errors: string[] = [];
  return {
    log,
    warnings,
    errors,
    warn(line) {
      warnings.push(line);
      log.warn(line);
    },
    fail(line) {
      errors.push(line);
      log.error(line);
    },
  };
}

/** Provisions one stream key and logs what became of it. */
async function checkStream(
  redis: RedisClient,
  target: Parameters<typeof provisionStream>[1],
  findings: Findings,
): Promise<StreamReport> {
  const { role, key, trim, maxLen } = target;
  let report: StreamReport;
  try {
    report = await provisionStream(redis, target);
  } catch (error) {
    report = { role, key, state: "failed" };
    findings.fail(`stream ${key} (${role}): ${(error as Error).message}`);
  }
  if (report.state === "missing") {
    findings.fail(
      `stream ${key} (${role}) does not exist; run without --check to create it, or let a publisher write to it first`,
    );
  } else if (report.state === "wrong_type") {
    findings.fail(
      `key ${key} holds a ${report.type}, not a stream: the ${role} reader cannot read it. Find out what wrote it, then rename or delete it and run again (the key was left as it is)`,
    );
  } else if (report.state !== "failed") {
    findings.log.info(describeStream(report));
    if (!trim && (report.length ?? 0) > maxLen + maxLen / 10) {
      findings.warn(
        `stream ${key} (${role}) holds ${report.length} entries, well over the ~${maxLen} publishers keep: a publisher may be adding entries without MAXLEN (run with --trim to trim once)`,
      );
    }
  }
  return report;
}

/**
 * Reads `maxmemory-policy` and warns unless it is `noeviction` — on every
 * master of a Redis Cluster, each of which may evict its own keys. Returns the
 * policy (the first one that is not `noeviction` on a cluster); `undefined`
 * when it cannot be read.
 */
async function checkMaxmemoryPolicy(
  redis: RedisClient,
  findings: Findings,
): Promise<string | undefined> {
  const servers: { name: string; redis: Pick<RedisClient, "call"> }[] = redis.isCluster
    ? (redis as Cluster)
        .nodes("master")
        .map((node) => ({ name: ` on ${node.options.host}:${node.options.port}`, redis: node }))
    : [{ name: "", redis }];
  let reported: string | undefined;
  for (const server of servers) {
    let policy: string | undefined;
    try {
      policy = configValue(await server.redis.call("CONFIG", "GET", "maxmemory-policy"));
    } catch (error) {
      findings.warn(
        `could not read maxmemory-policy${server.name} (${(error as Error).message}): make sure this Redis runs with maxmemory-policy noeviction`,
      );
    }
    if (policy === "noeviction") {
      findings.log.info(`maxmemory-policy${server.name}: noeviction`);
    } else if (policy !== undefined) {
      findings.warn(
        `maxmemory-policy${server.name} is ${policy}, not noeviction: under memory pressure Redis will silently evict replay reservations (reopening replays of recent request_ids), session hashes and whole streams. Set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in the server's configuration so it survives a restart).`,
      );
    }
    if (reported === undefined || reported === "noeviction") reported = policy ?? reported;
  }
  return reported;
}

async function provisionStream(
  redis: RedisClient,
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
async function createEmptyStream(redis: RedisClient, key: string): Promise<void> {
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

/**
 * Gateway configuration from the environment (contract §2), validated with zod.
 * Durations use Go syntax, addresses are `host:port`, `:port` or `[v6]:port`,
 * and an empty value counts as unset.
 */
import { z } from "zod";
import { DEFAULTS } from "./defaults.js";

/** A listen or connect address. */
export interface HostPort {
  /** Host name or IP; empty for all interfaces. */
  readonly host: string;
  readonly port: number;
}

/** The validated configuration. Durations are in milliseconds. */
export interface GatewayConfig {
  readonly redis: {
    readonly master: HostPort;
    readonly password: string;
    readonly replicas: readonly HostPort[];
    readonly db: number;
    readonly keyPrefix: string;
    readonly pingTimeoutMs: number;
    readonly commandTimeoutMs: number;
    /** `master` is a seed node of a Redis Cluster rather than one Redis server. */
    readonly cluster: boolean;
  };
  readonly sessionEventsStream: string;
  readonly clientEventsStream: string;
  readonly signerKeyPath: string;
  readonly publicHttpAddr: HostPort;
  readonly grpcAddr: HostPort;
  /** Admin listener; `undefined` = off. */
  readonly adminHttpAddr: HostPort | undefined;
  readonly shutdownTimeoutMs: number;
  readonly maxClockSkewMs: number;
  readonly sessionCacheTtlMs: number;
  readonly sessionCacheMaxEntries: number;
  readonly maxCommandPayloadBytes: number;
  readonly maxEventPayloadBytes: number;
  readonly pushStreamQueueSize: number;
  /** Per-user event history for resume (§12); `undefined` when either variable is 0. */
  readonly pushHistory: { readonly size: number; readonly ttlMs: number } | undefined;
  /**
   * How client events reach the nodes (§13): `read`, every node reads the
   * ingress; `routed`, the history router publishes each event on its user's
   * channel and a node subscribes the users it holds streams of.
   */
  readonly pushFanout: "read" | "routed";
  readonly maxStreamsPerSession: number;
  readonly maxPushStreams: number;
  /** Base URL of the HTTP auth upstream; `undefined` = no adapter. */
  readonly authUpstreamUrl: string | undefined;
  /** Module whose `routes` export is injected; `undefined` = none. */
  readonly routesModule: string | undefined;
  /** Both set: the gRPC listener serves TLS. */
  readonly grpcTls: { readonly certPath: string; readonly keyPath: string } | undefined;
  /** Browser origins the public listener answers with CORS headers; empty = none. */
  readonly corsAllowedOrigins: readonly string[];
  readonly logLevel: "debug" | "info" | "warn" | "error";
}

/** A configuration problem; `variable` names the offending variable. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(
    readonly variable: string,
    problem: string,
  ) {
    super(`${variable}: ${problem}`);
  }
}

const DEPRECATED = ["GATEWAY_REDIS_TLS_ENABLED", "GATEWAY_REDIS_USERNAME"] as const;

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * Parses a Go duration (`500ms`, `5s`, `1m30s`, `0`) into milliseconds.
 * Returns `undefined` for anything else, including negative durations.
 */
export function parseDuration(text: string): number | undefined {
  if (text === "0") return 0;
  const part = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;
  let total = 0;
  let index = 0;
  if (text.length === 0) return undefined;
  while (index < text.length) {
    part.lastIndex = index;
    const match = part.exec(text);
    if (match === null) return undefined;
    total += Number(match[1]) * (UNIT_MS[match[2] ?? ""] ?? Number.NaN);
    index = part.lastIndex;
  }
  return Number.isFinite(total) ? total : undefined;
}

/** Parses `host:port`, `:port` or `[v6]:port`; port 0 means ephemeral. */
export function parseAddress(text: string): HostPort | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s]*)):(\d{1,5})$/.exec(text);
  if (match === null) return undefined;
  const port = Number(match[3]);
  if (port > 65_535) return undefined;
  return { host: match[1] ?? match[2] ?? "", port };
}

/** Formats an address for logs and `addresses` (`[v6]:port` for IPv6). */
export function formatAddress(address: HostPort): string {
  return address.host.includes(":")
    ? `[${address.host}]:${address.port}`
    : `${address.host}:${address.port}`;
}

/** The longest duration a Node.js timer can wait. */
const MAX_DURATION_MS = 2_147_483_647;

const duration = (positive: boolean) =>
  z.string().transform((text, ctx) => {
    const ms = parseDuration(text);
    if (ms !== undefined && (!Number.isInteger(ms) || ms > MAX_DURATION_MS)) {
      ctx.addIssue({
        code: "custom",
        message: `expected a whole number of milliseconds up to ${MAX_DURATION_MS}ms (about 24 days), got "${text}"`,
      });
      return z.NEVER;
    }
    if (ms === undefined || (positive && ms <= 0)) {
      ctx.addIssue({
        code: "custom",
        message: `expected a ${positive ? "positive " : ""}Go duration such as 500ms, 5s or 1m30s, got "${text}"`,
      });
      return z.NEVER;
    }
    return ms;
  });

const address = (connect: boolean) =>
  z.string().transform((text, ctx) => {
    const parsed = parseAddress(text);
    if (parsed === undefined || (connect && (parsed.host === "" || parsed.port === 0))) {
      ctx.addIssue({
        code: "custom",
        message: connect
          ? `expected host:port, got "${text}"`
          : `expected host:port, :port or [v6]:port, got "${text}"`,
      });
      return z.NEVER;
    }
    return parsed;
  });

const integer = (min: number, max: number) =>
  z.string().transform((text, ctx) => {
    const value = /^\d+$/.test(text) ? Number(text) : Number.NaN;
    if (!Number.isSafeInteger(value) || value < min || value > max) {
      ctx.addIssue({
        code: "custom",
        message: `expected an integer from ${min} to ${max}, got "${text}"`,
      });
      return z.NEVER;
    }
    return value;
  });

const streamKey = z
  .string()
  .max(512, "expected a stream key of at most 512 bytes")
  .regex(/^[\x21-\x7e]+$/, "expected a stream key of printable ASCII without spaces");

const boolean = z.string().transform((text, ctx) => {
  if (text === "true" || text === "false") return text === "true";
  ctx.addIssue({ code: "custom", message: `expected true or false, got "${text}"` });
  return z.NEVER;
});

const url = z.string().transform((text, ctx) => {
  try {
    const parsed = new URL(text);
    if (parsed.protocol === "http:" || parsed.protocol === "https:") return text;
  } catch {}
  ctx.addIssue({ code: "custom", message: `expected an http(s) URL, got "${text}"` });
  return z.NEVER;
});

/**
 * A comma-separated list of browser origins (`scheme://host[:port]`), each
 * normalised to the form browsers send in `Origin` (lowercase host, no
 * default port, no trailing slash).
 */
const origins = z.string().transform((text, ctx) => {
  const parsed: string[] = [];
  if (text === "") return parsed;
  for (const item of text.split(",").map((part) => part.trim())) {
    const origin = originOf(item);
    if (origin === undefined) {
      ctx.addIssue({
        code: "custom",
        message: `expected comma-separated origins such as https://app.example.com, got "${item}"`,
      });
      return z.NEVER;
    }
    if (!parsed.includes(origin)) parsed.push(origin);
  }
  return parsed;
});

/** The serialised origin of an http(s) URL that is nothing but an origin, else `undefined`. */
function originOf(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return undefined;
  }
  const bare =
    (url.protocol === "http:" || url.protocol === "https:") &&
    url.username === "" &&
    url.password === "" &&
    url.pathname === "/" &&
    url.search === "" &&
    url.hash === "" &&
    /^https?:\/\/[^/?#]+\/?$/i.test(text);
  return bare ? url.origin : undefined;
}

/** A default duration as the variable's text. */
const ms = (milliseconds: number): string => `${milliseconds}ms`;

/** Each variable: its default (or `undefined` when optional/required) and its parser. */
const VARIABLES = {
  GATEWAY_REDIS_MASTER_ADDR: { required: true, schema: address(true) },
  GATEWAY_REDIS_PASSWORD: { required: true, schema: z.string() },
  GATEWAY_REDIS_REPLICA_ADDRS: {
    default: "",
    schema: z.string().transform((text, ctx) => {
      const items = text === "" ? [] : text.split(",").map((item) => item.trim());
      const parsed: HostPort[] = [];
      for (const item of items) {
        const one = parseAddress(item);
        if (one === undefined || one.host === "" || one.port === 0) {
          ctx.addIssue({
            code: "custom",
            message: `expected comma-separated host:port, got "${item}"`,
          });
          return z.NEVER;
        }
        parsed.push(one);
      }
      return parsed;
    }),
  },
  GATEWAY_REDIS_DB: { default: String(DEFAULTS.redisDb), schema: integer(0, 15) },
  GATEWAY_REDIS_CLUSTER: { default: String(DEFAULTS.redisCluster), schema: boolean },
  GATEWAY_REDIS_KEY_PREFIX: {
    default: DEFAULTS.keyPrefix,
    schema: z.string().regex(/^[\x21-\x7e]{1,128}$/, "expected 1-128 printable ASCII characters"),
  },
  GATEWAY_REDIS_PING_TIMEOUT: { default: ms(DEFAULTS.redisPingTimeoutMs), schema: duration(true) },
  GATEWAY_SESSION_EVENTS_REDIS_STREAM: { default: DEFAULTS.sessionEventsStream, schema: streamKey },
  GATEWAY_CLIENT_EVENTS_REDIS_STREAM: { default: DEFAULTS.clientEventsStream, schema: streamKey },
  GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH: { required: true, schema: z.string() },
  GATEWAY_PUBLIC_HTTP_ADDR: { default: DEFAULTS.publicHttpAddr, schema: address(false) },
  GATEWAY_AUTHENTICATED_GRPC_ADDR: { default: DEFAULTS.grpcAddr, schema: address(false) },
  GATEWAY_ADMIN_HTTP_ADDR: { schema: address(false) },
  GATEWAY_REDIS_COMMAND_TIMEOUT: {
    default: ms(DEFAULTS.redisCommandTimeoutMs),
    schema: duration(true),
  },
  GATEWAY_SHUTDOWN_TIMEOUT: { default: ms(DEFAULTS.shutdownTimeoutMs), schema: duration(true) },
  GATEWAY_REQUEST_MAX_CLOCK_SKEW: { default: ms(DEFAULTS.maxClockSkewMs), schema: duration(true) },
  GATEWAY_SESSION_CACHE_TTL: { default: ms(DEFAULTS.sessionCacheTtlMs), schema: duration(false) },
  GATEWAY_SESSION_CACHE_MAX_ENTRIES: {
    default: String(DEFAULTS.sessionCacheMaxEntries),
    schema: integer(1, 10_000_000),
  },
  GATEWAY_MAX_COMMAND_PAYLOAD_BYTES: {
    default: String(DEFAULTS.maxCommandPayloadBytes),
    schema: integer(0, 64 * 1024 * 1024),
  },
  GATEWAY_MAX_EVENT_PAYLOAD_BYTES: {
    default: String(DEFAULTS.maxEventPayloadBytes),
    schema: integer(0, 16 * 1024 * 1024),
  },
  GATEWAY_PUSH_STREAM_QUEUE_SIZE: {
    default: String(DEFAULTS.pushStreamQueueSize),
    schema: integer(1, 1_000_000),
  },
  GATEWAY_PUSH_HISTORY_SIZE: {
    default: String(DEFAULTS.pushHistorySize),
    schema: integer(0, 100_000),
  },
  GATEWAY_PUSH_HISTORY_TTL: { default: ms(DEFAULTS.pushHistoryTtlMs), schema: duration(false) },
  // No default here: it follows GATEWAY_REDIS_CLUSTER (see loadConfig).
  GATEWAY_PUSH_FANOUT: { schema: z.enum(["read", "routed"]) },
  GATEWAY_MAX_STREAMS_PER_SESSION: {
    default: String(DEFAULTS.maxStreamsPerSession),
    schema: integer(1, 1_000),
  },
  GATEWAY_MAX_PUSH_STREAMS: {
    default: String(DEFAULTS.maxPushStreams),
    schema: integer(1, 10_000_000),
  },
  GATEWAY_AUTH_UPSTREAM_URL: { schema: url },
  GATEWAY_ROUTES_MODULE: { schema: z.string() },
  GATEWAY_GRPC_TLS_CERT_PATH: { schema: z.string() },
  GATEWAY_GRPC_TLS_KEY_PATH: { schema: z.string() },
  GATEWAY_CORS_ALLOWED_ORIGINS: { default: "", schema: origins },
  GATEWAY_LOG_LEVEL: {
    default: DEFAULTS.logLevel,
    schema: z.enum(["debug", "info", "warn", "error"]),
  },
} satisfies Record<string, { required?: boolean; default?: string; schema: z.ZodType }>;

type Variables = typeof VARIABLES;
type Parsed = { [K in keyof Variables]: z.output<Variables[K]["schema"]> | undefined };

/** Names of every variable the gateway reads. */
export const CONFIG_VARIABLES = Object.keys(VARIABLES) as readonly (keyof Variables)[];

/** The Redis part of the configuration, for tools that talk to the gateway's Redis. */
export type RedisToolConfig = Pick<
  GatewayConfig,
  "redis" | "sessionEventsStream" | "clientEventsStream"
>;

const REDIS_TOOL_VARIABLES = [
  "GATEWAY_REDIS_MASTER_ADDR",
  "GATEWAY_REDIS_PASSWORD",
  "GATEWAY_REDIS_REPLICA_ADDRS",
  "GATEWAY_REDIS_DB",
  "GATEWAY_REDIS_CLUSTER",
  "GATEWAY_REDIS_KEY_PREFIX",
  "GATEWAY_REDIS_PING_TIMEOUT",
  "GATEWAY_REDIS_COMMAND_TIMEOUT",
  "GATEWAY_SESSION_EVENTS_REDIS_STREAM",
  "GATEWAY_CLIENT_EVENTS_REDIS_STREAM",
] as const satisfies readonly (keyof Variables)[];

/**
 * Reads only the Redis and stream variables, with the same rules as
 * {@link loadConfig} (publishers, the CLI and infra scripts use it).
 */
export function loadRedisToolConfig(
  env: Readonly<Record<string, string | undefined>> = process.env,
): RedisToolConfig {
  return redisToolConfigOf(parseVariables(env, REDIS_TOOL_VARIABLES));
}

function redisToolConfigOf(v: Parsed): RedisToolConfig {
  // A Redis Cluster has only database 0 (SELECT is refused there).
  if (v.GATEWAY_REDIS_CLUSTER && v.GATEWAY_REDIS_DB !== 0) {
    throw new ConfigError("GATEWAY_REDIS_DB", "must be 0 when GATEWAY_REDIS_CLUSTER is true");
  }
  return {
    redis: {
      master: v.GATEWAY_REDIS_MASTER_ADDR!,
      password: v.GATEWAY_REDIS_PASSWORD!,
      replicas: v.GATEWAY_REDIS_REPLICA_ADDRS ?? [],
      db: v.GATEWAY_REDIS_DB!,
      keyPrefix: v.GATEWAY_REDIS_KEY_PREFIX!,
      pingTimeoutMs: v.GATEWAY_REDIS_PING_TIMEOUT!,
      commandTimeoutMs: v.GATEWAY_REDIS_COMMAND_TIMEOUT!,
      cluster: v.GATEWAY_REDIS_CLUSTER!,
    },
    sessionEventsStream: v.GATEWAY_SESSION_EVENTS_REDIS_STREAM!,
    clientEventsStream: v.GATEWAY_CLIENT_EVENTS_REDIS_STREAM!,
  };
}

/** Validates the deprecated variables and then each named variable, in order. */
function parseVariables(
  env: Readonly<Record<string, string | undefined>>,
  names: readonly (keyof Variables)[],
): Parsed {
  for (const name of DEPRECATED) {
    if (env[name] !== undefined) {
      throw new ConfigError(
        name,
        "is no longer accepted: Redis traffic is password-protected and TLS is disabled by policy; unset it",
      );
    }
  }
  const values: Partial<Record<string, unknown>> = {};
  for (const name of names) {
    const spec: { required?: boolean; default?: string; schema: z.ZodType } = VARIABLES[name];
    const raw = env[name];
    const text = raw === undefined || raw === "" ? spec.default : raw;
    if (text === undefined) {
      if (spec.required) throw new ConfigError(name, "is required");
      continue;
    }
    const result = spec.schema.safeParse(text);
    if (!result.success) {
      const problem =
        name === "GATEWAY_REDIS_PASSWORD"
          ? "is invalid"
          : (result.error.issues[0]?.message ?? "is invalid");
      throw new ConfigError(name, redactSecret(problem, env.GATEWAY_REDIS_PASSWORD));
    }
    values[name] = result.data;
  }
  return values as Parsed;
}

/**
 * Reads and validates the configuration. Throws a ConfigError naming the first
 * offending variable; the Redis password never appears in a message.
 */
export function loadConfig(
  env: Readonly<Record<string, string | undefined>> = process.env,
): GatewayConfig {
  const v = parseVariables(env, CONFIG_VARIABLES);
  if (v.GATEWAY_SESSION_EVENTS_REDIS_STREAM === v.GATEWAY_CLIENT_EVENTS_REDIS_STREAM) {
    throw new ConfigError(
      "GATEWAY_CLIENT_EVENTS_REDIS_STREAM",
      "must differ from GATEWAY_SESSION_EVENTS_REDIS_STREAM: each reader needs its own stream",
    );
  }

  const certPath = v.GATEWAY_GRPC_TLS_CERT_PATH;
  const keyPath = v.GATEWAY_GRPC_TLS_KEY_PATH;
  if ((certPath === undefined) !== (keyPath === undefined)) {
    throw new ConfigError(
      certPath === undefined ? "GATEWAY_GRPC_TLS_CERT_PATH" : "GATEWAY_GRPC_TLS_KEY_PATH",
      "must be set together with its pair to serve gRPC over TLS",
    );
  }

  const historyOff = v.GATEWAY_PUSH_HISTORY_SIZE === 0 || v.GATEWAY_PUSH_HISTORY_TTL === 0;
  if (v.GATEWAY_PUSH_FANOUT === "routed" && historyOff) {
    throw new ConfigError(
      "GATEWAY_PUSH_FANOUT",
      "routed needs push history on (GATEWAY_PUSH_HISTORY_SIZE and GATEWAY_PUSH_HISTORY_TTL not 0): a node subscribing a user closes the gap from history",
    );
  }

  return {
    ...redisToolConfigOf(v),
    signerKeyPath: v.GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH!,
    publicHttpAddr: v.GATEWAY_PUBLIC_HTTP_ADDR!,
    grpcAddr: v.GATEWAY_AUTHENTICATED_GRPC_ADDR!,
    adminHttpAddr: v.GATEWAY_ADMIN_HTTP_ADDR,
    shutdownTimeoutMs: v.GATEWAY_SHUTDOWN_TIMEOUT!,
    maxClockSkewMs: v.GATEWAY_REQUEST_MAX_CLOCK_SKEW!,
    sessionCacheTtlMs: v.GATEWAY_SESSION_CACHE_TTL!,
    sessionCacheMaxEntries: v.GATEWAY_SESSION_CACHE_MAX_ENTRIES!,
    maxCommandPayloadBytes: v.GATEWAY_MAX_COMMAND_PAYLOAD_BYTES!,
    maxEventPayloadBytes: v.GATEWAY_MAX_EVENT_PAYLOAD_BYTES!,
    pushStreamQueueSize: v.GATEWAY_PUSH_STREAM_QUEUE_SIZE!,
    pushHistory: historyOff
      ? undefined
      : { size: v.GATEWAY_PUSH_HISTORY_SIZE!, ttlMs: v.GATEWAY_PUSH_HISTORY_TTL! },
    pushFanout:
      v.GATEWAY_PUSH_FANOUT ?? (v.GATEWAY_REDIS_CLUSTER && !historyOff ? "routed" : "read"),
    maxStreamsPerSession: v.GATEWAY_MAX_STREAMS_PER_SESSION!,
    maxPushStreams: v.GATEWAY_MAX_PUSH_STREAMS!,
    authUpstreamUrl: v.GATEWAY_AUTH_UPSTREAM_URL,
    routesModule: v.GATEWAY_ROUTES_MODULE,
    grpcTls: certPath !== undefined && keyPath !== undefined ? { certPath, keyPath } : undefined,
    corsAllowedOrigins: v.GATEWAY_CORS_ALLOWED_ORIGINS!,
    logLevel: v.GATEWAY_LOG_LEVEL!,
  };
}

/** Replaces every occurrence of a secret (the Redis password) in a text meant for logs or errors. */
export function redactSecret(text: string, secret: string | undefined): string {
  return secret === undefined || secret === "" ? text : text.replaceAll(secret, "[redacted]");
}

/**
 * Configuration from the environment (contract §2): defaults, required and
 * deprecated variables, Go durations, addresses, and errors that name the
 * variable but never reveal the Redis password.
 */
import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import {
  CONFIG_VARIABLES,
  ConfigError,
  type GatewayConfig,
  loadConfig,
  loadRedisToolConfig,
  parseAddress,
  parseDuration,
} from "../runtime/config/config.js";

const PASSWORD = "s3cret-Redis-pw";

/** Only the required variables. */
const REQUIRED: Readonly<Record<string, string>> = {
  GATEWAY_REDIS_MASTER_ADDR: "redis.internal:6379",
  GATEWAY_REDIS_PASSWORD: PASSWORD,
  GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH: "/etc/gateway/signer.pem",
};

function load(extra: Readonly<Record<string, string | undefined>> = {}): GatewayConfig {
  return loadConfig({ ...REQUIRED, ...extra });
}

function configError(env: Readonly<Record<string, string | undefined>>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw new Error(`expected a ConfigError, got ${String(error)}`);
  }
  throw new Error("expected loadConfig to fail");
}

/** Every form in which a thrown error may end up in a log line. */
function renderings(error: Error): string[] {
  return [error.message, String(error), error.stack ?? "", inspect(error), JSON.stringify(error)];
}

/** Asserts the error names `variable`, in its message and its string form. */
function expectNamesVariable(error: ConfigError, variable: string): void {
  expect(error.variable).toBe(variable);
  expect(error.message).toContain(variable);
  expect(String(error)).toContain(variable);
}

const DEFAULTS: GatewayConfig = {
  redis: {
    master: { host: "redis.internal", port: 6379 },
    password: PASSWORD,
    replicas: [],
    db: 0,
    keyPrefix: "gateway:",
    pingTimeoutMs: 2_000,
    commandTimeoutMs: 1_000,
    cluster: false,
  },
  sessionEventsStream: "gateway:session_events",
  clientEventsStream: "gateway:client_events",
  signerKeyPath: "/etc/gateway/signer.pem",
  publicHttpAddr: { host: "", port: 8080 },
  grpcAddr: { host: "", port: 9090 },
  adminHttpAddr: undefined,
  shutdownTimeoutMs: 5_000,
  maxClockSkewMs: 30_000,
  sessionCacheTtlMs: 30_000,
  sessionCacheMaxEntries: 100_000,
  maxCommandPayloadBytes: 262_144,
  maxEventPayloadBytes: 65_536,
  pushStreamQueueSize: 256,
  pushHistory: { size: 1000, ttlMs: 600_000 },
  pushFanout: "read",
  maxStreamsPerSession: 4,
  maxPushStreams: 100_000,
  authUpstreamUrl: undefined,
  routesModule: undefined,
  grpcTls: undefined,
  corsAllowedOrigins: [],
  logLevel: "info",
};

describe("loadConfig", () => {
  describe("defaults", () => {
    it("applies every default of §2 when only the required variables are set", () => {
      expect(load()).toEqual(DEFAULTS);
    });

    it("treats an empty value as unset, so each optional variable takes its default", () => {
      const empty = Object.fromEntries(
        CONFIG_VARIABLES.filter((name) => !(name in REQUIRED)).map((name) => [name, ""]),
      );
      expect(load(empty)).toEqual(DEFAULTS);
    });

    it("reads every variable of §2", () => {
      expect([...CONFIG_VARIABLES].sort()).toEqual(
        [
          "GATEWAY_REDIS_MASTER_ADDR",
          "GATEWAY_REDIS_PASSWORD",
          "GATEWAY_REDIS_REPLICA_ADDRS",
          "GATEWAY_REDIS_DB",
          "GATEWAY_REDIS_CLUSTER",
          "GATEWAY_REDIS_KEY_PREFIX",
          "GATEWAY_REDIS_PING_TIMEOUT",
          "GATEWAY_SESSION_EVENTS_REDIS_STREAM",
          "GATEWAY_CLIENT_EVENTS_REDIS_STREAM",
          "GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH",
          "GATEWAY_PUBLIC_HTTP_ADDR",
          "GATEWAY_AUTHENTICATED_GRPC_ADDR",
          "GATEWAY_ADMIN_HTTP_ADDR",
          "GATEWAY_REDIS_COMMAND_TIMEOUT",
          "GATEWAY_SHUTDOWN_TIMEOUT",
          "GATEWAY_REQUEST_MAX_CLOCK_SKEW",
          "GATEWAY_SESSION_CACHE_TTL",
          "GATEWAY_SESSION_CACHE_MAX_ENTRIES",
          "GATEWAY_MAX_COMMAND_PAYLOAD_BYTES",
          "GATEWAY_MAX_EVENT_PAYLOAD_BYTES",
          "GATEWAY_PUSH_STREAM_QUEUE_SIZE",
          "GATEWAY_PUSH_HISTORY_SIZE",
          "GATEWAY_PUSH_HISTORY_TTL",
          "GATEWAY_PUSH_FANOUT",
          "GATEWAY_MAX_STREAMS_PER_SESSION",
          "GATEWAY_MAX_PUSH_STREAMS",
          "GATEWAY_AUTH_UPSTREAM_URL",
          "GATEWAY_ROUTES_MODULE",
          "GATEWAY_GRPC_TLS_CERT_PATH",
          "GATEWAY_GRPC_TLS_KEY_PATH",
          "GATEWAY_CORS_ALLOWED_ORIGINS",
          "GATEWAY_LOG_LEVEL",
        ].sort(),
      );
    });

    it("reads every non-default value", () => {
      const config = load({
        GATEWAY_REDIS_REPLICA_ADDRS: "r1:6379,r2:6380",
        GATEWAY_REDIS_DB: "3",
        GATEWAY_REDIS_KEY_PREFIX: "edge:",
        GATEWAY_REDIS_PING_TIMEOUT: "500ms",
        GATEWAY_SESSION_EVENTS_REDIS_STREAM: "edge:sessions",
        GATEWAY_CLIENT_EVENTS_REDIS_STREAM: "edge:clients",
        GATEWAY_PUBLIC_HTTP_ADDR: "0.0.0.0:80",
        GATEWAY_AUTHENTICATED_GRPC_ADDR: "[::]:443",
        GATEWAY_ADMIN_HTTP_ADDR: "127.0.0.1:9100",
        GATEWAY_REDIS_COMMAND_TIMEOUT: "250ms",
        GATEWAY_SHUTDOWN_TIMEOUT: "10s",
        GATEWAY_REQUEST_MAX_CLOCK_SKEW: "1m",
        GATEWAY_SESSION_CACHE_TTL: "5s",
        GATEWAY_SESSION_CACHE_MAX_ENTRIES: "10",
        GATEWAY_MAX_COMMAND_PAYLOAD_BYTES: "1024",
        GATEWAY_MAX_EVENT_PAYLOAD_BYTES: "512",
        GATEWAY_PUSH_STREAM_QUEUE_SIZE: "8",
        GATEWAY_MAX_STREAMS_PER_SESSION: "2",
        GATEWAY_MAX_PUSH_STREAMS: "1000",
        GATEWAY_AUTH_UPSTREAM_URL: "http://auth.internal:8081",
        GATEWAY_ROUTES_MODULE: "/srv/routes.js",
        GATEWAY_GRPC_TLS_CERT_PATH: "/tls/cert.pem",
        GATEWAY_GRPC_TLS_KEY_PATH: "/tls/key.pem",
        GATEWAY_CORS_ALLOWED_ORIGINS: "https://app.example.com",
        GATEWAY_LOG_LEVEL: "debug",
      });
      expect(config).toEqual({
        ...DEFAULTS,
        redis: {
          ...DEFAULTS.redis,
          replicas: [
            { host: "r1", port: 6379 },
            { host: "r2", port: 6380 },
          ],
          db: 3,
          keyPrefix: "edge:",
          pingTimeoutMs: 500,
          commandTimeoutMs: 250,
        },
        sessionEventsStream: "edge:sessions",
        clientEventsStream: "edge:clients",
        publicHttpAddr: { host: "0.0.0.0", port: 80 },
        grpcAddr: { host: "::", port: 443 },
        adminHttpAddr: { host: "127.0.0.1", port: 9100 },
        shutdownTimeoutMs: 10_000,
        maxClockSkewMs: 60_000,
        sessionCacheTtlMs: 5_000,
        sessionCacheMaxEntries: 10,
        maxCommandPayloadBytes: 1024,
        maxEventPayloadBytes: 512,
        pushStreamQueueSize: 8,
        maxStreamsPerSession: 2,
        maxPushStreams: 1000,
        authUpstreamUrl: "http://auth.internal:8081",
        routesModule: "/srv/routes.js",
        grpcTls: { certPath: "/tls/cert.pem", keyPath: "/tls/key.pem" },
        corsAllowedOrigins: ["https://app.example.com"],
        logLevel: "debug",
      });
    });
  });

  describe("required variables", () => {
    it.each(Object.keys(REQUIRED))("fails naming %s when it is missing", (name) => {
      const env: Record<string, string | undefined> = { ...REQUIRED };
      delete env[name];
      expectNamesVariable(configError(env), name);
    });

    it.each(Object.keys(REQUIRED))("fails naming %s when it is empty", (name) => {
      expectNamesVariable(configError({ ...REQUIRED, [name]: "" }), name);
    });
  });

  describe("deprecated variables", () => {
    it.each([
      ["GATEWAY_REDIS_TLS_ENABLED", "true"],
      ["GATEWAY_REDIS_TLS_ENABLED", "false"],
      ["GATEWAY_REDIS_TLS_ENABLED", ""],
      ["GATEWAY_REDIS_USERNAME", "default"],
      ["GATEWAY_REDIS_USERNAME", ""],
    ])("fails naming %s when it is set to %j", (name, value) => {
      expectNamesVariable(configError({ ...REQUIRED, [name]: value }), name);
    });
  });

  describe("Go durations", () => {
    it.each([
      ["500ms", 500],
      ["5s", 5_000],
      ["1m30s", 90_000],
      ["1h", 3_600_000],
      ["1.5s", 1_500],
      ["2h45m10s", 9_910_000],
    ])("parseDuration reads %s as %i ms", (text, ms) => {
      expect(parseDuration(text)).toBe(ms);
    });

    it.each(["5", "-1s", "5 s", "abc", "", "1x", "s", " 5s", "5s "])(
      "parseDuration refuses %j",
      (text) => {
        expect(parseDuration(text)).toBeUndefined();
      },
    );

    const DURATIONS: readonly [string, (config: GatewayConfig) => number][] = [
      ["GATEWAY_REDIS_PING_TIMEOUT", (config) => config.redis.pingTimeoutMs],
      ["GATEWAY_REDIS_COMMAND_TIMEOUT", (config) => config.redis.commandTimeoutMs],
      ["GATEWAY_SHUTDOWN_TIMEOUT", (config) => config.shutdownTimeoutMs],
      ["GATEWAY_REQUEST_MAX_CLOCK_SKEW", (config) => config.maxClockSkewMs],
      ["GATEWAY_SESSION_CACHE_TTL", (config) => config.sessionCacheTtlMs],
      ["GATEWAY_PUSH_HISTORY_TTL", (config) => config.pushHistory?.ttlMs ?? Number.NaN],
    ];

    it.each(DURATIONS)("reads %s in milliseconds", (name, read) => {
      expect(read(load({ [name]: "1m30s" }))).toBe(90_000);
      expect(read(load({ [name]: "1.5s" }))).toBe(1_500);
    });

    describe.each(DURATIONS.map(([name]) => name))("%s", (name) => {
      it.each(["5", "-1s", "5 s", "abc"])("fails naming the variable for %j", (value) => {
        expectNamesVariable(configError({ ...REQUIRED, [name]: value }), name);
      });
    });
  });

  describe("addresses", () => {
    it.each([
      ["gateway.internal:9091", { host: "gateway.internal", port: 9091 }],
      ["10.0.0.7:9091", { host: "10.0.0.7", port: 9091 }],
      [":9091", { host: "", port: 9091 }],
      ["[::1]:9090", { host: "::1", port: 9090 }],
      ["127.0.0.1:0", { host: "127.0.0.1", port: 0 }],
      [":0", { host: "", port: 0 }],
      [":65535", { host: "", port: 65_535 }],
    ])("reads %s", (text, expected) => {
      expect(parseAddress(text)).toEqual(expected);
      expect(load({ GATEWAY_AUTHENTICATED_GRPC_ADDR: text }).grpcAddr).toEqual(expected);
      expect(load({ GATEWAY_PUBLIC_HTTP_ADDR: text }).publicHttpAddr).toEqual(expected);
      expect(load({ GATEWAY_ADMIN_HTTP_ADDR: text }).adminHttpAddr).toEqual(expected);
    });

    const INVALID = ["9090", "host:", "host:70000", "[::1]", "host:65536", "host:port", "::1:9090"];

    it.each(INVALID)("parseAddress refuses %j", (text) => {
      expect(parseAddress(text)).toBeUndefined();
    });

    describe.each([
      "GATEWAY_PUBLIC_HTTP_ADDR",
      "GATEWAY_AUTHENTICATED_GRPC_ADDR",
      "GATEWAY_ADMIN_HTTP_ADDR",
      "GATEWAY_REDIS_MASTER_ADDR",
    ])("%s", (name) => {
      it.each(INVALID)("fails naming the variable for %j", (value) => {
        expectNamesVariable(configError({ ...REQUIRED, [name]: value }), name);
      });
    });

    // Redis is dialled, not listened on: it needs a host and a real port.
    it.each([":6379", "redis.internal:0"])(
      "fails naming GATEWAY_REDIS_MASTER_ADDR for %j",
      (value) => {
        expectNamesVariable(
          configError({ ...REQUIRED, GATEWAY_REDIS_MASTER_ADDR: value }),
          "GATEWAY_REDIS_MASTER_ADDR",
        );
      },
    );

    it("reads an IPv6 Redis master", () => {
      expect(load({ GATEWAY_REDIS_MASTER_ADDR: "[fd00::7]:6380" }).redis.master).toEqual({
        host: "fd00::7",
        port: 6380,
      });
    });
  });

  describe("GATEWAY_REDIS_DB", () => {
    it.each([0, 1, 15])("accepts %i", (db) => {
      expect(load({ GATEWAY_REDIS_DB: String(db) }).redis.db).toBe(db);
    });

    it.each(["16", "-1", "1.5", "abc", " 1"])("fails naming the variable for %j", (value) => {
      expectNamesVariable(
        configError({ ...REQUIRED, GATEWAY_REDIS_DB: value }),
        "GATEWAY_REDIS_DB",
      );
    });
  });

  describe("GATEWAY_REDIS_CLUSTER", () => {
    it("makes GATEWAY_REDIS_MASTER_ADDR a cluster seed node when true", () => {
      expect(load({ GATEWAY_REDIS_CLUSTER: "true" }).redis.cluster).toBe(true);
      expect(load({ GATEWAY_REDIS_CLUSTER: "false" }).redis.cluster).toBe(false);
    });

    it.each(["1", "yes", "TRUE", "on", " true"])("fails naming the variable for %j", (value) => {
      const error = configError({ ...REQUIRED, GATEWAY_REDIS_CLUSTER: value });
      expectNamesVariable(error, "GATEWAY_REDIS_CLUSTER");
      expect(error.message).toContain("expected true or false");
    });

    it("fails naming GATEWAY_REDIS_DB when a cluster is given another database than 0", () => {
      const error = configError({
        ...REQUIRED,
        GATEWAY_REDIS_CLUSTER: "true",
        GATEWAY_REDIS_DB: "2",
      });
      expectNamesVariable(error, "GATEWAY_REDIS_DB");
      expect(
        loadRedisToolConfig({ ...REQUIRED, GATEWAY_REDIS_CLUSTER: "true" }).redis.cluster,
      ).toBe(true);
    });
  });

  describe("GATEWAY_PUSH_FANOUT", () => {
    it("defaults to read on one Redis and to routed on a cluster with history on", () => {
      expect(load().pushFanout).toBe("read");
      expect(load({ GATEWAY_REDIS_CLUSTER: "true" }).pushFanout).toBe("routed");
      expect(
        load({ GATEWAY_REDIS_CLUSTER: "true", GATEWAY_PUSH_HISTORY_SIZE: "0" }).pushFanout,
      ).toBe("read");
    });

    it("takes read or routed whatever the Redis mode", () => {
      expect(load({ GATEWAY_PUSH_FANOUT: "routed" }).pushFanout).toBe("routed");
      expect(load({ GATEWAY_REDIS_CLUSTER: "true", GATEWAY_PUSH_FANOUT: "read" }).pushFanout).toBe(
        "read",
      );
    });

    it.each(["Routed", "pubsub", " read"])("fails naming the variable for %j", (value) => {
      expectNamesVariable(
        configError({ ...REQUIRED, GATEWAY_PUSH_FANOUT: value }),
        "GATEWAY_PUSH_FANOUT",
      );
    });

    it.each([
      ["GATEWAY_PUSH_HISTORY_SIZE", "0"],
      ["GATEWAY_PUSH_HISTORY_TTL", "0s"],
    ])("fails naming it when routed and %s turns history off", (variable, value) => {
      const error = configError({ ...REQUIRED, GATEWAY_PUSH_FANOUT: "routed", [variable]: value });
      expectNamesVariable(error, "GATEWAY_PUSH_FANOUT");
      expect(error.message).toContain("routed needs push history on");
    });
  });

  describe("GATEWAY_REDIS_REPLICA_ADDRS", () => {
    it("reads a comma-separated host:port list", () => {
      expect(
        load({ GATEWAY_REDIS_REPLICA_ADDRS: "r1.internal:6379,[fd00::2]:6380" }).redis.replicas,
      ).toEqual([
        { host: "r1.internal", port: 6379 },
        { host: "fd00::2", port: 6380 },
      ]);
    });

    it.each(["r1:6379,nonsense", "r1:6379,", "r1:6379,,r2:6379", ":6379", "r1:0", "r1"])(
      "fails naming the variable for %j",
      (value) => {
        expectNamesVariable(
          configError({ ...REQUIRED, GATEWAY_REDIS_REPLICA_ADDRS: value }),
          "GATEWAY_REDIS_REPLICA_ADDRS",
        );
      },
    );
  });

  describe("GATEWAY_CORS_ALLOWED_ORIGINS", () => {
    it("reads comma-separated origins in the form browsers send them", () => {
      expect(
        load({
          GATEWAY_CORS_ALLOWED_ORIGINS:
            "https://app.example.com, http://localhost:5173,HTTPS://Admin.Example.com:443/",
        }).corsAllowedOrigins,
      ).toEqual(["https://app.example.com", "http://localhost:5173", "https://admin.example.com"]);
    });

    it.each([
      "*",
      "app.example.com",
      "https://app.example.com/path",
      "https://app.example.com?x=1",
      "https://user@app.example.com",
      "ftp://files.example.com",
      "https://app.example.com,",
      "null",
    ])("fails naming the variable for %j", (value) => {
      expectNamesVariable(
        configError({ ...REQUIRED, GATEWAY_CORS_ALLOWED_ORIGINS: value }),
        "GATEWAY_CORS_ALLOWED_ORIGINS",
      );
    });
  });

  describe("GATEWAY_PUSH_HISTORY_SIZE and GATEWAY_PUSH_HISTORY_TTL", () => {
    it("reads the history size and TTL; 0 in either turns history off", () => {
      expect(
        load({ GATEWAY_PUSH_HISTORY_SIZE: "100000", GATEWAY_PUSH_HISTORY_TTL: "1h" }).pushHistory,
      ).toEqual({ size: 100_000, ttlMs: 3_600_000 });
      expect(load({ GATEWAY_PUSH_HISTORY_SIZE: "0" }).pushHistory).toBeUndefined();
      expect(load({ GATEWAY_PUSH_HISTORY_TTL: "0" }).pushHistory).toBeUndefined();
      expect(load({ GATEWAY_PUSH_HISTORY_TTL: "0s" }).pushHistory).toBeUndefined();
    });
  });

  describe("invalid values", () => {
    it.each([
      ["GATEWAY_REDIS_KEY_PREFIX", "has space:"],
      ["GATEWAY_REDIS_KEY_PREFIX", "p".repeat(129)],
      ["GATEWAY_SESSION_EVENTS_REDIS_STREAM", "session events"],
      ["GATEWAY_CLIENT_EVENTS_REDIS_STREAM", "client\tevents"],
      ["GATEWAY_SESSION_CACHE_MAX_ENTRIES", "0"],
      ["GATEWAY_SESSION_CACHE_MAX_ENTRIES", "lots"],
      ["GATEWAY_MAX_COMMAND_PAYLOAD_BYTES", "256KiB"],
      ["GATEWAY_MAX_EVENT_PAYLOAD_BYTES", "-1"],
      ["GATEWAY_PUSH_STREAM_QUEUE_SIZE", "0"],
      ["GATEWAY_MAX_STREAMS_PER_SESSION", "1e3"],
      ["GATEWAY_MAX_PUSH_STREAMS", "0x10"],
      ["GATEWAY_AUTH_UPSTREAM_URL", "auth.internal:8081"],
      ["GATEWAY_AUTH_UPSTREAM_URL", "ftp://auth.internal"],
      ["GATEWAY_LOG_LEVEL", "verbose"],
      ["GATEWAY_LOG_LEVEL", "INFO"],
      // Redis PX and Node timers take whole milliseconds up to 2^31 - 1.
      ["GATEWAY_REQUEST_MAX_CLOCK_SKEW", "1.00025s"],
      ["GATEWAY_REDIS_COMMAND_TIMEOUT", "1500us"],
      ["GATEWAY_SHUTDOWN_TIMEOUT", "600h"],
      ["GATEWAY_CLIENT_EVENTS_REDIS_STREAM", "gateway:session_events"],
    ])("fails naming %s for %j", (name, value) => {
      expectNamesVariable(configError({ ...REQUIRED, [name]: value }), name);
    });

    // Push history (§12): the whole message, with the accepted range or form.
    it.each([
      ["GATEWAY_PUSH_HISTORY_SIZE", "-1", 'expected an integer from 0 to 100000, got "-1"'],
      ["GATEWAY_PUSH_HISTORY_SIZE", "abc", 'expected an integer from 0 to 100000, got "abc"'],
      ["GATEWAY_PUSH_HISTORY_SIZE", "1.5", 'expected an integer from 0 to 100000, got "1.5"'],
      ["GATEWAY_PUSH_HISTORY_SIZE", "100001", 'expected an integer from 0 to 100000, got "100001"'],
      [
        "GATEWAY_PUSH_HISTORY_TTL",
        "-1s",
        'expected a Go duration such as 500ms, 5s or 1m30s, got "-1s"',
      ],
      [
        "GATEWAY_PUSH_HISTORY_TTL",
        "10",
        'expected a Go duration such as 500ms, 5s or 1m30s, got "10"',
      ],
      [
        "GATEWAY_PUSH_HISTORY_TTL",
        "abc",
        'expected a Go duration such as 500ms, 5s or 1m30s, got "abc"',
      ],
      [
        "GATEWAY_PUSH_HISTORY_TTL",
        "600h",
        'expected a whole number of milliseconds up to 2147483647ms (about 24 days), got "600h"',
      ],
    ])("fails naming %s for %j with the reason an operator can act on", (name, value, problem) => {
      const error = configError({ ...REQUIRED, [name]: value });
      expectNamesVariable(error, name);
      expect(error.message).toBe(`${name}: ${problem}`);
    });
  });

  describe("the Redis password", () => {
    it("is taken as-is, even when it would be invalid anywhere else", () => {
      const password = "5 s:[::1] -1s,,\t%s";
      expect(load({ GATEWAY_REDIS_PASSWORD: password }).redis.password).toBe(password);
    });

    it("never appears when a deprecated variable fails startup", () => {
      const error = configError({ ...REQUIRED, GATEWAY_REDIS_USERNAME: PASSWORD });
      expectNamesVariable(error, "GATEWAY_REDIS_USERNAME");
      for (const text of renderings(error)) expect(text).not.toContain(PASSWORD);
    });

    // Operators paste secrets into the wrong variable (a Redis URL with
    // credentials in the address, say); the error must still not print it.
    it.each([
      ["GATEWAY_REDIS_MASTER_ADDR", (password: string) => `redis://:${password}@redis:6379`],
      ["GATEWAY_REDIS_REPLICA_ADDRS", (password: string) => `r1:6379,${password}`],
      ["GATEWAY_REDIS_DB", (password: string) => password],
      ["GATEWAY_REDIS_PING_TIMEOUT", (password: string) => password],
      ["GATEWAY_PUBLIC_HTTP_ADDR", (password: string) => password],
      ["GATEWAY_AUTH_UPSTREAM_URL", (password: string) => password],
    ])("never appears in the error naming %s when that variable holds it", (name, holding) => {
      const error = configError({ ...REQUIRED, [name]: holding(PASSWORD) });
      expectNamesVariable(error, name);
      for (const text of renderings(error)) expect(text).not.toContain(PASSWORD);
    });

    it("never appears in the error for any invalid value of any other variable", () => {
      const error = configError({
        ...REQUIRED,
        GATEWAY_REDIS_PASSWORD: "hunter2-pw",
        GATEWAY_REDIS_DB: "16",
      });
      expectNamesVariable(error, "GATEWAY_REDIS_DB");
      for (const text of renderings(error)) expect(text).not.toContain("hunter2-pw");
    });
  });

  describe("gRPC TLS", () => {
    it("serves TLS when both paths are set", () => {
      expect(
        load({ GATEWAY_GRPC_TLS_CERT_PATH: "/tls/c.pem", GATEWAY_GRPC_TLS_KEY_PATH: "/tls/k.pem" })
          .grpcTls,
      ).toEqual({ certPath: "/tls/c.pem", keyPath: "/tls/k.pem" });
    });

    it.each([
      ["GATEWAY_GRPC_TLS_CERT_PATH", "GATEWAY_GRPC_TLS_KEY_PATH", undefined],
      ["GATEWAY_GRPC_TLS_CERT_PATH", "GATEWAY_GRPC_TLS_KEY_PATH", ""],
      ["GATEWAY_GRPC_TLS_KEY_PATH", "GATEWAY_GRPC_TLS_CERT_PATH", undefined],
      ["GATEWAY_GRPC_TLS_KEY_PATH", "GATEWAY_GRPC_TLS_CERT_PATH", ""],
    ])("with only %s set, fails naming the missing %s (%j)", (present, missing, missingValue) => {
      const error = configError({ ...REQUIRED, [present]: "/tls/x.pem", [missing]: missingValue });
      expectNamesVariable(error, missing);
    });
  });
});

/**
 * The stateless part of the gateway as one Web-standard fetch handler
 * (contract §14): the §8 public routes and ExecuteCommand over Connect and
 * gRPC-Web unary, for any fetch-style runtime (Node, Deno, Bun, workers) and
 * for tests that call it with `new Request(...)` and no socket.
 */
import { createExecuteCommandHandler } from "../../handlers/execute-command.js";
import type {
  AuthUpstream,
  Clock,
  Logger,
  ReplayStore,
  ResponseSigner,
  Router,
  Routes,
  SessionStore,
} from "../../handlers/ports.js";
import { createStaticRouter } from "../../handlers/router.js";
import { loadConfig } from "../config/config.js";
import { DEFAULTS } from "../config/defaults.js";
import { loadRoutesModule } from "../config/routes-module.js";
import { loadResponseSigner } from "../config/signer.js";
import { createHttpAuthUpstream } from "../http/auth-upstream.js";
import { createPublicHttpApp } from "../http/public.js";
import { connectRedis } from "../redis/connection.js";
import { createRedisReplayStore } from "../redis/replay-store.js";
import { createRedisSessionStore } from "../redis/session-store.js";
import { createLogger, SILENT_LOGGER } from "../telemetry/logger.js";
import { within } from "./within.js";

/** A Web-standard request handler and the way to release what it holds. */
export interface FetchHandler {
  /** Answers one request as the public listener would; never rejects for a request it can parse. */
  fetch(request: Request): Promise<Response>;
  /**
   * Stops serving: `/readyz` answers `503` and new calls `UNAVAILABLE`,
   * `gateway is shutting down`; then releases what the handler opened itself
   * (its Redis connection). Safe to call twice.
   */
  close(): Promise<void>;
}

/** The ports and limits of {@link createFetchHandlerFromPorts}. */
export interface FetchHandlerPorts {
  /** Device sessions. */
  readonly sessions: SessionStore;
  /** Replay reservations. */
  readonly replay: ReplayStore;
  /** The gateway's response signer. */
  readonly signer: ResponseSigner;
  /** Routes by `message_type`. */
  readonly router: Router;
  /** The auth upstream; without one the auth routes answer `503 service_unavailable`. */
  readonly authUpstream?: AuthUpstream;
  /** Wall clock; the system clock by default. */
  readonly clock?: Clock;
  /** Where unexpected failures are logged; silent by default. */
  readonly logger?: Logger;
  /** Allowed `|now − timestamp_ms|` in ms; 30 s by default. */
  readonly maxClockSkewMs?: number;
  /** Largest command payload in bytes; 262144 by default. */
  readonly maxCommandPayloadBytes?: number;
  /** Browser origins answered with CORS headers; none by default. */
  readonly corsAllowedOrigins?: readonly string[];
}

/**
 * The fetch handler over the given ports: the same app and ExecuteCommand
 * pipeline as the node's public listener. `close()` releases nothing of the
 * ports; they stay the caller's.
 *
 * @example
 * const handler = createFetchHandlerFromPorts({ sessions, replay, signer, router });
 * const response = await handler.fetch(new Request("http://gateway/healthz"));
 */
export function createFetchHandlerFromPorts(ports: FetchHandlerPorts): FetchHandler {
  const logger = ports.logger ?? SILENT_LOGGER;
  const maxCommandPayloadBytes = ports.maxCommandPayloadBytes ?? DEFAULTS.maxCommandPayloadBytes;
  let closed = false;
  const executeCommand = createExecuteCommandHandler({
    sessions: ports.sessions,
    replay: ports.replay,
    clock: ports.clock ?? { now: () => Date.now() },
    signer: ports.signer,
    router: ports.router,
    maxClockSkewMs: ports.maxClockSkewMs ?? DEFAULTS.maxClockSkewMs,
    maxPayloadBytes: maxCommandPayloadBytes,
  });
  const app = createPublicHttpApp({
    authUpstream: ports.authUpstream,
    isReady: () => !closed,
    logger,
    connect: {
      methods: { executeCommand },
      maxCommandPayloadBytes,
      isShuttingDown: () => closed,
    },
    corsAllowedOrigins: ports.corsAllowedOrigins ?? [],
  });
  return {
    fetch: async (request) => app.fetch(request),
    close: async () => {
      closed = true;
    },
  };
}

/** Options of {@link createFetchHandler}. */
export interface FetchHandlerOptions {
  /** The gateway's environment variables (contract §2); `process.env` by default. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Routes by `message_type`; by default the `routes` export of `GATEWAY_ROUTES_MODULE`. */
  readonly routes?: Routes;
  /** The auth upstream; by default the HTTP adapter for `GATEWAY_AUTH_UPSTREAM_URL`, if set. */
  readonly authUpstream?: AuthUpstream;
  /** Logger; a consola logger at `GATEWAY_LOG_LEVEL` by default. */
  readonly logger?: Logger;
}

/**
 * The fetch handler configured from the same environment variables as the
 * node. The configuration is validated at once (a bad value throws a
 * ConfigError naming the variable); the signer key, the routes module and the
 * Redis connection (one bounded `PING`) are set up on the first request, and
 * a request made while one of them fails rejects, the next one trying again.
 *
 * Sessions are read from Redis on every call: without the node's
 * session-events reader nothing would tell a cache about a revoke.
 *
 * @example
 * // A worker-style module (Deno, Bun): `export default { fetch }`.
 * const handler = createFetchHandler();
 * export default { fetch: (request: Request) => handler.fetch(request) };
 */
export function createFetchHandler(options: FetchHandlerOptions = {}): FetchHandler {
  const config = loadConfig(options.env ?? process.env);
  const logger = options.logger ?? createLogger(config.logLevel);
  let closed = false;
  let started: Promise<{ handler: FetchHandler; close: () => Promise<void> }> | undefined;

  const start = async () => {
    const signer = await loadResponseSigner(config.signerKeyPath);
    const routes =
      options.routes ??
      (config.routesModule === undefined ? undefined : await loadRoutesModule(config.routesModule));
    const redis = await connectRedis(config.redis, logger);
    const handler = createFetchHandlerFromPorts({
      sessions: createRedisSessionStore({
        redis,
        keyPrefix: config.redis.keyPrefix,
        ttlMs: 0,
        maxEntries: config.sessionCacheMaxEntries,
        logger,
      }),
      replay: createRedisReplayStore({
        redis,
        keyPrefix: config.redis.keyPrefix,
        maxClockSkewMs: config.maxClockSkewMs,
      }),
      signer,
      router: createStaticRouter(routes),
      authUpstream:
        options.authUpstream ??
        (config.authUpstreamUrl === undefined
          ? undefined
          : createHttpAuthUpstream({ baseUrl: config.authUpstreamUrl, logger })),
      logger,
      maxClockSkewMs: config.maxClockSkewMs,
      maxCommandPayloadBytes: config.maxCommandPayloadBytes,
      corsAllowedOrigins: config.corsAllowedOrigins,
    });
    const close = async () => {
      await handler.close();
      try {
        await within("Redis QUIT", config.shutdownTimeoutMs, redis.quit());
      } catch {
        redis.disconnect();
      }
    };
    return { handler, close };
  };

  const ready = () => {
    // Nothing is opened once closed: close() would not release it.
    if (closed && started === undefined) throw new Error("the fetch handler is closed");
    started ??= start().catch((error: unknown) => {
      started = undefined;
      logger.error("fetch handler: startup failed", error);
      throw error;
    });
    return started;
  };

  return {
    async fetch(request) {
      return (await ready()).handler.fetch(request);
    },
    async close() {
      if (closed) return;
      closed = true;
      const running = await started?.catch(() => undefined);
      await running?.close();
    },
  };
}

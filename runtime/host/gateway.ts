/**
 * The composition root: builds every component from configuration, starts
 * them in order and stops them in the order of contract §10.
 */
import {
  createServer as createHttpServer,
  type Server as HttpServer,
  type RequestListener,
} from "node:http";
import { ServerCredentials } from "@grpc/grpc-js";
import type { Redis } from "ioredis";
import type { Server as GrpcServer } from "nice-grpc";
import { createExecuteCommandHandler } from "../../handlers/execute-command.js";
import type {
  AuthUpstream,
  Clock,
  DeviceSession,
  Logger,
  ResponseSigner,
  Routes,
} from "../../handlers/ports.js";
import { createStaticRouter } from "../../handlers/router.js";
import { createSubscribeEventsAuthenticator, signEvent } from "../../handlers/subscribe-events.js";
import { formatAddress, type GatewayConfig, loadConfig } from "../config/config.js";
import { loadRoutesModule } from "../config/routes-module.js";
import { loadResponseSigner } from "../config/signer.js";
import { createGrpcHealth } from "../grpc/health.js";
import { addGrpcReflection } from "../grpc/reflection.js";
import {
  createGatewayMiddleware,
  createGrpcServer,
  deadlineOf,
  loadGrpcTls,
  SafeEdgeGatewayServiceDefinition,
} from "../grpc/server.js";
import { createSubscribeEventsMethod, pushStreamInterceptor } from "../grpc/subscribe-events.js";
import { createGrpcTracingMiddleware, traceHeadersOf } from "../grpc/tracing.js";
import { createAdminHttpServer } from "../http/admin.js";
import { createHttpAuthUpstream } from "../http/auth-upstream.js";
import { closeHttp, listenHttp, within } from "../http/listen.js";
import { createPublicHttpApp, toNodeListener } from "../http/public.js";
import { createPushHub, type PushHub } from "../push/push-hub.js";
import { connectRedis } from "../redis/connection.js";
import { createRedisReplayStore } from "../redis/replay-store.js";
import { type CachedSessionStore, createRedisSessionStore } from "../redis/session-store.js";
import { createClientEventsHandler } from "../streams/client-events.js";
import { createSessionEventsHandler } from "../streams/session-events.js";
import { createStreamReader, type StreamReader } from "../streams/stream-reader.js";
import { createLogger } from "../telemetry/logger.js";
import { createMetrics, type Metrics } from "../telemetry/metrics.js";
import { observeRedisCommands } from "../telemetry/telemetry.js";

/** Options of {@link createGateway}. */
export interface GatewayOptions {
  /** Validated configuration; read from the environment when absent. */
  readonly config?: GatewayConfig;
  /** Downstream routes by `message_type`; none by default (every command is UNIMPLEMENTED). */
  readonly routes?: Routes;
  /** Auth upstream adapter; by default the HTTP adapter when `GATEWAY_AUTH_UPSTREAM_URL` is set. */
  readonly authUpstream?: AuthUpstream;
  /** Logger; a consola logger at `GATEWAY_LOG_LEVEL` by default. */
  readonly logger?: Logger;
  /** Wall clock; `Date.now` by default. */
  readonly clock?: Clock;
  /**
   * Telemetry to flush as the last shutdown step; the bin passes the SDK it
   * started. Embedders that run their own SDK leave it out.
   */
  readonly telemetry?: { shutdown(): Promise<void> };
  /**
   * Serves the public HTTP app some other way (dev mode serves it through
   * listhen); by default a `node:http` server on `GATEWAY_PUBLIC_HTTP_ADDR`.
   */
  readonly servePublicHttp?: (listener: RequestListener) => Promise<PublicHttpListener>;
}

/** A public HTTP listener started by {@link GatewayOptions.servePublicHttp}. */
export interface PublicHttpListener {
  /** Bound `host:port`. */
  readonly address: string;
  /** Stops listening and closes connections. */
  close(): Promise<void>;
}

/** Bound listener addresses as `host:port`. */
export interface GatewayAddresses {
  readonly publicHttp: string;
  readonly grpc: string;
  readonly adminHttp?: string;
}

/** A running (or startable) gateway. */
export interface Gateway {
  /** Starts every component; resolves once ready, rejects (leaving nothing open) on any failure. */
  start(): Promise<void>;
  /** Runs the ordered shutdown of contract §10 without exiting the process. */
  stop(): Promise<void>;
  /** Bound addresses; available once started. */
  readonly addresses: GatewayAddresses;
  /** True between a successful start and the beginning of shutdown. */
  readonly ready: boolean;
  /** The gateway's metrics registry and instruments. */
  readonly metrics: Metrics;
  /** The configuration in use; available once `start()` has loaded it. */
  readonly config: GatewayConfig;
  /** The response signer; available once started. */
  readonly signer: ResponseSigner;
}

type Step = { readonly name: string; readonly run: () => Promise<unknown> };

/**
 * Creates a gateway host.
 *
 * @example
 * const gateway = createGateway({
 *   routes: { "demo.echo": async (command) => ({ resultCode: "ok", payload: command.payload }) },
 * });
 * await gateway.start();
 * console.log(gateway.addresses.grpc);
 * await gateway.stop();
 */
export function createGateway(options: GatewayOptions = {}): Gateway {
  const metrics = createMetrics();
  const clock = options.clock ?? { now: () => Date.now() };
  let config: GatewayConfig | undefined = options.config;
  let logger: Logger = options.logger ?? createLogger(config?.logLevel);
  let signer: ResponseSigner | undefined;
  let addresses: GatewayAddresses | undefined;
  let ready = false;
  let shuttingDown = false;
  let started: Promise<void> | undefined;
  let stopped: Promise<void> | undefined;

  let redis: Redis | undefined;
  let hub: PushHub | undefined;
  let readers: StreamReader[] = [];
  const health = createGrpcHealth();
  let grpcServer: GrpcServer | undefined;
  let publicServer: HttpServer | undefined;
  let customPublic: PublicHttpListener | undefined;
  let adminServer: HttpServer | undefined;

  async function start(): Promise<void> {
    config ??= loadConfig();
    const cfg = config;
    if (options.logger === undefined && options.config === undefined) {
      logger = createLogger(cfg.logLevel);
    }

    const responseSigner = await loadResponseSigner(cfg.signerKeyPath);
    signer = responseSigner;
    const grpcCredentials =
      cfg.grpcTls === undefined
        ? ServerCredentials.createInsecure()
        : await loadGrpcTls(cfg.grpcTls);
    // Like the signer key, a bad routes module fails startup before Redis is touched.
    const router = createStaticRouter(
      options.routes ??
        (cfg.routesModule === undefined ? undefined : await loadRoutesModule(cfg.routesModule)),
    );

    try {
      redis = await connectRedis(cfg.redis, logger, (client) =>
        observeRedisCommands(client, metrics.redisCommandDuration),
      );
      logger.info(
        `Redis connected: addr=${formatAddress(cfg.redis.master)} db=${cfg.redis.db} key_prefix=${cfg.redis.keyPrefix}`,
      );
      if (cfg.redis.replicas.length > 0) {
        logger.info(
          `Redis replicas reserved, unused: ${cfg.redis.replicas.map(formatAddress).join(",")}`,
        );
      }
      logger.info(`session events stream: ${cfg.sessionEventsStream}`);
      logger.info(`client events stream: ${cfg.clientEventsStream}`);
      logger.info(`response signer key_id=${responseSigner.keyId}`);

      const sessions = createRedisSessionStore({
        redis,
        keyPrefix: cfg.redis.keyPrefix,
        ttlMs: cfg.sessionCacheTtlMs,
        maxEntries: cfg.sessionCacheMaxEntries,
        clock,
        logger,
      });
      const replay = createRedisReplayStore({
        redis,
        keyPrefix: cfg.redis.keyPrefix,
        maxClockSkewMs: cfg.maxClockSkewMs,
      });
      const executeCommand = createExecuteCommandHandler({
        sessions,
        replay,
        clock,
        signer: responseSigner,
        router,
        maxClockSkewMs: cfg.maxClockSkewMs,
        maxPayloadBytes: cfg.maxCommandPayloadBytes,
      });

      const pushHub = createPushHub({
        queueSize: cfg.pushStreamQueueSize,
        maxStreamsPerSession: cfg.maxStreamsPerSession,
        maxStreams: cfg.maxPushStreams,
        terminalTimeoutMs: cfg.shutdownTimeoutMs,
        metrics,
        logger,
      });
      hub = pushHub;
      const readerCount = Math.min(cfg.pushStreamQueueSize, 128);
      const sessionReader = createStreamReader({
        redis,
        stream: cfg.sessionEventsStream,
        count: readerCount,
        logger,
        metrics,
        onEntries: createSessionEventsHandler({
          apply: (snapshot) => {
            sessions.applySnapshot(snapshot);
            // A revoked session's streams end as revoked; streams opened under
            // another user or key end as changed.
            pushHub.reconcile(snapshot.deviceSessionId, snapshot);
          },
          metrics,
          logger,
        }),
        onGap: async (gap) => {
          // Snapshots were lost: nothing cached can be trusted, and every open
          // stream's session is re-checked against Redis.
          logger.warn(
            `session events ${gap.kind}: ${gap.reason}; dropping the session cache and re-checking open streams`,
          );
          sessions.clear();
          await recheckOpenStreams(pushHub, sessions, logger);
        },
      });
      const clientReader = createStreamReader({
        redis,
        stream: cfg.clientEventsStream,
        count: readerCount,
        logger,
        metrics,
        onEntries: createClientEventsHandler({
          deliver: (event) =>
            pushHub.publish(
              () =>
                signEvent(responseSigner, {
                  eventId: event.eventId,
                  eventType: event.eventType,
                  requestId: event.requestId,
                  timestampMs: clock.now(),
                  payload: event.payload,
                }),
              { userId: event.userId, deviceSessionId: event.deviceSessionId },
            ),
          metrics,
          logger,
          maxPayloadBytes: cfg.maxEventPayloadBytes,
        }),
        onGap: (gap) => {
          logger.warn(
            `client events ${gap.kind}: ${gap.reason}; ${
              gap.kind === "trimmed"
                ? "entries trimmed before this node read them are not delivered"
                : `resuming after ${gap.resumeAfter}`
            }`,
          );
        },
      });
      readers = [sessionReader, clientReader];
      await sessionReader.start();
      await clientReader.start();
      logger.info(
        `stream readers started: ${cfg.sessionEventsStream} from ${sessionReader.cursor()}, ${cfg.clientEventsStream} from ${clientReader.cursor()}`,
      );

      grpcServer = createGrpcServer({
        maxCommandPayloadBytes: cfg.maxCommandPayloadBytes,
        interceptors: [pushStreamInterceptor],
      });
      grpcServer
        .with(createGrpcTracingMiddleware())
        .with(createGatewayMiddleware({ logger, metrics, isShuttingDown: () => shuttingDown }))
        .add(SafeEdgeGatewayServiceDefinition, {
          executeCommand: (request, context) =>
            executeCommand(request, {
              signal: context.signal,
              deadline: deadlineOf(context),
              logger,
              traceHeaders: traceHeadersOf(),
            }),
          subscribeEvents: createSubscribeEventsMethod({
            authenticate: createSubscribeEventsAuthenticator({
              sessions,
              replay,
              clock,
              maxClockSkewMs: cfg.maxClockSkewMs,
            }),
            sessions,
            hub: pushHub,
            signer: responseSigner,
            clock,
            cursor: () => clientReader.cursor(),
            logger,
          }),
        });
      grpcServer.add(health.definition, health.implementation);
      addGrpcReflection(grpcServer);
      const grpcAddress = await bindGrpc(grpcServer, cfg.grpcAddr, grpcCredentials);
      logger.info(`authenticated gRPC listening on ${grpcAddress}${cfg.grpcTls ? " (TLS)" : ""}`);

      const authUpstream =
        options.authUpstream ??
        (cfg.authUpstreamUrl === undefined
          ? undefined
          : createHttpAuthUpstream({ baseUrl: cfg.authUpstreamUrl, logger }));
      const app = createPublicHttpApp({
        authUpstream,
        isReady: () => ready,
        logger,
        metrics,
      });
      let publicAddress: string;
      if (options.servePublicHttp !== undefined) {
        customPublic = await options.servePublicHttp(toNodeListener(app) as RequestListener);
        publicAddress = customPublic.address;
      } else {
        publicServer = createHttpServer(toNodeListener(app));
        publicAddress = await listenHttp(publicServer, cfg.publicHttpAddr);
      }
      logger.info(`public HTTP listening on ${publicAddress}`);
      if (authUpstream === undefined) {
        logger.warn("no auth upstream adapter: public auth routes answer 503 service_unavailable");
      }

      let adminAddress: string | undefined;
      if (cfg.adminHttpAddr !== undefined) {
        adminServer = createAdminHttpServer(metrics.registry, logger);
        adminAddress = await listenHttp(adminServer, cfg.adminHttpAddr);
        logger.info(`admin HTTP listening on ${adminAddress}`);
      } else {
        logger.info("admin HTTP disabled (GATEWAY_ADMIN_HTTP_ADDR is empty)");
      }

      addresses = {
        publicHttp: publicAddress,
        grpc: grpcAddress,
        ...(adminAddress === undefined ? {} : { adminHttp: adminAddress }),
      };
      if (shuttingDown) return;
      ready = true;
      health.setServing(true);
      logger.info("gateway ready");
    } catch (error) {
      await teardown(Math.min(cfg.shutdownTimeoutMs, 2000));
      throw error;
    }
  }

  /** Closes whatever is open, without the ordered, logged sequence. */
  async function teardown(budgetMs: number): Promise<void> {
    await Promise.all(readers.map((reader) => reader.stop().catch(() => {})));
    grpcServer?.forceShutdown();
    await closeListeners(budgetMs);
    redis?.disconnect();
  }

  async function closeListeners(budgetMs: number): Promise<void> {
    await Promise.all([
      publicServer ? closeHttp(publicServer, budgetMs) : customPublic?.close(),
      adminServer ? closeHttp(adminServer, budgetMs) : undefined,
    ]);
  }

  async function stop(): Promise<void> {
    ready = false;
    shuttingDown = true;
    const budgetMs = config?.shutdownTimeoutMs ?? 5000;
    const steps: Step[] = [
      {
        name: "readiness set to not ready",
        // A stop during startup also lets startup finish (or fail) first.
        run: async () => {
          health.setServing(false);
          await started?.catch(() => {});
        },
      },
      {
        name: "stream readers stopped",
        run: () => Promise.all(readers.map((reader) => reader.stop())),
      },
      {
        name: "push hub closed",
        run: async () => {
          health.close();
          await hub?.close();
        },
      },
      {
        name: "gRPC server stopped",
        run: async () => {
          const server = grpcServer;
          if (server === undefined) return;
          try {
            await within("gRPC graceful stop", budgetMs, server.shutdown());
          } catch (error) {
            logger.warn(`${(error as Error).message}; forcing`);
            server.forceShutdown();
          }
        },
      },
      {
        name: "HTTP listeners closed",
        run: () => closeListeners(budgetMs),
      },
      {
        name: "Redis connections closed",
        run: async () => {
          const client = redis;
          if (client === undefined || client.status === "end") return;
          try {
            await within("Redis QUIT", budgetMs, client.quit());
          } catch {
            client.disconnect();
          }
        },
      },
      {
        name: "telemetry flushed",
        run: async () => options.telemetry?.shutdown(),
      },
    ];
    for (const step of steps) {
      try {
        await within(step.name, budgetMs, step.run());
        logger.info(`shutdown: ${step.name}`);
      } catch (error) {
        logger.warn(`shutdown: ${(error as Error).message}`);
      }
    }
  }

  return {
    start() {
      started ??= start();
      return started;
    },
    stop() {
      stopped ??= stop();
      return stopped;
    },
    get addresses() {
      if (addresses === undefined) throw new Error("gateway is not started");
      return addresses;
    },
    get ready() {
      return ready;
    },
    get config() {
      if (config === undefined) throw new Error("gateway configuration is not loaded yet");
      return config;
    },
    get signer() {
      if (signer === undefined) throw new Error("gateway is not started");
      return signer;
    },
    metrics,
  };
}

/**
 * After session snapshots were lost, re-reads the session of every open
 * stream from Redis: streams of sessions now revoked or gone end as revoked,
 * streams opened under another user or key end as changed. A session that
 * cannot be read (Redis still reconnecting) is retried briefly, then its
 * streams end with UNAVAILABLE so clients reconnect and authenticate again.
 */
async function recheckOpenStreams(
  hub: PushHub,
  sessions: CachedSessionStore,
  logger: Logger,
): Promise<void> {
  const recheck = async (deviceSessionId: string) => {
    let session: DeviceSession | undefined;
    try {
      session = await withRetries(() => sessions.refresh(deviceSessionId));
    } catch (error) {
      logger.warn(
        `re-check of session ${deviceSessionId} failed: ${(error as Error).message}; ending its streams`,
      );
      hub.endSession(deviceSessionId, "recheck_failed");
      return;
    }
    hub.reconcile(deviceSessionId, session);
  };
  // A few reads in flight at a time: the session-events reader waits for this.
  const pending = hub.openSessionIds();
  const workers = Array.from({ length: Math.min(32, pending.length) }, async () => {
    for (let next = pending.pop(); next !== undefined; next = pending.pop()) await recheck(next);
  });
  await Promise.all(workers);
}

/** Runs `call`, retrying failures 5 times with doubling delays from 50 ms. */
async function withRetries<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      if (attempt >= 5) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50 * 2 ** attempt));
    }
  }
}

/** Binds the gRPC server; an empty host binds all interfaces (IPv6 dual-stack, else IPv4). */
async function bindGrpc(
  server: GrpcServer,
  address: { host: string; port: number },
  credentials: ServerCredentials,
): Promise<string> {
  if (address.host !== "") {
    const port = await server.listen(formatAddress(address), credentials);
    return formatAddress({ host: address.host, port });
  }
  try {
    const port = await server.listen(`[::]:${address.port}`, credentials);
    return formatAddress({ host: "::", port });
  } catch {
    const port = await server.listen(`0.0.0.0:${address.port}`, credentials);
    return formatAddress({ host: "0.0.0.0", port });
  }
}

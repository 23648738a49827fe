/**
 * The gateway's components, one per step of the shutdown sequence (§10).
 * Each is built from configuration up front; what a component needs from one
 * started before it (the Redis client, the response signer) it reads through
 * a getter when it starts.
 */
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { ServerCredentials as Credentials, type ServerCredentials } from "@grpc/grpc-js";
import type { Server as GrpcServer } from "nice-grpc";
import type { Ed25519 } from "../../handlers/ed25519.js";
import type { AuthUpstream, Logger, ResponseSigner, Router } from "../../handlers/ports.js";
import { createStaticRouter } from "../../handlers/router.js";
import { formatAddress, type GatewayConfig } from "../config/config.js";
import { loadRoutesModule } from "../config/routes-module.js";
import { loadResponseSigner } from "../config/signer.js";
import { loadEd25519 } from "../config/sodium-ed25519.js";
import type { GrpcHealth } from "../grpc/health.js";
import { combineLanes, streamLanesSupported } from "../grpc/http2-lane.js";
import type { GrpcService } from "../grpc/methods.js";
import { addGrpcReflection } from "../grpc/reflection.js";
import {
  createGatewayMiddleware,
  createGrpcServer,
  loadGrpcTls,
  maxReceiveMessageBytes,
} from "../grpc/server.js";
import { pushStreamInterceptor } from "../grpc/subscribe-events.js";
import { createGrpcTracingMiddleware } from "../grpc/tracing.js";
import { createAdminHttpServer } from "../http/admin.js";
import { closeHttp, listenHttp } from "../http/listen.js";
import type { PushHub } from "../push/push-hub.js";
import {
  connectRedis,
  type RedisClient,
  readyConnections,
  redisModeOf,
} from "../redis/connection.js";
import type { StreamReader } from "../streams/stream-reader.js";
import { observeRedisCommands } from "../telemetry/ioredis-command-timing.js";
import type { Metrics } from "../telemetry/metrics.js";
import type { PublicHttpListener } from "./gateway.js";
import type { Component } from "./lifecycle.js";
import { appliedGatewayV8Flags } from "./v8-flags.js";
import { within } from "./within.js";

/** What every component may use. */
export interface ComponentContext {
  readonly config: GatewayConfig;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/** The Redis connection, with the startup checks made before it (signer key, routes). */
export interface CoreComponent extends Component {
  readonly redis: () => RedisClient;
  readonly signer: () => ResponseSigner;
  readonly router: () => Router;
  /** Ed25519 for signing and verifying: libsodium's, or node:crypto's when it cannot load. */
  readonly ed25519: () => Ed25519;
}

/**
 * Loads the signer key and the routes module (preflight: a bad one fails
 * before Redis is touched), then opens the shared Redis client with one
 * bounded PING and logs what the runbook's readiness check reads.
 */
export function createCoreComponent(
  context: ComponentContext,
  routes: Parameters<typeof createStaticRouter>[0],
): CoreComponent {
  const { config, logger, metrics } = context;
  let ed25519: Ed25519 | undefined;
  let signer: ResponseSigner | undefined;
  let router: Router | undefined;
  let redis: RedisClient | undefined;
  let untrackRedis: (() => void) | undefined;
  return {
    stopped: "Redis connections closed",
    shutdownStep: 6,
    async preflight() {
      ed25519 = loadEd25519(logger);
      signer = await loadResponseSigner(config.signerKeyPath, ed25519);
      router = createStaticRouter(
        routes ??
          (config.routesModule === undefined
            ? undefined
            : await loadRoutesModule(config.routesModule)),
      );
    },
    async start() {
      redis = await connectRedis(config.redis, logger, (client) =>
        observeRedisCommands(client, metrics.redisCommandDuration),
      );
      const shared = redis;
      untrackRedis = metrics.trackRedisConnections("commands", () => readyConnections(shared));
      logger.info(
        `Redis connected: mode=${redisModeOf(config.redis)} addr=${formatAddress(config.redis.master)} db=${config.redis.db} key_prefix=${config.redis.keyPrefix}`,
      );
      if (config.redis.replicas.length > 0) {
        logger.info(
          `Redis replicas reserved, unused: ${config.redis.replicas.map(formatAddress).join(",")}`,
        );
      }
      logger.info(`session events stream: ${config.sessionEventsStream}`);
      logger.info(`client events stream: ${config.clientEventsStream}`);
      logger.info(`response signer key_id=${signer?.keyId}`);
      const v8Flags = appliedGatewayV8Flags();
      if (v8Flags.length > 0) logger.info(`V8 flags set by the bin: ${v8Flags.join(" ")}`);
    },
    async stop(budgetMs) {
      untrackRedis?.();
      if (redis === undefined || redis.status === "end") return;
      try {
        await within("Redis QUIT", budgetMs, redis.quit());
      } catch {
        redis.disconnect();
      }
    },
    redis: () => defined(redis, "Redis client"),
    signer: () => defined(signer, "response signer"),
    router: () => defined(router, "router"),
    ed25519: () => defined(ed25519, "Ed25519"),
  };
}

/** Background work a node runs beside its readers (the history router, keep-alives). */
export interface BackgroundTask {
  /** Starts it; may reject when a startup check fails. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * The stream readers — session events, and client events unless fan-out is
 * routed — and the background tasks (history); built when they start, since
 * they need the Redis client.
 */
export function createReadersComponent(
  context: ComponentContext,
  build: () => readonly [
    sessionEvents: StreamReader,
    clientEvents: StreamReader | undefined,
    background: readonly BackgroundTask[],
  ],
): Component & { readonly clientEvents: () => StreamReader | undefined } {
  let readers: readonly StreamReader[] = [];
  let clientEventsReader: StreamReader | undefined;
  let tasks: readonly BackgroundTask[] = [];
  return {
    stopped: "stream readers stopped",
    shutdownStep: 2,
    async start() {
      const [sessionEvents, clientEvents, background] = build();
      clientEventsReader = clientEvents;
      readers = clientEvents === undefined ? [sessionEvents] : [sessionEvents, clientEvents];
      for (const reader of readers) await reader.start();
      const { sessionEventsStream, clientEventsStream } = context.config;
      context.logger.info(
        `stream readers started: ${sessionEventsStream} from ${sessionEvents.cursor()}, ${
          clientEvents === undefined
            ? `${clientEventsStream} routed to users' channels (fan-out routed)`
            : `${clientEventsStream} from ${clientEvents.cursor()}`
        }`,
      );
      tasks = background;
      for (const task of tasks) await task.start();
    },
    async stop() {
      await Promise.all([
        ...readers.map((reader) => reader.stop()),
        ...tasks.map((task) => task.stop()),
      ]);
    },
    clientEvents: () => clientEventsReader,
  };
}

/** The PushHub: nothing to start; closing it ends every open stream (and health watches). */
export function createPushHubComponent(hub: PushHub, health: GrpcHealth): Component {
  return {
    stopped: "push hub closed",
    shutdownStep: 3,
    async stop() {
      health.close();
      await hub.close();
    },
  };
}

/** The authenticated gRPC listener: TLS files checked in preflight, services mounted from a manifest. */
export function createGrpcComponent(
  context: ComponentContext,
  services: () => readonly GrpcService[],
  isShuttingDown: () => boolean,
): Component & { readonly address: () => string } {
  const { config, logger, metrics } = context;
  let credentials: ServerCredentials = Credentials.createInsecure();
  let server: GrpcServer | undefined;
  let address: string | undefined;
  return {
    stopped: "gRPC server stopped",
    shutdownStep: 4,
    async preflight() {
      if (config.grpcTls !== undefined) credentials = await loadGrpcTls(config.grpcTls);
    },
    async start() {
      const mounted = services();
      const laneOptions = {
        logger,
        metrics,
        isShuttingDown,
        maxReceiveMessageBytes: maxReceiveMessageBytes(config.maxCommandPayloadBytes),
      };
      const lane = combineLanes(
        mounted.flatMap((service) =>
          service.lane === undefined ? [] : [service.lane(laneOptions)],
        ),
      );
      if (!streamLanesSupported()) {
        logger.warn(
          "this @grpc/grpc-js release cannot take an HTTP/2 stream lane: ExecuteCommand and SubscribeEvents are served through nice-grpc",
        );
      }
      server = createGrpcServer({
        maxCommandPayloadBytes: config.maxCommandPayloadBytes,
        interceptors: [pushStreamInterceptor],
        lane,
      });
      const gated = server
        .with(createGrpcTracingMiddleware())
        .with(createGatewayMiddleware({ logger, metrics, isShuttingDown }));
      for (const service of mounted) {
        (service.gated ? gated : server).add(service.definition, service.implementation);
      }
      addGrpcReflection(server);
      address = await bindGrpc(server, config.grpcAddr, credentials);
      logger.info(`authenticated gRPC listening on ${address}${config.grpcTls ? " (TLS)" : ""}`);
    },
    async stop(budgetMs) {
      if (server === undefined) return;
      try {
        await within("gRPC graceful stop", budgetMs, server.shutdown());
      } catch (error) {
        logger.warn(`${(error as Error).message}; forcing`);
        server.forceShutdown();
      }
    },
    address: () => defined(address, "gRPC address"),
  };
}

/** How the public HTTP app is served: a node:http listener by default, listhen in dev mode. */
export type ServePublicHttp = (
  listener: Parameters<typeof createHttpServer>[1] & object,
) => Promise<PublicHttpListener>;

/** The public HTTP listener and, when configured, the admin listener. */
export function createHttpComponent(
  context: ComponentContext,
  publicListener: () => Parameters<ServePublicHttp>[0],
  servePublicHttp: ServePublicHttp | undefined,
  authUpstream: AuthUpstream | undefined,
): Component & { readonly addresses: () => { publicHttp: string; adminHttp?: string } } {
  const { config, logger, metrics } = context;
  let publicHttp: PublicHttpListener | undefined;
  let admin: HttpServer | undefined;
  let adminAddress: string | undefined;
  return {
    stopped: "HTTP listeners closed",
    shutdownStep: 5,
    async start() {
      publicHttp = await (servePublicHttp ?? serveNodeHttp(config))(publicListener());
      logger.info(`public HTTP listening on ${publicHttp.address}`);
      if (authUpstream === undefined) {
        logger.warn("no auth upstream adapter: public auth routes answer 503 service_unavailable");
      }
      if (config.adminHttpAddr === undefined) {
        logger.info("admin HTTP disabled (GATEWAY_ADMIN_HTTP_ADDR is empty)");
        return;
      }
      admin = createAdminHttpServer(metrics.registry, logger);
      adminAddress = await listenHttp(admin, config.adminHttpAddr);
      logger.info(`admin HTTP listening on ${adminAddress}`);
    },
    async stop(budgetMs) {
      await Promise.all([publicHttp?.close(), admin ? closeHttp(admin, budgetMs) : undefined]);
    },
    addresses: () => ({
      publicHttp: defined(publicHttp, "public HTTP listener").address,
      ...(adminAddress === undefined ? {} : { adminHttp: adminAddress }),
    }),
  };
}

/**
 * Serves the public app on a node:http server bound to `GATEWAY_PUBLIC_HTTP_ADDR`;
 * closing it ends busy connections after `GATEWAY_SHUTDOWN_TIMEOUT`.
 */
function serveNodeHttp(config: GatewayConfig): ServePublicHttp {
  return async (listener) => {
    const server = createHttpServer(listener);
    const address = await listenHttp(server, config.publicHttpAddr);
    return { address, close: () => closeHttp(server, config.shutdownTimeoutMs) };
  };
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

function defined<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`${what} is not started`);
  return value;
}

/**
 * The composition root: builds every component from configuration, starts
 * them in order and stops them in the order of contract §10.
 */
import { readFile } from "node:fs/promises";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import type { Redis } from "ioredis";
import type { Server as GrpcServer } from "nice-grpc";
import { ServerError, Status } from "nice-grpc";
import { createExecuteCommandHandler } from "../handlers/execute-command.js";
import type { AuthUpstream, Clock, Logger, ResponseSigner, Routes } from "../handlers/ports.js";
import { createAdminHttpServer } from "./admin-http.js";
import { formatAddress, type GatewayConfig, loadConfig } from "./config.js";
import {
  createGatewayMiddleware,
  createGrpcServer,
  deadlineOf,
  grpcCredentials,
  SafeEdgeGatewayServiceDefinition,
  SHUTTING_DOWN_MESSAGE,
} from "./grpc-server.js";
import { createHttpAuthUpstream } from "./http-auth-upstream.js";
import { closeHttp, listenHttp, within } from "./listen.js";
import { createLogger } from "./logger.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { createPublicHttpApp, toNodeListener } from "./public-http.js";
import { connectRedis } from "./redis.js";
import { createRedisReplayStore } from "./replay-store.js";
import { createStaticRouter } from "./router.js";
import { type CachedSessionStore, createRedisSessionStore } from "./session-store.js";
import { loadResponseSigner } from "./signer.js";

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
  /** Called with each Redis connection the gateway opens (tracing and metrics hooks). */
  readonly instrumentRedis?: (redis: Redis) => void;
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
  let logger: Logger = options.logger ?? createLogger(config?.logLevel ?? "info");
  let signer: ResponseSigner | undefined;
  let addresses: GatewayAddresses | undefined;
  let ready = false;
  let shuttingDown = false;
  let started: Promise<void> | undefined;
  let stopped: Promise<void> | undefined;

  let redis: Redis | undefined;
  let sessions: CachedSessionStore | undefined;
  let grpcServer: GrpcServer | undefined;
  let publicServer: HttpServer | undefined;
  let adminServer: HttpServer | undefined;

  async function start(): Promise<void> {
    config ??= loadConfig();
    const cfg = config;
    if (options.logger === undefined) logger = createLogger(cfg.logLevel);

    signer = await loadResponseSigner(cfg.signerKeyPath);
    const grpcTls =
      cfg.grpcTls === undefined
        ? undefined
        : {
            cert: await readFile(cfg.grpcTls.certPath),
            key: await readFile(cfg.grpcTls.keyPath),
          };

    try {
      redis = await connectRedis(cfg.redis, logger, options.instrumentRedis);
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
      logger.info(`response signer key_id=${signer.keyId}`);

      sessions = createRedisSessionStore({
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
        signer,
        router: createStaticRouter(options.routes),
        maxClockSkewMs: cfg.maxClockSkewMs,
        maxPayloadBytes: cfg.maxCommandPayloadBytes,
      });

      grpcServer = createGrpcServer({ maxCommandPayloadBytes: cfg.maxCommandPayloadBytes });
      grpcServer
        .with(createGatewayMiddleware({ logger, metrics, isShuttingDown: () => shuttingDown }))
        .add(SafeEdgeGatewayServiceDefinition, {
          executeCommand: (request, context) =>
            executeCommand(request, {
              signal: context.signal,
              deadline: deadlineOf(context),
              logger,
            }),
          // biome-ignore lint/correctness/useYield: replaced by the push path
          async *subscribeEvents() {
            throw new ServerError(Status.UNIMPLEMENTED, "push streams are not available");
          },
        });
      const grpcAddress = await bindGrpc(grpcServer, cfg.grpcAddr, grpcCredentials(grpcTls));
      logger.info(`authenticated gRPC listening on ${grpcAddress}${grpcTls ? " (TLS)" : ""}`);

      const authUpstream =
        options.authUpstream ??
        (cfg.authUpstreamUrl === undefined
          ? undefined
          : createHttpAuthUpstream({ baseUrl: cfg.authUpstreamUrl }));
      const app = createPublicHttpApp({
        authUpstream,
        isReady: () => ready,
        logger,
        metrics,
      });
      publicServer = createHttpServer(toNodeListener(app));
      const publicAddress = await listenHttp(publicServer, cfg.publicHttpAddr);
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
      ready = true;
      logger.info("gateway ready");
    } catch (error) {
      await teardown(Math.min(cfg.shutdownTimeoutMs, 2000));
      throw error;
    }
  }

  /** Closes whatever is open, without the ordered, logged sequence. */
  async function teardown(budgetMs: number): Promise<void> {
    grpcServer?.forceShutdown();
    await Promise.all([
      publicServer ? closeHttp(publicServer, budgetMs) : undefined,
      adminServer ? closeHttp(adminServer, budgetMs) : undefined,
    ]);
    redis?.disconnect();
  }

  async function stop(): Promise<void> {
    ready = false;
    shuttingDown = true;
    await started?.catch(() => {});
    const budgetMs = config?.shutdownTimeoutMs ?? 5000;
    const steps: Step[] = [
      { name: "readiness set to not ready", run: async () => {} },
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
        run: () =>
          Promise.all([
            publicServer ? closeHttp(publicServer, budgetMs) : undefined,
            adminServer ? closeHttp(adminServer, budgetMs) : undefined,
          ]),
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

/** Binds the gRPC server; an empty host binds all interfaces (IPv6 dual-stack, else IPv4). */
async function bindGrpc(
  server: GrpcServer,
  address: { host: string; port: number },
  credentials: ReturnType<typeof grpcCredentials>,
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

export { SHUTTING_DOWN_MESSAGE };

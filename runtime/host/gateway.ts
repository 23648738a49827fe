/**
 * The composition root: `createGateway` builds every component from
 * configuration (see `assemble.ts`) and runs them through one lifecycle:
 * started in the order of contract §2, stopped in the order of §10.
 */
import type { AuthUpstream, Clock, Logger, ResponseSigner, Routes } from "../../handlers/ports.js";
import { type GatewayConfig, loadConfig } from "../config/config.js";
import { createGrpcHealth, type GrpcHealth } from "../grpc/health.js";
import { createLogger } from "../telemetry/logger.js";
import { createMetrics, type Metrics } from "../telemetry/metrics.js";
import { type AssembledGateway, assembleGateway } from "./assemble.js";
import type { ServePublicHttp } from "./components.js";
import { type Component, createLifecycle, type Lifecycle } from "./lifecycle.js";

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
  readonly servePublicHttp?: ServePublicHttp;
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
  /** The response signer; available once started. */
  readonly signer: ResponseSigner;
}

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
  const health = createGrpcHealth();
  let ready = false;
  let shuttingDown = false;
  let started: Promise<void> | undefined;
  let assembled: AssembledGateway | undefined;
  let lifecycle: Lifecycle | undefined;

  async function start(): Promise<void> {
    const config = options.config ?? loadConfig();
    const logger = options.logger ?? createLogger(config.logLevel);
    assembled = assembleGateway({
      ...options,
      config,
      logger,
      metrics,
      health,
      clock: options.clock ?? { now: () => Date.now() },
      isReady: () => ready,
      isShuttingDown: () => shuttingDown,
      readiness: readinessComponent({
        health,
        logger,
        isShuttingDown: () => shuttingDown,
        setReady: () => {
          ready = true;
        },
        started: () => started,
      }),
    });
    lifecycle = createLifecycle(assembled.components, {
      logger,
      budgetMs: () => config.shutdownTimeoutMs,
      mayStopOnFailure: () => !shuttingDown,
    });
    await lifecycle.start();
  }

  return {
    start() {
      started ??= start();
      return started;
    },
    async stop() {
      ready = false;
      shuttingDown = true;
      await lifecycle?.stop();
    },
    get addresses() {
      if (assembled === undefined) throw new Error("gateway is not started");
      return assembled.addresses();
    },
    get ready() {
      return ready;
    },
    get signer() {
      if (assembled === undefined) throw new Error("gateway is not started");
      return assembled.core.signer();
    },
    metrics,
  };
}

/**
 * Step 1 of shutdown and the last of startup: readiness. Starting marks the
 * gateway ready (unless a stop() came first); stopping marks it not ready.
 */
function readinessComponent(state: {
  readonly health: GrpcHealth;
  readonly logger: Logger;
  readonly isShuttingDown: () => boolean;
  readonly setReady: () => void;
  readonly started: () => Promise<void> | undefined;
}): Component {
  const { health, logger } = state;
  return {
    stopped: "readiness set to not ready",
    shutdownStep: 1,
    async start() {
      if (state.isShuttingDown()) return;
      state.setReady();
      health.setServing(true);
      logger.info("gateway ready");
    },
    // A stop() during startup lets startup finish (or fail) first; a failed
    // start stopping what it started does not wait for itself.
    async stop() {
      health.setServing(false);
      if (state.isShuttingDown()) await state.started()?.catch(() => {});
    },
  };
}

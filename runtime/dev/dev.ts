/**
 * `npm run dev`: the whole gateway on this machine with no setup. Launches a
 * local redis-server when no Redis is configured, creates a dev signer key,
 * provisions the streams, seeds a demo device session, injects `demo.echo`,
 * signs devices in by email code with the dev auth upstream, serves public
 * HTTP through listhen with the device console at `/_dev/`, and stops
 * everything on Ctrl-C.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { generateKeyPairSync, type KeyObject, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { listen } from "listhen";
import { rawPublicKeyOf } from "../../handlers/ed25519.js";
import type { AuthUpstream, Logger, Routes } from "../../handlers/ports.js";
import { formatAddress, type GatewayConfig, loadConfig } from "../config/config.js";
import { loadRoutesModule } from "../config/routes-module.js";
import { parseSignerKeyPem } from "../config/signer.js";
import type { ServePublicHttp } from "../host/components.js";
import { createGateway, type Gateway, type GatewayAddresses } from "../host/gateway.js";
import { trapShutdownSignals } from "../host/signals.js";
import { publishSessionSnapshot, type SessionSnapshotInput } from "../kit/publishers.js";
import { connectRedis } from "../redis/connection.js";
import { provisionRedis } from "../redis/provision.js";
import { createLogger, SILENT_LOGGER } from "../telemetry/logger.js";
import { createDevAuthUpstream } from "./dev-auth-upstream.js";
import { createDevConsole, DEV_CONSOLE_PATH, type DevConsoleHandler } from "./dev-console.js";
import { type HeldLogger, holdLogLines } from "./held-log.js";
import { freeLoopbackPort, waitForRedisPing } from "./local-redis.js";

/** The demo device session dev mode seeds. */
export const DEV_SESSION = { deviceSessionId: "dev-device-1", userId: "dev-user" } as const;

/** The route dev mode injects: answers `ok` with the command's payload. */
export const demoRoutes: Routes = {
  "demo.echo": async (command) => ({ resultCode: "ok", payload: command.payload }),
};

/** The Ed25519 private key at `path`, created (mode 0600) when missing. */
function ensureKey(path: string): KeyObject {
  if (existsSync(path)) return parseSignerKeyPem(readFileSync(path, "utf8"), path);
  const { privateKey } = generateKeyPairSync("ed25519");
  writeFileSync(path, privateKey.export({ type: "pkcs8", format: "pem" }) as string, {
    mode: 0o600,
  });
  return privateKey;
}

async function startLocalRedis(
  dir: string,
  onSpawn: (child: ChildProcess) => void,
): Promise<{
  child: ChildProcess;
  addr: string;
  password: string;
}> {
  if (spawnSync("redis-server", ["--version"], { stdio: "ignore" }).error !== undefined) {
    throw new Error(
      "redis-server is not installed. Install it (Debian/Ubuntu: sudo apt-get install -y redis-server; macOS: brew install redis) or point GATEWAY_REDIS_MASTER_ADDR and GATEWAY_REDIS_PASSWORD at a Redis server.",
    );
  }
  const port = await freeLoopbackPort();
  const password = randomBytes(18).toString("base64url");
  // The password goes in a private config file, not on the command line (ps).
  const configPath = join(dir, "redis.conf");
  writeFileSync(configPath, `requirepass ${password}\n`, { mode: 0o600 });
  const child = spawn(
    "redis-server",
    [
      configPath,
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--maxmemory-policy",
      "noeviction",
      "--dir",
      dir,
    ],
    { stdio: "ignore" },
  );
  onSpawn(child);
  try {
    await waitForRedisPing({ child, port, password });
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  return { child, addr: `127.0.0.1:${port}`, password };
}

/** What dev mode has started so far, for a signal or a failed start to stop. */
interface DevProcesses {
  redis: ChildProcess | undefined;
  gateway: Gateway | undefined;
  /** Stops the local redis-server, when dev mode started one and it still runs. */
  stopRedis(): void;
}

/**
 * Traps SIGINT/SIGTERM and the launcher's disconnect: the startup lines
 * `logger` still holds are written, the gateway stops, then the local
 * redis-server.
 */
function trapDevSignals(logger: HeldLogger): DevProcesses {
  const started: DevProcesses = {
    redis: undefined,
    gateway: undefined,
    stopRedis() {
      if (started.redis && started.redis.exitCode === null) started.redis.kill("SIGTERM");
    },
  };
  // Listeners run in the order they were added: these write the held startup
  // lines before the shutdown handlers log the signal.
  process.on("SIGTERM", logger.release);
  process.on("SIGINT", logger.release);
  const onSignal = trapShutdownSignals({
    logger,
    what: "stopping the dev gateway",
    stop: () => (started.gateway?.stop() ?? Promise.resolve()).finally(started.stopRedis),
    onExitNow: started.stopRedis,
  });
  // Started by `npm run dev`: stop when the launcher is gone.
  process.on("disconnect", () => {
    logger.release();
    onSignal("SIGTERM");
  });
  return started;
}

/**
 * The dev configuration: `env` with dev keys in `dir` (created when missing)
 * and the gRPC and admin listeners on loopback unless set.
 */
function loadDevConfig(
  env: NodeJS.ProcessEnv,
  dir: string,
): { config: GatewayConfig; signerPath: string; signerKey: KeyObject; deviceKey: KeyObject } {
  const signerPath = env.GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH || join(dir, "signer.pem");
  const signerKey = ensureKey(signerPath);
  const deviceKey = ensureKey(join(dir, "device.pem"));
  const config = loadConfig({
    ...env,
    GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH: signerPath,
    GATEWAY_AUTHENTICATED_GRPC_ADDR: env.GATEWAY_AUTHENTICATED_GRPC_ADDR || "127.0.0.1:9090",
    GATEWAY_ADMIN_HTTP_ADDR: env.GATEWAY_ADMIN_HTTP_ADDR || "127.0.0.1:9464",
  });
  return { config, signerPath, signerKey, deviceKey };
}

/** Provisions the streams and seeds the demo session, before the gateway reads them. */
async function seedRedis(config: GatewayConfig, deviceKey: KeyObject, logger: Logger) {
  const redis = await connectRedis(config.redis, SILENT_LOGGER);
  try {
    const report = await provisionRedis(redis, {
      sessionEventsStream: config.sessionEventsStream,
      clientEventsStream: config.clientEventsStream,
      log: logger,
    });
    if (!report.ok) throw new Error(`provisioning failed: ${report.errors.join("; ")}`);
    await publishSessionSnapshot(
      redis,
      { ...DEV_SESSION, clientPublicKey: rawPublicKeyOf(deviceKey), status: "active" },
      { keyPrefix: config.redis.keyPrefix, stream: config.sessionEventsStream },
    );
  } finally {
    redis.disconnect();
  }
}

/** Publishes a session snapshot over a short-lived connection, as an upstream service would. */
async function publishDevSession(config: GatewayConfig, snapshot: SessionSnapshotInput) {
  const redis = await connectRedis(config.redis, SILENT_LOGGER);
  try {
    await publishSessionSnapshot(redis, snapshot, {
      keyPrefix: config.redis.keyPrefix,
      stream: config.sessionEventsStream,
    });
  } finally {
    redis.disconnect();
  }
}

/**
 * Serves public HTTP through listhen on `port` (a free one when it is busy),
 * with the dev console in front of the gateway's app.
 */
function serveThroughListhen(
  port: number,
  hostname: string,
  devConsole: DevConsoleHandler,
): ServePublicHttp {
  return async (handler) => {
    const withConsole: typeof handler = (request, response) => {
      if (!devConsole(request, response)) handler(request, response);
    };
    const listener = await listen(withConsole, {
      port,
      hostname,
      autoClose: false,
      showURL: false,
      open: false,
      qr: false,
      public: false,
    });
    return {
      address: formatAddress({ host: listener.address.address, port: listener.address.port }),
      close: () => listener.close(),
    };
  };
}

/**
 * The dev gateway: the demo route plus the configured routes module, the dev
 * auth upstream, public HTTP through listhen with the device console.
 */
async function createDevGateway(
  config: GatewayConfig,
  env: NodeJS.ProcessEnv,
  logger: Logger,
  signerKey: KeyObject,
): Promise<Gateway> {
  const routes = {
    ...demoRoutes,
    ...(config.routesModule ? await loadRoutesModule(config.routesModule) : {}),
  };
  const publicPort = env.GATEWAY_PUBLIC_HTTP_ADDR ? config.publicHttpAddr.port : 8080;
  const authUpstream: AuthUpstream = createDevAuthUpstream({
    publishSession: (snapshot) => publishDevSession(config, snapshot),
    print: (line) => process.stdout.write(`${line}\n`),
  });
  return createGateway({
    config,
    routes,
    logger,
    authUpstream,
    servePublicHttp: serveThroughListhen(
      publicPort,
      config.publicHttpAddr.host || "127.0.0.1",
      createDevConsole(rawPublicKeyOf(signerKey)),
    ),
  });
}

/** Writes the Redis and gateway settings the CLI needs to `path` (mode 0600), not to the terminal. */
function writeCliEnvFile(path: string, config: GatewayConfig, signerPath: string, grpc: string) {
  writeFileSync(
    path,
    [
      `GATEWAY_REDIS_MASTER_ADDR=${formatAddress(config.redis.master)}`,
      `GATEWAY_REDIS_PASSWORD=${config.redis.password}`,
      `GATEWAY_REDIS_DB=${config.redis.db}`,
      `GATEWAY_REDIS_KEY_PREFIX=${config.redis.keyPrefix}`,
      `GATEWAY_SESSION_EVENTS_REDIS_STREAM=${config.sessionEventsStream}`,
      `GATEWAY_CLIENT_EVENTS_REDIS_STREAM=${config.clientEventsStream}`,
      `GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH=${signerPath}`,
      `GATEWAY_AUTHENTICATED_GRPC_ADDR=${grpc}`,
      "",
    ].join("\n"),
    { mode: 0o600 },
  );
}

/**
 * The lines dev mode prints once ready, before its startup log: the device
 * console first, then commands to try.
 */
function tryItLines({ publicHttp, grpc, adminHttp }: GatewayAddresses): string {
  const device = `--session ${DEV_SESSION.deviceSessionId} --key .dev/device.pem`;
  return [
    "",
    `Device console: http://${publicHttp}${DEV_CONSOLE_PATH}`,
    "Dev gateway is running. Try:",
    `  curl http://${publicHttp}/healthz`,
    adminHttp ? `  curl http://${adminHttp}/metrics` : "",
    "  set -a; . .dev/env; set +a   # Redis and gateway settings for the CLI",
    `  npx edge-gateway exec ${device} --type demo.echo --payload hello`,
    `  npx edge-gateway subscribe ${device}`,
    `  npx edge-gateway event publish --user ${DEV_SESSION.userId} --type demo.note --payload hi`,
    `  npx edge-gateway session revoke --session ${DEV_SESSION.deviceSessionId}`,
    `  npx buf curl --protocol grpc --http2-prior-knowledge --list-methods http://${grpc}`,
    "Ctrl-C stops the gateway and everything dev mode started.",
    "",
  ]
    .filter((line) => line !== "")
    .join("\n")
    .concat("\n");
}

/**
 * Runs dev mode until SIGINT/SIGTERM. `env` overrides apply as in production;
 * unset listener addresses default to loopback (gRPC 9090, admin 9464, public
 * 8080 through listhen, which moves to a free port when 8080 is busy).
 */
export async function runDev(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  // The startup log waits until dev mode is ready (or fails, or is stopped),
  // so that the device console's URL is the first line it writes.
  const logger = holdLogLines(createLogger(env.GATEWAY_LOG_LEVEL));
  const dir = resolve(".dev");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Installed before anything else is started, so a signal at any point of
  // startup still stops what dev mode started.
  const started = trapDevSignals(logger);

  const devEnv: NodeJS.ProcessEnv = { ...env };
  try {
    if (!env.GATEWAY_REDIS_MASTER_ADDR) {
      const local = await startLocalRedis(dir, (child) => {
        started.redis = child;
      });
      devEnv.GATEWAY_REDIS_MASTER_ADDR = local.addr;
      devEnv.GATEWAY_REDIS_PASSWORD = local.password;
      logger.info(`local redis-server (pid ${local.child.pid}) on ${local.addr}`);
    }
    const { config, signerPath, signerKey, deviceKey } = loadDevConfig(devEnv, dir);
    await seedRedis(config, deviceKey, logger);
    const gateway = await createDevGateway(config, env, logger, signerKey);
    started.gateway = gateway;
    await gateway.start();
    writeCliEnvFile(join(dir, "env"), config, signerPath, gateway.addresses.grpc);
    process.stdout.write(tryItLines(gateway.addresses));
  } catch (error) {
    started.stopRedis();
    throw error;
  } finally {
    logger.release();
  }
}

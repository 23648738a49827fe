/**
 * Runs a gateway for a test: in-process through the kit, or as the real bin in
 * a child process. Everything started here is stopped by the returned handle.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import type { Logger, Routes } from "../../handlers/ports.js";
import { loadConfig } from "../../runtime/config.js";
import { createGateway, type Gateway } from "../../runtime/gateway.js";
import { writeGatewayKeyFile } from "./keys.js";
import type { TestRedis } from "./redis-server.js";

/** A logger that records lines for assertions and prints nothing. */
export function createMemoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const record =
    (level: string) =>
    (message: string, ...args: unknown[]) => {
      lines.push(
        `${level} ${[message, ...args.map((arg) => (arg instanceof Error ? arg.message : String(arg)))].join(" ")}`,
      );
    };
  return {
    lines,
    debug: record("debug"),
    info: record("info"),
    warn: record("warn"),
    error: record("error"),
  };
}

/** Environment for a gateway on loopback ephemeral ports against `redis`. */
export function gatewayEnv(
  redis: TestRedis,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    GATEWAY_REDIS_MASTER_ADDR: redis.addr,
    GATEWAY_REDIS_PASSWORD: redis.password,
    GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH: writeGatewayKeyFile(),
    GATEWAY_PUBLIC_HTTP_ADDR: "127.0.0.1:0",
    GATEWAY_AUTHENTICATED_GRPC_ADDR: "127.0.0.1:0",
    GATEWAY_ADMIN_HTTP_ADDR: "127.0.0.1:0",
    GATEWAY_SHUTDOWN_TIMEOUT: "3s",
    ...extra,
  };
}

/** Starts an in-process gateway; the caller stops it. */
export async function startGateway(
  redis: TestRedis,
  options: { env?: Record<string, string>; routes?: Routes; now?: () => number } = {},
): Promise<Gateway & { logger: ReturnType<typeof createMemoryLogger> }> {
  const logger = createMemoryLogger();
  const gateway = createGateway({
    config: loadConfig(gatewayEnv(redis, options.env)),
    routes: options.routes,
    logger,
    ...(options.now ? { clock: { now: options.now } } : {}),
  });
  await gateway.start();
  return Object.assign(gateway, { logger });
}

/** Writes a session hash as the auth/session side does. */
export async function putSession(
  client: Redis,
  session: {
    deviceSessionId: string;
    userId: string;
    publicKeyText: string;
    status?: "active" | "revoked";
  },
  keyPrefix = "gateway:",
): Promise<void> {
  await client.hset(`${keyPrefix}session:${session.deviceSessionId}`, {
    user_id: session.userId,
    client_public_key: session.publicKeyText,
    status: session.status ?? "active",
    updated_at_ms: String(Date.now()),
  });
}

/** A gateway bin running as a child process. */
export interface GatewayProcess {
  readonly child: ChildProcess;
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
  /** Resolves once its output matches `pattern`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Resolves with the exit code once it exits. */
  exited: Promise<number | null>;
  /** Kills it (SIGKILL) if still running. */
  kill(): Promise<void>;
}

const BIN = fileURLToPath(new URL("../../dist/runtime/bin.js", import.meta.url));

/** Spawns the built bin (`npm run build` first) with exactly `env` plus PATH. */
export function spawnGateway(env: Record<string, string>): GatewayProcess {
  const child = spawn(process.execPath, [BIN], {
    env: { PATH: process.env.PATH ?? "", NO_COLOR: "1", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let text = "";
  const waiters = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    text += chunk.toString("utf8");
    for (const wake of waiters) wake();
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => resolve(code)),
  );
  return {
    child,
    output: () => text,
    exited,
    waitFor(pattern, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const match = text.match(pattern);
          if (match) {
            cleanup();
            resolve(match);
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out waiting for ${pattern}; output:\n${text}`));
        }, timeoutMs);
        const onExit = () => {
          check();
          cleanup();
          reject(new Error(`gateway exited before ${pattern}; output:\n${text}`));
        };
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
          child.off("exit", onExit);
        };
        waiters.add(check);
        child.once("exit", onExit);
        check();
      });
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await exited;
      }
    },
  };
}

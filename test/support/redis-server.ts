/**
 * Starts a real `redis-server` on a free loopback port with a password, for
 * one test file. Stops only the process it started, by its PID.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { Redis } from "ioredis";

/** A running test Redis. */
export interface TestRedis {
  readonly host: string;
  readonly port: number;
  readonly password: string;
  /** `host:port`, as `GATEWAY_REDIS_MASTER_ADDR` takes it. */
  readonly addr: string;
  /** A fresh client (the caller quits it). */
  client(): Redis;
  /** Kills the server (SIGKILL: no clean shutdown), leaving the port free. */
  kill(): Promise<void>;
  /** Starts the server again on the same port with the same password (data is gone). */
  restart(): Promise<void>;
  /** Stops the server; safe to call twice. */
  stop(): Promise<void>;
}

/** A free loopback TCP port. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Starts `redis-server` on a free loopback port with a random password. */
export async function startRedis(): Promise<TestRedis> {
  const host = "127.0.0.1";
  const port = await freePort();
  const password = randomBytes(12).toString("hex");
  let child: ChildProcess | undefined;

  const launch = async () => {
    const proc = spawn(
      "redis-server",
      [
        "--port",
        String(port),
        "--bind",
        host,
        "--requirepass",
        password,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--maxmemory-policy",
        "noeviction",
      ],
      { stdio: "ignore" },
    );
    child = proc;
    await waitForPing(host, port, password, proc);
  };

  const kill = async () => {
    const proc = child;
    child = undefined;
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      proc.once("exit", () => resolve());
      proc.kill("SIGKILL");
    });
  };

  await launch();
  return {
    host,
    port,
    password,
    addr: `${host}:${port}`,
    client: () => new Redis({ host, port, password, lazyConnect: false }),
    kill,
    restart: launch,
    stop: kill,
  };
}

async function waitForPing(host: string, port: number, password: string, proc: ChildProcess) {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}`);
    const probe = new Redis({
      host,
      port,
      password,
      lazyConnect: true,
      retryStrategy: () => null,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
    });
    probe.on("error", () => {});
    try {
      await probe.connect();
      if ((await probe.ping()) === "PONG") return;
    } catch {
      // not up yet
    } finally {
      probe.disconnect();
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`redis-server on ${host}:${port} did not answer within 10 s`);
}

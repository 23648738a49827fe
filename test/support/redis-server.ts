/**
 * Starts a real `redis-server` on a free loopback port with a password, for
 * one test file. Stops only the process it started, by its PID.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { freeLoopbackPort, waitForRedisPing } from "../../runtime/dev/local-redis.js";

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
  /** Freezes the server (SIGSTOP): connections stay open, nothing is answered. */
  pause(): void;
  /** Lets a paused server run again (SIGCONT); what it was sent meanwhile is then answered. */
  resume(): void;
  /** Starts the server again on the same port with the same password (data is gone). */
  restart(): Promise<void>;
  /** Stops the server; safe to call twice. */
  stop(): Promise<void>;
}

/** A free loopback TCP port. */
export const freePort = freeLoopbackPort;

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
    await waitForRedisPing({ child: proc, port, password });
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

  /** Sends `signal` to the server this harness started, by its PID. */
  const signal = (name: "SIGSTOP" | "SIGCONT") => {
    const proc = child;
    if (proc?.pid === undefined || proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`redis-server is not running: cannot send ${name}`);
    }
    process.kill(proc.pid, name);
  };

  await launch();
  return {
    host,
    port,
    password,
    addr: `${host}:${port}`,
    client: () => new Redis({ host, port, password, lazyConnect: false }),
    kill,
    pause: () => signal("SIGSTOP"),
    resume: () => signal("SIGCONT"),
    restart: launch,
    stop: kill,
  };
}

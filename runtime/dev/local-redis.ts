/** Helpers for a redis-server this process starts itself (dev mode, tests). */
import type { ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { Redis } from "ioredis";

/** A free TCP port on 127.0.0.1. */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/**
 * Resolves once the redis-server `child` answers PING on `port` with
 * `password`; rejects when it exits first or after `timeoutMs`.
 */
export async function waitForRedisPing(options: {
  readonly child: ChildProcess;
  readonly port: number;
  readonly password: string;
  readonly timeoutMs?: number;
}): Promise<void> {
  const { child, port, password } = options;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
    const probe = new Redis({
      host: "127.0.0.1",
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
    await new Promise((wake) => setTimeout(wake, 25));
  }
  throw new Error(`redis-server on 127.0.0.1:${port} did not answer within ${timeoutMs} ms`);
}

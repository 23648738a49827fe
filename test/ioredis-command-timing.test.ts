/**
 * The ioredis behaviour runtime/telemetry/ioredis-command-timing.ts relies on,
 * checked on a real Redis: every command of a client passes through its own
 * `sendCommand` (refused, queued and re-sent ones too) and `duplicate()`
 * builds the stream readers' connections. These tests fail when an ioredis
 * release routes commands another way, before the Redis command histogram
 * silently goes quiet or counts twice.
 */
import { Cluster, Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { timeIoredisCommands } from "../runtime/telemetry/ioredis-command-timing.js";
import { freePort, startRedis, type TestRedis } from "./support/redis-server.js";

let redis: TestRedis;
const opened: Redis[] = [];

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  for (const connection of opened) connection.disconnect();
  await redis?.stop();
});

/** A client of the test Redis that is disconnected after the file. */
function client(options: { lazyConnect?: boolean; enableOfflineQueue?: boolean } = {}): Redis {
  const connection = new Redis({
    host: redis.host,
    port: redis.port,
    password: redis.password,
    ...options,
  });
  opened.push(connection);
  return connection;
}

/** Lets every reply's callbacks run, a second timing of one command included. */
const settled = () => new Promise((resolve) => setImmediate(resolve));

/** What ioredis sends on its own as a connection starts; timed too, left out below. */
const HANDSHAKE = new Set(["hello", "auth", "client", "info", "select"]);

/** Times `connection`'s commands; returns the names and durations recorded so far, handshake aside. */
function timed(connection: Redis) {
  const seen: { command: string; seconds: number }[] = [];
  timeIoredisCommands(connection, (command, seconds) => {
    if (!HANDSHAKE.has(command)) seen.push({ command, seconds });
  });
  return seen;
}

describe("timeIoredisCommands on ioredis", () => {
  it("times each command once by its lower-case name, a failed one too", async () => {
    const connection = client();
    const seen = timed(connection);

    await connection.set("timing:key", "1");
    await connection.hmget("timing:key-hash", "a", "b");
    await expect(connection.xadd("timing:key", "*", "f", "v")).rejects.toThrow(/WRONGTYPE/);
    await settled();

    expect(seen.map(({ command }) => command)).toEqual(["set", "hmget", "xadd"]);
    for (const { seconds } of seen) {
      expect(seconds).toBeGreaterThanOrEqual(0);
      expect(seconds).toBeLessThan(5);
    }
  });

  it("times the commands of a connection made with duplicate()", async () => {
    const connection = client();
    const seen = timed(connection);
    const duplicate = connection.duplicate();
    opened.push(duplicate);

    await duplicate.xadd("timing:stream", "*", "f", "v");
    await duplicate.xread("COUNT", 1, "STREAMS", "timing:stream", "0-0");
    await settled();

    expect(seen.map(({ command }) => command)).toEqual(["xadd", "xread"]);
  });

  // The gateway runs without an offline queue: while Redis is down, commands fail at once.
  it("times a command refused at once while the client is not connected", async () => {
    const connection = client({ lazyConnect: true, enableOfflineQueue: false });
    const seen = timed(connection);

    await expect(connection.get("timing:key")).rejects.toThrow(/enableOfflineQueue/);
    await settled();

    expect(seen.map(({ command }) => command)).toEqual(["get"]);
  });

  // ioredis passes a queued command through sendCommand again when it flushes its queue.
  it("times a command queued offline and sent later once", async () => {
    const connection = client({ lazyConnect: true });
    const seen = timed(connection);

    expect(await connection.get("timing:absent")).toBeNull();
    await settled();

    expect(seen.map(({ command }) => command)).toEqual(["get"]);
  });

  it("times only the clients it was given, not others of the same server", async () => {
    const connection = client();
    const seen = timed(connection);
    const other = client();

    await other.get("timing:key");
    await connection.get("timing:key");
    await settled();

    expect(seen.map(({ command }) => command)).toEqual(["get"]);
  });

  it("keeps a client's first timer when given the client again", async () => {
    const connection = client();
    const first = timed(connection);
    const second = timed(connection);

    await connection.get("timing:key");
    await settled();

    expect(first).toHaveLength(1);
    expect(second).toHaveLength(0);
  });
});

describe("timeIoredisCommands on an ioredis Cluster", () => {
  // Without any node to reach, a Cluster client that has no offline queue
  // refuses each command at once: the refusal goes through the client's
  // sendCommand, and its duplicate() copies are timed as well. The cluster
  // end-to-end tests check the timings of commands a real cluster answers.
  it("times a refused command once, on the client and on its duplicate", async () => {
    const nowhere = [{ host: "127.0.0.1", port: await freePort() }];
    const cluster = new Cluster(nowhere, {
      lazyConnect: true,
      enableOfflineQueue: false,
      clusterRetryStrategy: null,
    });
    cluster.on("error", () => {});
    const seen: string[] = [];
    timeIoredisCommands(cluster, (command) => seen.push(command));
    const copy = cluster.duplicate();
    copy.on("error", () => {});
    try {
      await expect(cluster.set("timing:cluster", "1")).rejects.toThrow();
      await expect(copy.get("timing:cluster")).rejects.toThrow();
      await settled();
      expect(seen).toEqual(["set", "get"]);
    } finally {
      cluster.disconnect();
      copy.disconnect();
    }
  });
});

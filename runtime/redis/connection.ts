/**
 * The shared Redis client, set up to fail closed: no offline queue, no
 * retries, no re-sent commands after a reconnect, and a bound on each command.
 * With `GATEWAY_REDIS_CLUSTER=true` it is an ioredis `Cluster` seeded with
 * `GATEWAY_REDIS_MASTER_ADDR`, with the same guarantees.
 */

import { Cluster, type ClusterOptions, type Command, Redis, type RedisOptions } from "ioredis";
import type { Logger } from "../../handlers/ports.js";
import { formatAddress, type GatewayConfig, redactSecret } from "../config/config.js";
import { within } from "../host/within.js";
import { coalesceWrites } from "./coalesced-writes.js";

/** The shared client: one Redis server, or a Redis Cluster (`GATEWAY_REDIS_CLUSTER`). */
export type RedisClient = Redis | Cluster;

/** How the gateway talks to Redis, as the startup log and `/readyz` name it. */
export type RedisMode = "single" | "cluster";

/** The mode the configuration selects. */
export function redisModeOf(config: Pick<GatewayConfig["redis"], "cluster">): RedisMode {
  return config.cluster ? "cluster" : "single";
}

/** Reconnect backoff: 50 ms doubling to 2 s, with jitter. */
export function reconnectDelay(attempt: number): number {
  const base = Math.min(2000, 50 * 2 ** Math.min(attempt, 6));
  return Math.round(base / 2 + Math.random() * (base / 2));
}

/** The ioredis options every gateway connection to a single Redis uses. */
export function redisOptions(config: GatewayConfig["redis"]): RedisOptions {
  return {
    host: config.master.host,
    port: config.master.port,
    password: config.password,
    db: config.db,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    commandTimeout: config.commandTimeoutMs,
    connectTimeout: Math.max(config.pingTimeoutMs, 1000),
    retryStrategy: reconnectDelay,
    connectionName: "edge-gateway",
    // No auto-pipelining: measured A/B with bench/execute-command-vs-plain.ts
    // (two runs each, interleaved against the plain server), it cost the
    // request path 1.4 KiB of heap per call and 0.87–0.88× plain's calls/s
    // against 1.05–1.23× without it.
    enableAutoPipelining: false,
  };
}

/**
 * The ioredis `Cluster` options of the shared client. Redirections that say a
 * command did not run (`MOVED`, `ASK`, `TRYAGAIN`) are followed by ioredis;
 * anything that may have run is never re-sent: a closed connection or
 * `CLUSTERDOWN` fails the command at once, so a call answers `UNAVAILABLE`.
 */
export function clusterOptions(config: GatewayConfig["redis"]): ClusterOptions {
  const {
    host: _host,
    port: _port,
    db: _db,
    retryStrategy: _retry,
    ...perNode
  } = redisOptions(config);
  return {
    lazyConnect: true,
    enableOfflineQueue: false,
    enableReadyCheck: true,
    scaleReads: "master",
    maxRedirections: 16,
    retryDelayOnMoved: 0,
    retryDelayOnTryAgain: 100,
    // Both would re-send a command that may already have run (a closed
    // connection) or keep it waiting past its timeout (CLUSTERDOWN).
    retryDelayOnFailover: 0,
    retryDelayOnClusterDown: 0,
    clusterRetryStrategy: reconnectDelay,
    slotsRefreshTimeout: Math.max(Math.min(config.pingTimeoutMs, 2000), 500),
    redisOptions: perNode,
  };
}

/** Startup could not reach Redis. */
export class RedisStartupError extends Error {
  override readonly name = "RedisStartupError";
}

/**
 * A new, unconnected client for `config` (`lazyConnect`): a `Redis`, or a
 * `Cluster` when `config.cluster` is set.
 */
export function createRedisClient(config: GatewayConfig["redis"]): RedisClient {
  if (!config.cluster) return coalesceWrites(new Redis(redisOptions(config)));
  const cluster = new Cluster(
    [{ host: config.master.host, port: config.master.port }],
    clusterOptions(config),
  );
  guardClusterResends(cluster);
  refreshSlotsOnNodeLoss(cluster);
  return cluster;
}

/** How many of `client`'s connections are ready: 0 or 1, or one per cluster node. */
export function readyConnections(client: RedisClient): number {
  if (!client.isCluster) return client.status === "ready" ? 1 : 0;
  return (client as Cluster).nodes("all").filter((node) => node.status === "ready").length;
}

/** The connection name `client` gives its Redis connections, if any. */
export function connectionNameOf(client: RedisClient): string | undefined {
  return client.isCluster
    ? (client as Cluster).options.redisOptions?.connectionName
    : (client as Redis).options.connectionName;
}

/**
 * A second client with `client`'s configuration (and instrumentation) for a
 * blocking reader, with `override` applied to each of its Redis connections.
 * A `Cluster` copy is seeded with every node the client knows (not only the
 * configured seed, which may be the master that failed) and never reconnects
 * by itself, like a single connection with `retryStrategy: null`.
 */
export function duplicateClient(
  client: RedisClient,
  override: RedisOptions,
  clusterOverride: Partial<ClusterOptions> = {},
): RedisClient {
  if (!client.isCluster) return (client as Redis).duplicate(override);
  const cluster = client as Cluster;
  const known = cluster.nodes("all").map((node) => ({
    host: node.options.host,
    port: node.options.port,
  }));
  const {
    retryStrategy: _retry,
    enableOfflineQueue,
    host: _host,
    port: _port,
    db: _db,
    ...perNode
  } = override;
  const copy = cluster.duplicate(known, {
    lazyConnect: true,
    clusterRetryStrategy: null,
    // With its ready check failing (a node down), ioredis 6 `Cluster#connect`
    // neither resolves nor rejects when it may not reconnect by itself; the
    // reader's own commands see a cluster that is down and retry instead.
    enableReadyCheck: false,
    ...(enableOfflineQueue === undefined ? {} : { enableOfflineQueue }),
    redisOptions: { ...cluster.options.redisOptions, ...perNode },
    ...clusterOverride,
  });
  guardClusterResends(copy);
  refreshSlotsOnNodeLoss(copy);
  return copy;
}

/**
 * Without re-sends on a closed connection, ioredis learns of a failover only
 * from its periodic slot refresh (5 s) or a `MOVED`; a lost node connection
 * therefore refreshes the slot map at once (one `CLUSTER SLOTS` at a time), so
 * calls fail only until the cluster has promoted a replica.
 */
function refreshSlotsOnNodeLoss(cluster: Cluster): void {
  cluster.on("-node", () => {
    if (cluster.status === "ready") cluster.refreshSlotsCache();
  });
}

/**
 * ioredis `Cluster` sends a command again when a redirection (`MOVED`,
 * `ASK`, `TRYAGAIN`) arrives, even when the command already failed for its
 * caller (its timeout passed): the caller was told "failed" while the command
 * would run after all, and a late `SET NX` would make the retried call read as
 * a replay. Each node connection therefore refuses to send a settled command.
 */
function guardClusterResends(cluster: Cluster): void {
  cluster.on("+node", (node: Redis) => {
    const sendCommand = node.sendCommand;
    node.sendCommand = function (this: Redis, command: Command, ...rest: unknown[]) {
      if (command.isSettled) return command.promise;
      return (sendCommand as (...args: unknown[]) => unknown).call(this, command, ...rest);
    } as Redis["sendCommand"];
  });
}

/**
 * Opens the shared client and sends one `PING` bounded by the ping timeout (in
 * cluster mode the cluster must also be ready — slots known, `cluster_state:ok`
 * — within it; the seed node is first sent a `PING` of its own, whose error
 * names the cause, such as WRONGPASS, that the cluster client would only report
 * as "no node available"). On failure the client is disconnected and a
 * RedisStartupError thrown (the password never appears in it).
 */
export async function connectRedis(
  config: GatewayConfig["redis"],
  logger: Logger,
  instrument?: (redis: RedisClient) => void,
): Promise<RedisClient> {
  const redis = createRedisClient(config);
  instrument?.(redis);
  // A reply from Redis (such as WRONGPASS) says more than the connection
  // errors that follow it, which a cluster client reports from every node.
  let replyError = "";
  let lastError = "";
  const onError = (error: Error & { lastNodeError?: Error }) => {
    const cause = error.lastNodeError ?? error;
    if (replyError === "" && (cause.name === "ReplyError" || /^[A-Z]{3,}\b/.test(cause.message))) {
      replyError = cause.message;
    }
    lastError = cause.message;
  };
  redis.on("error", onError);
  redis.on("node error", onError);

  const address = formatAddress(config.master);
  let abandoned = false;
  try {
    await within(
      "PING",
      config.pingTimeoutMs,
      (async () => {
        if (redis.isCluster) await pingSeed(config);
        // Past the timeout the client is already disconnected: leave it so.
        if (abandoned) return;
        await redis.connect();
        const pong = await redis.ping();
        if (pong !== "PONG") throw new Error(`unexpected PING reply ${String(pong)}`);
      })(),
    );
  } catch (error) {
    abandoned = true;
    redis.disconnect();
    const reason = redactSecret(
      replyError || lastError || (error as Error).message,
      config.password,
    );
    throw new RedisStartupError(`Redis PING to ${address} failed: ${reason}`);
  }

  redis.off("error", onError);
  redis.off("node error", onError);
  let down = false;
  redis.on("error", (error: Error) => {
    if (!down)
      logger.warn(`Redis connection error: ${redactSecret(error.message, config.password)}`);
    down = true;
  });
  redis.on("ready", () => {
    if (down) logger.info("Redis connection restored");
    down = false;
  });
  if (redis.isCluster) {
    // A cluster stays ready while one node fails; one warning per failing node
    // until a connection to it is ready again.
    const failing = new Set<string>();
    redis.on("node error", (error: Error, node: string) => {
      if (failing.has(node)) return;
      failing.add(node);
      logger.warn(
        `Redis Cluster node ${node} error: ${redactSecret(error.message, config.password)}`,
      );
    });
    redis.on("+node", (node: Redis) => {
      node.once("ready", () => failing.delete(`${node.options.host}:${node.options.port}`));
    });
  }
  return redis;
}

/**
 * One `PING` to the seed node on a connection of its own; rejects with the
 * seed's own reply (such as WRONGPASS) or connection error.
 */
async function pingSeed(config: GatewayConfig["redis"]): Promise<void> {
  const seed = new Redis({ ...redisOptions(config), db: 0, retryStrategy: null });
  let failure: string | undefined;
  seed.on("error", (error: Error) => {
    failure ??= error.message;
  });
  try {
    await seed.connect();
    await seed.ping();
  } catch (error) {
    throw new Error(failure ?? (error as Error).message);
  } finally {
    seed.disconnect();
  }
}

/** The sharded subscribers of each cluster subscriber connection, as counted. */
const SHARD_SUBSCRIBERS = new WeakMap<RedisClient, () => number>();

/** How many connections of a {@link connectSubscriber} connection are up. */
export function subscriberConnections(subscriber: RedisClient): number {
  return SHARD_SUBSCRIBERS.get(subscriber)?.() ?? readyConnections(subscriber);
}

/**
 * A subscriber connection for routed fan-out (§13), connected: a duplicate of
 * `client` that never reconnects by itself — `onLost` is called once it lost
 * its connection (or, on a cluster, a shard's subscriber), since messages may
 * have been missed, and the caller opens a new one. On a cluster it subscribes
 * through ioredis's sharded subscribers (one connection per master).
 */
export async function connectSubscriber(
  client: RedisClient,
  onLost: (why: string) => void,
): Promise<RedisClient> {
  const name = connectionNameOf(client);
  const subscriber = duplicateClient(
    client,
    {
      retryStrategy: null,
      enableOfflineQueue: true,
      ...(name === undefined ? {} : { connectionName: `${name}:events` }),
    },
    { shardedSubscribers: true },
  );
  subscriber.on("error", () => {}); // reported through onLost
  if (subscriber.isCluster) {
    // ioredis keeps its sharded subscribers (one per master) to itself:
    // they are counted as they come and go.
    let shards = 0;
    subscriber.on("+subscriber", () => shards++);
    subscriber.on("-subscriber", () => shards--);
    SHARD_SUBSCRIBERS.set(subscriber, () => shards);
  }
  try {
    await subscriber.connect();
  } catch (error) {
    subscriber.disconnect();
    throw error;
  }
  subscriber.on("end", () => onLost("subscriber connection closed"));
  if (subscriber.isCluster) {
    subscriber.on("-node", () => onLost("a shard's subscriber connection closed"));
    subscriber.on("-subscriber", () => onLost("a shard's subscriber was replaced"));
    // After slots moved, ioredis subscribes the moved channels again on their
    // new master; what was published there in between never reached us. (The
    // first such event, at connect, comes before connect() resolves.)
    subscriber.on("subscribersReady", () => onLost("slots moved; channels subscribed again"));
  }
  return subscriber;
}

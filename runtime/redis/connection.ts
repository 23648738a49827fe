/**
 * The shared Redis client, set up to fail closed: no offline queue, no
 * retries, no re-sent commands after a reconnect, and a bound on each command.
 */
import { Redis, type RedisOptions } from "ioredis";
import type { Logger } from "../../handlers/ports.js";
import { formatAddress, type GatewayConfig, redactSecret } from "../config/config.js";
import { within } from "../host/within.js";

/** Reconnect backoff: 50 ms doubling to 2 s, with jitter. */
export function reconnectDelay(attempt: number): number {
  const base = Math.min(2000, 50 * 2 ** Math.min(attempt, 6));
  return Math.round(base / 2 + Math.random() * (base / 2));
}

/** The ioredis options every gateway connection uses. */
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
    // Commands issued in the same event-loop turn (the replay SET NX of many
    // concurrent calls) go out in one socket write instead of one each. The
    // stream readers' blocking XREAD keeps a connection of its own and is sent
    // as is.
    enableAutoPipelining: true,
    autoPipeliningIgnoredCommands: ["xread"],
  };
}

/** Startup could not reach Redis. */
export class RedisStartupError extends Error {
  override readonly name = "RedisStartupError";
}

/**
 * Opens the shared client and sends one `PING` bounded by the ping timeout.
 * On failure the client is disconnected and a RedisStartupError thrown (the
 * password never appears in it).
 */
export async function connectRedis(
  config: GatewayConfig["redis"],
  logger: Logger,
  instrument?: (redis: Redis) => void,
): Promise<Redis> {
  const redis = new Redis(redisOptions(config));
  instrument?.(redis);
  let lastError = "";
  const onError = (error: Error) => {
    lastError = error.message;
  };
  redis.on("error", onError);

  const address = formatAddress(config.master);
  try {
    await within(
      "PING",
      config.pingTimeoutMs,
      (async () => {
        await redis.connect();
        const pong = await redis.ping();
        if (pong !== "PONG") throw new Error(`unexpected PING reply ${String(pong)}`);
      })(),
    );
  } catch (error) {
    redis.disconnect();
    const reason = redactSecret(lastError || (error as Error).message, config.password);
    throw new RedisStartupError(`Redis PING to ${address} failed: ${reason}`);
  }

  redis.off("error", onError);
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
  return redis;
}

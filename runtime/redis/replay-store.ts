/** Replay reservations in Redis (contract §5). */
import type { ReplayStore } from "../../handlers/ports.js";
import type { RedisClient } from "./connection.js";
import { createKeyspace } from "./keyspace.js";

/**
 * Reserves `{prefix}replay:{device_session_id}/{request_id}` with
 * `SET … 1 NX PX (2·skew + 1000)`. Errors propagate so the caller fails closed.
 */
export function createRedisReplayStore(options: {
  redis: RedisClient;
  keyPrefix: string;
  maxClockSkewMs: number;
}): ReplayStore {
  const keys = createKeyspace(options.keyPrefix);
  const ttlMs = 2 * options.maxClockSkewMs + 1000;
  return {
    async reserve(deviceSessionId, requestId) {
      const key = keys.replayKey(deviceSessionId, requestId);
      const reply = await options.redis.set(key, "1", "PX", ttlMs, "NX");
      return reply === "OK";
    },
  };
}

/**
 * The defaults of contract §2, in one place: the configuration schema applies
 * them to unset variables, and the publisher helpers, CLI and provisioning
 * script use the same values when they are not told otherwise. Durations are
 * in milliseconds.
 */
export const DEFAULTS = {
  /** `GATEWAY_REDIS_DB`. */
  redisDb: 0,
  /** `GATEWAY_REDIS_CLUSTER`: one Redis server unless told it is a cluster. */
  redisCluster: false,
  /** `GATEWAY_REDIS_KEY_PREFIX`: prefix of session and replay keys. */
  keyPrefix: "gateway:",
  /** `GATEWAY_REDIS_PING_TIMEOUT`. */
  redisPingTimeoutMs: 2000,
  /** `GATEWAY_REDIS_COMMAND_TIMEOUT`. */
  redisCommandTimeoutMs: 1000,
  /** `GATEWAY_SESSION_EVENTS_REDIS_STREAM`. */
  sessionEventsStream: "gateway:session_events",
  /** `GATEWAY_CLIENT_EVENTS_REDIS_STREAM`. */
  clientEventsStream: "gateway:client_events",
  /**
   * The approximate `MAXLEN` publishers pass to `XADD` on both streams, and
   * the retention the provisioning script reports and trims to (contract §6).
   */
  streamMaxLen: 100_000,
  /** `GATEWAY_PUBLIC_HTTP_ADDR`. */
  publicHttpAddr: ":8080",
  /** `GATEWAY_AUTHENTICATED_GRPC_ADDR`. */
  grpcAddr: ":9090",
  /** `GATEWAY_SHUTDOWN_TIMEOUT`: the budget of each shutdown step. */
  shutdownTimeoutMs: 5000,
  /** `GATEWAY_REQUEST_MAX_CLOCK_SKEW`. */
  maxClockSkewMs: 30_000,
  /** `GATEWAY_SESSION_CACHE_TTL`. */
  sessionCacheTtlMs: 30_000,
  /** `GATEWAY_SESSION_CACHE_MAX_ENTRIES`. */
  sessionCacheMaxEntries: 100_000,
  /** `GATEWAY_MAX_COMMAND_PAYLOAD_BYTES`. */
  maxCommandPayloadBytes: 262_144,
  /** `GATEWAY_MAX_EVENT_PAYLOAD_BYTES`: gateways drop larger client events. */
  maxEventPayloadBytes: 65_536,
  /** `GATEWAY_PUSH_STREAM_QUEUE_SIZE`. */
  pushStreamQueueSize: 256,
  /** `GATEWAY_PUSH_HISTORY_SIZE`: events kept per user for resume; 0 = off. */
  pushHistorySize: 1000,
  /** `GATEWAY_PUSH_HISTORY_TTL`: how long a user's history outlives its last event; 0 = off. */
  pushHistoryTtlMs: 600_000,
  /** `GATEWAY_MAX_STREAMS_PER_SESSION`. */
  maxStreamsPerSession: 4,
  /** `GATEWAY_MAX_PUSH_STREAMS`. */
  maxPushStreams: 100_000,
  /** `GATEWAY_LOG_LEVEL`. */
  logLevel: "info",
} as const;

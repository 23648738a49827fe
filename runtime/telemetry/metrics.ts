/**
 * Prometheus metrics of contract §9 on a registry of their own, so several
 * gateways in one process (tests, embedders) never share counters.
 */
import client from "prom-client";

/** prom-client gauges named `_total`, which promtool rejects. */
const PROMTOOL_REJECTED = [
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
];

/** How often the event-loop delay (`nodejs_eventloop_lag_*`) is sampled, ms. */
const EVENT_LOOP_SAMPLE_MS = 50;

/** Creates the gateway's metrics, with prom-client's process and Node.js defaults. */
export function createMetrics() {
  const registry = new client.Registry();
  /** What each tracked Redis client reports to `gateway_redis_connections`. */
  const redisConnectionSources = new Set<{ role: string; count: () => number }>();
  // The event-loop delay histogram samples on a timer: prom-client's default
  // 10 ms wakes an idle process 100 times a second, about 0.5 % of a core
  // here. Every 50 ms, a stall of 50 ms or more always shows (as at least its
  // length less 50 ms); a shorter one with a chance in proportion to its length.
  client.collectDefaultMetrics({
    register: registry,
    eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS,
  });
  for (const name of PROMTOOL_REJECTED) registry.removeSingleMetric(name);
  const registers = [registry];

  return {
    registry,
    grpcRequests: new client.Counter({
      name: "gateway_grpc_requests_total",
      help: "gRPC calls by method and final status name.",
      labelNames: ["method", "code"] as const,
      registers,
    }),
    grpcDuration: new client.Histogram({
      name: "gateway_grpc_request_duration_seconds",
      help: "gRPC unary call duration, and push stream lifetime, by method.",
      labelNames: ["method"] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    httpRequests: new client.Counter({
      name: "gateway_http_requests_total",
      help: "Public HTTP requests by route and status.",
      labelNames: ["route", "status"] as const,
      registers,
    }),
    authFailures: new client.Counter({
      name: "gateway_auth_failures_total",
      help: "gRPC authentication failures by reason.",
      labelNames: ["reason"] as const,
      registers,
    }),
    pushStreamsActive: new client.Gauge({
      name: "gateway_push_streams_active",
      help: "Open SubscribeEvents streams.",
      registers,
    }),
    pushEventsDelivered: new client.Counter({
      name: "gateway_push_events_delivered_total",
      help: "Events queued to a push stream.",
      registers,
    }),
    pushStreamCloses: new client.Counter({
      name: "gateway_push_stream_closes_total",
      help: "Push streams closed, by reason.",
      labelNames: ["reason"] as const,
      registers,
    }),
    pushResumes: new client.Counter({
      name: "gateway_push_resumes_total",
      help: "SubscribeEvents calls with a last_event_id, by whether continuity was recovered.",
      labelNames: ["result"] as const,
      registers,
    }),
    historyEntriesRouted: new client.Counter({
      name: "gateway_history_entries_routed_total",
      help: "Client events this node wrote into users' histories (as the history router).",
      registers,
    }),
    pushEventsReceived: new client.Counter({
      name: "gateway_push_events_received_total",
      help: "Client events this node took in to deliver to its streams: every ingress entry (fan-out read) or its users' channel messages (fan-out routed).",
      labelNames: ["via"] as const,
      registers,
    }),
    redisConnections: new client.Gauge({
      name: "gateway_redis_connections",
      help: "Redis connections of this node that are ready, by role.",
      labelNames: ["role"] as const,
      registers,
      collect() {
        const totals = new Map<string, number>();
        for (const { role, count } of redisConnectionSources) {
          totals.set(role, (totals.get(role) ?? 0) + count());
        }
        this.reset();
        for (const [role, total] of totals) this.set({ role }, total);
      },
    }),
    /**
     * Counts what `count` says (ready connections) under `role` in
     * `gateway_redis_connections` until the returned function is called.
     */
    trackRedisConnections(role: string, count: () => number): () => void {
      const source = { role, count };
      redisConnectionSources.add(source);
      return () => redisConnectionSources.delete(source);
    },
    clientEvents: new client.Counter({
      name: "gateway_client_events_total",
      help: "Client-events stream entries consumed, by result.",
      labelNames: ["result"] as const,
      registers,
    }),
    sessionEvents: new client.Counter({
      name: "gateway_session_events_total",
      help: "Session-events stream entries consumed, by result.",
      labelNames: ["result"] as const,
      registers,
    }),
    readerLag: new client.Gauge({
      name: "gateway_stream_reader_lag_seconds",
      help: "Age of the last entry a stream reader processed when it processed it.",
      labelNames: ["stream"] as const,
      registers,
    }),
    redisCommandDuration: new client.Histogram({
      name: "gateway_redis_command_duration_seconds",
      help: "Redis command duration by command.",
      labelNames: ["command"] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
  };
}

/** The gateway's metrics. */
export type Metrics = ReturnType<typeof createMetrics>;

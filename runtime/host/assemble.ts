/**
 * Builds the gateway's components from configuration and injected parts: the
 * stateless handlers get their ports here, the stream readers their
 * handlers, the gRPC listener its manifest of services.
 */
import { createExecuteCommandHandler } from "../../handlers/execute-command.js";
import type {
  AuthUpstream,
  Clock,
  ReplayStore,
  ResponseSigner,
  Routes,
  SignatureVerifier,
} from "../../handlers/ports.js";
import { createSubscribeEventsAuthenticator, signEvent } from "../../handlers/subscribe-events.js";
import type { GrpcHealth } from "../grpc/health.js";
import { type GrpcService, gatewayServices } from "../grpc/methods.js";
import { createHistoryStore, type HistoryStore } from "../history/history-store.js";
import { createHistoryTask } from "../history/history-task.js";
import type { ResumeLimits } from "../history/resume.js";
import { createHttpAuthUpstream } from "../http/auth-upstream.js";
import type { ExecuteCommandHandler } from "../http/connect.js";
import { createPublicHttpApp, toNodeListener } from "../http/public.js";
import { createPushHub, type PushHub } from "../push/push-hub.js";
import type { PushResume, PushSessionDeps } from "../push/push-session.js";
import { recheckOpenStreams } from "../push/session-recheck.js";
import { createUserChannels, type UserChannels } from "../push/user-channels.js";
import { connectSubscriber, redisModeOf, subscriberConnections } from "../redis/connection.js";
import { createKeyspace } from "../redis/keyspace.js";
import { createRedisReplayStore } from "../redis/replay-store.js";
import { type CachedSessionStore, createRedisSessionStore } from "../redis/session-store.js";
import { type ClientEvent, createClientEventsHandler } from "../streams/client-events.js";
import { createSessionEventsHandler } from "../streams/session-events.js";
import {
  createStreamReader,
  type StreamEntry,
  type StreamReader,
} from "../streams/stream-reader.js";
import {
  type BackgroundTask,
  type ComponentContext,
  type CoreComponent,
  createCoreComponent,
  createGrpcComponent,
  createHttpComponent,
  createPushHubComponent,
  createReadersComponent,
  type ServePublicHttp,
} from "./components.js";
import type { Component } from "./lifecycle.js";

/** What the host injects besides configuration. */
export interface AssembleOptions extends ComponentContext {
  readonly routes?: Routes;
  readonly authUpstream?: AuthUpstream;
  readonly clock: Clock;
  readonly health: GrpcHealth;
  readonly servePublicHttp?: ServePublicHttp;
  readonly telemetry?: { shutdown(): Promise<void> };
  /** Host state the listeners read. */
  readonly isReady: () => boolean;
  readonly isShuttingDown: () => boolean;
  /** Step 1 of shutdown and the last of startup. */
  readonly readiness: Component;
}

/** The assembled gateway: its components in start order and what the host exposes. */
export interface AssembledGateway {
  readonly components: readonly Component[];
  readonly core: CoreComponent;
  readonly addresses: () => { publicHttp: string; grpc: string; adminHttp?: string };
}

/** Builds every component; nothing starts until the lifecycle starts them. */
export function assembleGateway(options: AssembleOptions): AssembledGateway {
  const { config, logger, metrics, clock } = options;
  const core = createCoreComponent(options, options.routes);
  const hub = createPushHub({
    queueSize: config.pushStreamQueueSize,
    maxStreamsPerSession: config.maxStreamsPerSession,
    maxStreams: config.maxPushStreams,
    terminalTimeoutMs: config.shutdownTimeoutMs,
    metrics,
    logger,
  });
  const sessionStore = once(() =>
    createRedisSessionStore({
      redis: core.redis(),
      keyPrefix: config.redis.keyPrefix,
      ttlMs: config.sessionCacheTtlMs,
      maxEntries: config.sessionCacheMaxEntries,
      clock,
      logger,
    }),
  );
  // One handler pipeline for ExecuteCommand, whichever listener a call arrives on.
  const handlerPorts = once(() => createHandlerPorts(options, core, sessionStore()));
  const historyStore = once(() =>
    createHistoryStore({
      redis: core.redis(),
      keyspace: createKeyspace(config.redis.keyPrefix),
      clientEventsStream: config.clientEventsStream,
      ttlMs: config.pushHistory?.ttlMs ?? 0,
    }),
  );
  const channels = once(() => createNodeUserChannels(options, core, hub));
  const readers = createReadersComponent(options, () =>
    createReaders(options, core, hub, sessionStore(), historyStore(), channels),
  );
  // One push session pipeline for SubscribeEvents, whichever listener a call arrives on.
  const pushSessionDeps = once(() =>
    createPushSessionDeps(
      options,
      hub,
      handlerPorts(),
      deliveryOf(options, readers.clientEvents(), historyStore(), channels),
      pushResume(options, historyStore()),
    ),
  );
  const grpc = createGrpcComponent(
    options,
    () => createServices(options, handlerPorts(), pushSessionDeps()),
    options.isShuttingDown,
  );
  const http = createPublicHttp(options, handlerPorts, pushSessionDeps);
  const telemetry: Component = {
    stopped: "telemetry flushed",
    shutdownStep: 7,
    stop: async () => options.telemetry?.shutdown(),
  };
  return {
    components: [
      telemetry,
      core,
      createPushHubComponent(hub, options.health),
      readers,
      grpc,
      http,
      options.readiness,
    ],
    core,
    addresses: () => ({ ...http.addresses(), grpc: grpc.address() }),
  };
}

/** The public listener: §8 routes, Connect and gRPC-Web over the shared pipelines, CORS. */
function createPublicHttp(
  options: AssembleOptions,
  handlerPorts: () => HandlerPorts,
  pushSessionDeps: () => PushSessionDeps,
): ReturnType<typeof createHttpComponent> {
  const { config, logger, metrics } = options;
  const authUpstream =
    options.authUpstream ??
    (config.authUpstreamUrl === undefined
      ? undefined
      : createHttpAuthUpstream({ baseUrl: config.authUpstreamUrl, logger }));
  return createHttpComponent(
    options,
    () =>
      toNodeListener(
        createPublicHttpApp({
          authUpstream,
          isReady: options.isReady,
          redisMode: redisModeOf(config.redis),
          logger,
          metrics,
          connect: {
            methods: {
              executeCommand: handlerPorts().executeCommand,
              subscribeEvents: pushSessionDeps(),
            },
            maxCommandPayloadBytes: config.maxCommandPayloadBytes,
            isShuttingDown: options.isShuttingDown,
          },
          corsAllowedOrigins: config.corsAllowedOrigins,
        }),
      ),
    options.servePublicHttp,
    authUpstream,
  );
}

/** A factory that builds its value on first use and hands out the same one after. */
function once<T>(build: () => T): () => T {
  let value: T | undefined;
  return () => {
    value ??= build();
    return value;
  };
}

/**
 * The session-events reader; the client-events reader unless fan-out is
 * routed; the history task when history is on (it follows the client-events
 * reader's position, or the router's when routed), and
 * the user channels' shutdown.
 */
function createReaders(
  options: AssembleOptions,
  core: CoreComponent,
  hub: PushHub,
  sessions: CachedSessionStore,
  history: HistoryStore,
  channels: () => UserChannels,
): ReturnType<Parameters<typeof createReadersComponent>[1]> {
  const { config, logger, metrics } = options;
  const routed = config.pushFanout === "routed";
  const clientEvents = routed ? undefined : createClientEventsReader(options, core, hub);
  const tasks: BackgroundTask[] = [];
  if (config.pushHistory !== undefined) {
    tasks.push(
      createHistoryTask({
        redis: core.redis(),
        store: history,
        keyspace: createKeyspace(config.redis.keyPrefix),
        clientEventsStream: config.clientEventsStream,
        history: config.pushHistory,
        maxPayloadBytes: config.maxEventPayloadBytes,
        count: readerBatch(config.pushStreamQueueSize),
        soleReader: routed,
        users: () => hub.openUserIds(),
        position:
          clientEvents === undefined ? () => routerPosition(history) : () => clientEvents.cursor(),
        logger,
        metrics,
      }),
    );
  }
  if (routed) tasks.push({ start: async () => {}, stop: () => channels().stop() });
  return [createSessionEventsReader(options, core, hub, sessions), clientEvents, tasks];
}

/** The router's position: where a history created now is complete from, under routed fan-out. */
async function routerPosition(history: HistoryStore): Promise<string> {
  const state = await history.routerState();
  if (state === undefined) throw new Error("no history router has run yet");
  return state.position;
}

/** Where each push stream's live delivery continues from (§7, §13). */
function deliveryOf(
  { config }: ComponentContext,
  clientEvents: StreamReader | undefined,
  history: HistoryStore,
  channels: () => UserChannels,
): PushSessionDeps["delivery"] {
  // Read at registration: where live delivery continues from.
  if (clientEvents !== undefined) return { cursor: () => clientEvents.cursor() };
  const userChannels = channels();
  return {
    routed: {
      acquire: (userId) => userChannels.acquire(userId),
      sources: history,
      limits: resumeLimits(config),
    },
  };
}

/**
 * The user channels of routed fan-out (§13): a subscriber connection of its
 * own, opened with the first subscription; each event is signed once and
 * handed to the hub, as the client-events reader does.
 */
function createNodeUserChannels(
  { config, logger, metrics, clock }: AssembleOptions,
  core: CoreComponent,
  hub: PushHub,
): UserChannels {
  return createUserChannels({
    connect: async (onLost) => {
      const subscriber = await connectSubscriber(core.redis(), onLost);
      const untrack = metrics.trackRedisConnections("events_subscriber", () =>
        subscriberConnections(subscriber),
      );
      subscriber.once("end", untrack);
      return subscriber;
    },
    keyspace: createKeyspace(config.redis.keyPrefix),
    deliver: signedDelivery(core, hub, clock),
    interrupt: (userId) => (userId === undefined ? hub.interruptAll() : hub.interruptUser(userId)),
    maxPayloadBytes: config.maxEventPayloadBytes,
    idleMs: 10_000,
    metrics,
    logger,
  });
}

/** Hands a client event to the hub, signed at most once and only if some stream wants it. */
function signedDelivery(
  core: CoreComponent,
  hub: PushHub,
  clock: Clock,
): (event: ClientEvent) => number {
  return (event) =>
    hub.publish(
      () =>
        signEvent(core.signer(), {
          eventId: event.eventId,
          eventType: event.eventType,
          requestId: event.requestId,
          timestampMs: clock.now(),
          payload: event.payload,
        }),
      { userId: event.userId, deviceSessionId: event.deviceSessionId },
    );
}

/** The stateless handlers' ports over the started Redis, and the ExecuteCommand handler built on them. */
interface HandlerPorts {
  readonly sessions: CachedSessionStore;
  readonly replay: ReplayStore;
  readonly clock: Clock;
  readonly signer: ResponseSigner;
  /** Ed25519 request verification (libsodium when it loaded). */
  readonly verifier: SignatureVerifier;
  readonly executeCommand: ExecuteCommandHandler;
}

/** Builds the handler ports once Redis is connected. */
function createHandlerPorts(
  { config, clock }: AssembleOptions,
  core: CoreComponent,
  sessions: CachedSessionStore,
): HandlerPorts {
  const replay = createRedisReplayStore({
    redis: core.redis(),
    keyPrefix: config.redis.keyPrefix,
    maxClockSkewMs: config.maxClockSkewMs,
  });
  const signer = core.signer();
  const verifier = core.ed25519();
  return {
    sessions,
    replay,
    clock,
    signer,
    verifier,
    executeCommand: createExecuteCommandHandler({
      sessions,
      replay,
      clock,
      signer,
      verifier,
      router: core.router(),
      maxClockSkewMs: config.maxClockSkewMs,
      maxPayloadBytes: config.maxCommandPayloadBytes,
    }),
  };
}

/** The gRPC listener's services, with the handlers' ports from the started Redis. */
function createServices(
  options: AssembleOptions,
  handlerPorts: HandlerPorts,
  pushSessionDeps: PushSessionDeps,
): readonly GrpcService[] {
  return gatewayServices({
    executeCommand: handlerPorts.executeCommand,
    pushSession: pushSessionDeps,
    health: options.health,
    logger: options.logger,
  });
}

/** What a SubscribeEvents push session needs, on either listener, over the started Redis. */
function createPushSessionDeps(
  { config, logger, metrics }: AssembleOptions,
  hub: PushHub,
  handlerPorts: HandlerPorts,
  delivery: PushSessionDeps["delivery"],
  resume: PushResume,
): PushSessionDeps {
  const { executeCommand: _executeCommand, ...ports } = handlerPorts;
  return {
    ...ports,
    authenticate: createSubscribeEventsAuthenticator({
      ...ports,
      maxClockSkewMs: config.maxClockSkewMs,
    }),
    hub,
    delivery,
    resume,
    metrics,
    logger,
  };
}

/** How a SubscribeEvents call with `last_event_id` resumes (§12). */
function pushResume({ config, logger }: ComponentContext, store: HistoryStore): PushResume {
  return {
    sources: store,
    limits: resumeLimits(config),
    ...(config.pushHistory === undefined
      ? {}
      : {
          touch: (userId: string, position: string) => {
            store.touch([userId], position).catch((error: Error) => {
              logger.debug(`history keep-alive for user ${userId} failed: ${error.message}`);
            });
          },
        }),
  };
}

/** What a resume may read (§12). */
function resumeLimits(config: ComponentContext["config"]): ResumeLimits {
  return {
    historyOn: config.pushHistory !== undefined,
    maxPayloadBytes: config.maxEventPayloadBytes,
    maxIngressScan: 10_000,
    pageSize: readerBatch(config.pushStreamQueueSize),
  };
}

/** The session-events reader: snapshots update the cache and end affected streams. */
function createSessionEventsReader(
  { config, logger, metrics }: ComponentContext,
  core: CoreComponent,
  hub: PushHub,
  sessions: CachedSessionStore,
): StreamReader {
  return createStreamReader({
    redis: core.redis(),
    stream: config.sessionEventsStream,
    role: "session_events",
    count: readerBatch(config.pushStreamQueueSize),
    logger,
    metrics,
    onEntries: createSessionEventsHandler({
      apply: (snapshot) => {
        sessions.applySnapshot(snapshot);
        // A revoked session's streams end as revoked; streams opened under
        // another user or key end as changed.
        hub.reconcile(snapshot.deviceSessionId, snapshot);
      },
      metrics,
      logger,
    }),
    onGap: async (gap) => {
      // Snapshots were lost: nothing cached can be trusted, and every open
      // stream's session is re-checked against Redis.
      logger.warn(
        `session events ${gap.kind}: ${gap.reason}; dropping the session cache and re-checking open streams`,
      );
      sessions.clear();
      await recheckOpenStreams(hub, sessions, logger);
    },
  });
}

/** The client-events reader: each well-formed event is signed once and handed to the hub. */
function createClientEventsReader(
  { config, logger, metrics, clock }: AssembleOptions,
  core: CoreComponent,
  hub: PushHub,
): StreamReader {
  return createStreamReader({
    redis: core.redis(),
    stream: config.clientEventsStream,
    role: "client_events",
    count: readerBatch(config.pushStreamQueueSize),
    // Its streams end at a trimmed gap and resume from history: live
    // delivery (the bootstrap's position) goes on after the gap.
    skipPastTrimmedGap: true,
    logger,
    metrics,
    onEntries: countedAsReceived(
      metrics,
      createClientEventsHandler({
        deliver: signedDelivery(core, hub, clock),
        metrics,
        logger,
        maxPayloadBytes: config.maxEventPayloadBytes,
      }),
    ),
    onGap: (gap) => {
      // Entries trimmed before this node read them were never delivered: end
      // the streams open now, so their devices resume and learn whether
      // history fills the gap. (A Redis that lost its data had nothing
      // published while it was down; open streams go on.)
      const ended = gap.kind === "trimmed" ? hub.interruptAll() : 0;
      logger.warn(
        `client events ${gap.kind}: ${gap.reason}; events in the gap are not delivered live, reading on after ${gap.kind === "trimmed" ? "the stream's last entry" : gap.cursor}${ended > 0 ? `; ${ended} open stream(s) ended to resume` : ""}`,
      );
    },
  });
}

/** `handle`, counting each ingress entry as received (every node reads them all under fan-out `read`). */
function countedAsReceived(
  metrics: ComponentContext["metrics"],
  handle: (entries: readonly StreamEntry[]) => void,
): (entries: readonly StreamEntry[]) => void {
  return (entries) => {
    metrics?.pushEventsReceived.inc({ via: "ingress" }, entries.length);
    handle(entries);
  };
}

/** Entries read per XREAD: the queue size, at most 128. */
function readerBatch(queueSize: number): number {
  return Math.min(queueSize, 128);
}

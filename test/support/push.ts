/**
 * Push-path test support: devices with signed requests, subscriptions that
 * record every event and the terminal status, clients that stop reading, an
 * independent check of pushed-event signatures (contract §4), /metrics
 * scraping, and in-process gateways on streams of their own.
 */
import { createHash, createPublicKey, type KeyObject, randomUUID, verify } from "node:crypto";
import {
  type Channel,
  ChannelCredentials,
  ClientError,
  createChannel,
  createClient,
  Status,
  waitForChannelReady,
} from "nice-grpc";
import type { Routes } from "../../handlers/ports.js";
import {
  EdgeGatewayServiceDefinition,
  type ExecuteCommandRequest,
  type SubscribeEventsRequest,
  type SubscribeEventsResponse,
} from "../../proto/gen/edgegateway/v1/edge_gateway.js";
import type { GatewayConfig } from "../../runtime/config/config.js";
import {
  signExecuteCommandRequest,
  signSubscribeEventsRequest,
} from "../../runtime/kit/device-client.js";
import {
  type ClientEventInput,
  publishClientEvent,
  publishSessionSnapshot,
  type SessionSnapshotInput,
} from "../../runtime/kit/publishers.js";
import type { RedisClient } from "../../runtime/redis/connection.js";
import { createKeyspace } from "../../runtime/redis/keyspace.js";
import type { Cleanup } from "./cleanup.js";
import { startGateway } from "./gateway.js";
import { newDeviceKey, vectors } from "./keys.js";
import type { TestRedis } from "./redis-server.js";
import * as stalled from "./stalled-subscriptions.js";
import { waitFor } from "./wait.js";

/** Safety net of every wait below; never an expectation about speed. */
export const SAFETY_MS = 15_000;

/** The gateway's public key, imported from the shared vectors' raw bytes. */
const gatewayPublicKey = createPublicKey({
  key: { kty: "OKP", crv: "Ed25519", x: vectors.gateway_key.public_key_base64url },
  format: "jwk",
});

function lp(text: string): Buffer {
  const bytes = Buffer.from(text, "utf8");
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

function u64(value: number): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64BE(BigInt(value));
  return bytes;
}

/** The signed bytes of a pushed event, built from contract §4 alone. */
export function contractEventSignedBytes(event: {
  keyId: string;
  eventId: string;
  eventType: string;
  requestId: string;
  timestampMs: number;
  payload: Uint8Array;
}): Buffer {
  return Buffer.concat([
    lp("edge-gateway/v1/event"),
    lp(event.keyId),
    lp(event.eventId),
    lp(event.eventType),
    lp(event.requestId),
    u64(event.timestampMs),
    createHash("sha256").update(event.payload).digest(),
  ]);
}

/** Whether an event carries the vectors' gateway `key_id` and a valid signature by that key. */
export function hasValidGatewaySignature(event: SubscribeEventsResponse): boolean {
  return (
    event.keyId === vectors.gateway_key.key_id &&
    verify(null, contractEventSignedBytes(event), gatewayPublicKey, event.signature)
  );
}

let sequence = 0;

/** A name unique within the test file. */
export function uniqueName(prefix: string): string {
  sequence += 1;
  return `${prefix}-${sequence}`;
}

/** A device session: its ids and its Ed25519 key. */
export interface TestDevice {
  readonly userId: string;
  readonly deviceSessionId: string;
  readonly privateKey: KeyObject;
  /** base64url of the raw public key, as the session record stores it. */
  readonly publicKeyText: string;
}

/** A new device session of `userId` with a fresh key (not yet written anywhere). */
export function newDevice(userId: string, deviceSessionId = uniqueName("ds")): TestDevice {
  return { userId, deviceSessionId, ...newDeviceKey() };
}

/** A SubscribeEvents request signed by the device (or by `signingKey`), fresh now. */
export function subscribeRequest(
  device: TestDevice,
  options: {
    requestId?: string;
    timestampMs?: number;
    lastEventId?: string;
    signingKey?: KeyObject;
  } = {},
): SubscribeEventsRequest {
  return signSubscribeEventsRequest(
    {
      deviceSessionId: device.deviceSessionId,
      requestId: options.requestId ?? `sub-${randomUUID()}`,
      timestampMs: options.timestampMs ?? Date.now(),
      lastEventId: options.lastEventId ?? "",
    },
    options.signingKey ?? device.privateKey,
  );
}

/** An ExecuteCommand request signed by the device, fresh now. */
export function executeRequest(
  device: TestDevice,
  options: { messageType?: string; requestId?: string; payload?: Uint8Array } = {},
): ExecuteCommandRequest {
  return signExecuteCommandRequest(
    {
      deviceSessionId: device.deviceSessionId,
      messageType: options.messageType ?? "demo.echo",
      requestId: options.requestId ?? `cmd-${randomUUID()}`,
      timestampMs: Date.now(),
      payload: options.payload ?? Buffer.from("ping"),
    },
    device.privateKey,
  );
}

/** A gRPC status as a device sees it: its name and message. */
export interface Outcome {
  readonly status: string;
  readonly details: string;
}

function outcomeOfStatus({ code, details }: stalled.GrpcStatus): Outcome {
  return { status: Status[code] ?? String(code), details };
}

function outcomeOf(error: unknown): Outcome {
  if (error instanceof ClientError) return outcomeOfStatus(error);
  if (error instanceof Error && error.name === "AbortError") {
    return { status: "CANCELLED", details: "cancelled by the test" };
  }
  throw error;
}

/** A nice-grpc client on a connection of its own. */
export function grpcClient(address: string, cleanup: Cleanup) {
  const channel = createChannel(address, ChannelCredentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
  });
  cleanup.defer(() => channel.close());
  return createClient(EdgeGatewayServiceDefinition, channel);
}

/** Sends a signed ExecuteCommand; resolves `OK` with the result code, or the error status. */
export async function execute(
  address: string,
  device: TestDevice,
  cleanup: Cleanup,
  options: { messageType?: string; requestId?: string } = {},
): Promise<Outcome> {
  const channel = createChannel(address, ChannelCredentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
  });
  cleanup.defer(() => channel.close());
  const client = createClient(EdgeGatewayServiceDefinition, channel);
  try {
    const response = await client.executeCommand(executeRequest(device, options), {
      signal: AbortSignal.timeout(SAFETY_MS),
    });
    return { status: "OK", details: response.resultCode };
  } catch (error) {
    return outcomeOf(error);
  } finally {
    channel.close();
  }
}

/** Resolves once `check` returns a value; rejects with `describe()` after `timeoutMs`. */
function until<T>(
  subscribe: (wake: () => void) => () => void,
  check: () => T | undefined,
  timeoutMs: number,
  describe: () => string,
): Promise<T> {
  return new Promise((resolve, reject) => {
    let unsubscribe = () => {};
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`timed out after ${timeoutMs} ms: ${describe()}`));
    }, timeoutMs);
    const test = () => {
      let value: T | undefined;
      try {
        value = check();
      } catch (error) {
        clearTimeout(timer);
        unsubscribe();
        reject(error);
        return;
      }
      if (value === undefined) return;
      clearTimeout(timer);
      unsubscribe();
      resolve(value);
    };
    unsubscribe = subscribe(test);
    test();
  });
}

/** A SubscribeEvents call that records what it receives. */
export interface Subscription {
  readonly request: SubscribeEventsRequest;
  /** Every event received so far, the bootstrap event first. */
  readonly events: SubscribeEventsResponse[];
  /** The terminal status, once the stream ended. */
  readonly ended: Outcome | undefined;
  /** The first `count` events, once they arrived; rejects if the stream ends with fewer. */
  received(count: number): Promise<SubscribeEventsResponse[]>;
  /** The terminal status, once the stream ends. */
  terminal(): Promise<Outcome>;
  /** Cancels the call and closes its connection (unless the caller provided it). */
  cancel(): void;
}

/** A connection of its own to `address`, once it is ready (to start calls without connecting). */
export async function connectedChannel(address: string, cleanup: Cleanup): Promise<Channel> {
  const channel = createChannel(address, ChannelCredentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
  });
  cleanup.defer(() => channel.close());
  await waitForChannelReady(channel, new Date(Date.now() + SAFETY_MS));
  return channel;
}

/**
 * Opens SubscribeEvents with a nice-grpc client and reads continuously: on a
 * connection of its own, or on `channel` (which the caller closes).
 */
export function subscribe(
  target: string | Channel,
  request: SubscribeEventsRequest,
  cleanup: Cleanup,
): Subscription {
  const channel =
    typeof target === "string"
      ? createChannel(target, ChannelCredentials.createInsecure(), {
          "grpc.use_local_subchannel_pool": 1,
        })
      : target;
  const client = createClient(EdgeGatewayServiceDefinition, channel);
  const abort = new AbortController();
  const events: SubscribeEventsResponse[] = [];
  const watchers = new Set<() => void>();
  const notify = () => {
    for (const watcher of [...watchers]) watcher();
  };
  const watch = (wake: () => void) => {
    watchers.add(wake);
    return () => watchers.delete(wake);
  };
  let ended: Outcome | undefined;

  const done = (async () => {
    try {
      for await (const event of client.subscribeEvents(request, { signal: abort.signal })) {
        events.push(event);
        notify();
      }
      ended = { status: "OK", details: "" };
    } catch (error) {
      ended = outcomeOf(error);
    }
    notify();
  })();
  const cancel = () => {
    abort.abort();
    if (typeof target === "string") channel.close();
  };
  cleanup.defer(async () => {
    cancel();
    await done;
  });
  const describe = () =>
    `${events.length} event(s) [${events.map((event) => event.eventType).join(", ")}], ended: ${
      ended === undefined ? "no" : `${ended.status} ${ended.details}`
    }`;

  return {
    request,
    events,
    get ended() {
      return ended;
    },
    received(count) {
      return until(
        watch,
        () => {
          if (events.length >= count) return events.slice(0, count);
          if (ended !== undefined) {
            throw new Error(`stream ended before ${count} event(s): ${describe()}`);
          }
          return undefined;
        },
        SAFETY_MS,
        () => `waiting for ${count} event(s); ${describe()}`,
      );
    },
    terminal() {
      return until(
        watch,
        () => ended,
        SAFETY_MS,
        () => `waiting for the end; ${describe()}`,
      );
    },
    cancel,
  };
}

/** {@link stalled.pausedSubscription}, its terminal status as a device sees it. */
export function pausedSubscription(
  address: string,
  request: SubscribeEventsRequest,
  cleanup: Cleanup,
) {
  const paused = stalled.pausedSubscription(address, request, cleanup);
  return { ...paused, status: paused.status.then(outcomeOfStatus) };
}

/** {@link stalled.blockedSubscription}, its terminal status as a device sees it. */
export function blockedSubscription(
  address: string,
  request: SubscribeEventsRequest,
  cleanup: Cleanup,
) {
  const blocked = stalled.blockedSubscription(address, request, cleanup);
  return {
    ...blocked,
    /** Resolves once the stream closed: its status (if one arrived) and the events it got. */
    async end() {
      const { status, events } = await blocked.end();
      return { status: status === undefined ? undefined : outcomeOfStatus(status), events };
    },
  };
}

/** The admin `/metrics` text. */
export async function scrapeMetrics(adminAddress: string): Promise<string> {
  const response = await fetch(`http://${adminAddress}/metrics`);
  if (response.status !== 200) throw new Error(`/metrics answered ${response.status}`);
  return response.text();
}

/** The value of one series (`name{labels}` exactly as exposed) in a scrape; 0 when absent. */
export function metricValue(text: string, series: string): number {
  for (const line of text.split("\n")) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return 0;
}

/** Scrapes `/metrics` and reads one series. */
export async function metric(adminAddress: string, series: string): Promise<number> {
  return metricValue(await scrapeMetrics(adminAddress), series);
}

/**
 * With history on, waits until a history router has started on the
 * gateway's ingress. On a new stream the router's state records where
 * history begins, and a resume from an event published before that is
 * rightly not recovered; the tests publish only once history is complete.
 */
async function historyRouted(publisher: RedisClient, config: GatewayConfig): Promise<void> {
  if (config.pushHistory === undefined) return;
  const stream = config.clientEventsStream;
  const key = createKeyspace(config.redis.keyPrefix).historyRouterKey(stream);
  await waitFor(`the history router's state on ${stream}`, async () => {
    return (await publisher.exists(key)) === 1;
  });
}

/** An in-process gateway reading streams of its own, with publishers bound to them. */
export async function startPushGateway(
  redis: Pick<TestRedis, "addr" | "password">,
  publisher: RedisClient,
  cleanup: Cleanup,
  options: { env?: Record<string, string>; routes?: Routes; name?: string } = {},
) {
  const name = options.name ?? uniqueName("push");
  const clientEvents = `${name}:client_events`;
  const sessionEvents = `${name}:session_events`;
  const gateway = await startGateway(redis, {
    env: {
      GATEWAY_CLIENT_EVENTS_REDIS_STREAM: clientEvents,
      GATEWAY_SESSION_EVENTS_REDIS_STREAM: sessionEvents,
      ...options.env,
    },
    ...(options.routes === undefined ? {} : { routes: options.routes }),
  });
  cleanup.defer(() => gateway.stop());
  await historyRouted(publisher, gateway.config);
  return {
    gateway,
    grpc: gateway.addresses.grpc,
    admin: gateway.addresses.adminHttp ?? "",
    publicHttp: gateway.addresses.publicHttp,
    clientEvents,
    sessionEvents,
    /** `publishClientEvent` onto this gateway's client-events stream. */
    publish: (event: ClientEventInput) =>
      publishClientEvent(publisher, event, { stream: clientEvents }),
    /** `publishSessionSnapshot` onto this gateway's session-events stream. */
    snapshot: (device: TestDevice, status: SessionSnapshotInput["status"]) =>
      publishSessionSnapshot(
        publisher,
        {
          deviceSessionId: device.deviceSessionId,
          userId: device.userId,
          clientPublicKey: device.publicKeyText,
          status,
          ...(status === "revoked" ? { revokedAtMs: Date.now() } : {}),
        },
        { stream: sessionEvents },
      ),
  };
}

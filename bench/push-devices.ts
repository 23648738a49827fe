/**
 * Devices for the push benchmarks: each its own HTTP/2 connection (a grpc-js
 * channel) and one SubscribeEvents stream, opened in batches as a fleet
 * reconnecting would, and revoked one after another with the time each took
 * to end. Shared by bench/push-idle.ts and the revoke probe it runs in a
 * process of its own (bench/peer/revoke-probe.ts).
 */
import type { KeyObject } from "node:crypto";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import type { Redis } from "ioredis";
import {
  type Channel,
  ChannelCredentials,
  ClientError,
  createChannel,
  createClient,
  Status,
} from "nice-grpc";
import { EdgeGatewayServiceDefinition } from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { signSubscribeEventsRequest } from "../runtime/kit/device-client.js";
import { publishSessionSnapshot } from "../runtime/kit/publishers.js";
import { settle } from "./report.js";

/** A batch of streams must have opened within this. */
const BATCH_TIMEOUT_MS = 60_000;
/** How often a stream that ended UNAVAILABLE while opening is opened again, and after how long. */
export const OPEN_RETRIES = 3;
const OPEN_RETRY_DELAY_MS = 200;
/** A revoked stream must have ended within this. */
const REVOKE_TIMEOUT_MS = 5000;

/** How a device's stream ended, as its client saw it. */
export interface StreamEnd {
  /** `performance.now()` when the client saw the end. */
  readonly at: number;
  /** The gRPC status name, or `OK` for an end without error. */
  readonly code: string;
  readonly message: string;
}

/** One device: its session, its own connection and its one SubscribeEvents stream. */
export interface Device {
  readonly index: number;
  readonly userId: string;
  readonly deviceSessionId: string;
  readonly privateKey: KeyObject;
  /** The raw public key, base64url, as the session stores it. */
  readonly publicKeyText: string;
  channel?: Channel;
  abort?: AbortController;
  /** Settles when the stream has ended, however. */
  done?: Promise<void>;
  /** Set once the bootstrap event arrived. */
  open: boolean;
  /** Event types received after the bootstrap event. */
  readonly events: string[];
  end?: StreamEnd;
  /** Called on the bootstrap event, on each later event, and at the end. */
  onChange?: () => void;
}

/** The stream end a device's client saw, from what its `for await` threw (or not). */
function streamEnd(error: unknown): StreamEnd {
  const at = performance.now();
  if (error === undefined) return { at, code: "OK", message: "ended" };
  if (error instanceof ClientError) {
    return { at, code: Status[error.code], message: error.details };
  }
  return { at, code: (error as Error).name, message: (error as Error).message };
}

/** Opens `device`'s connection and stream; `device.done` settles once the stream ended. */
export function openDevice(device: Device, address: string, label: string): void {
  const channel = createChannel(address, ChannelCredentials.createInsecure(), {
    // Its own HTTP/2 connection, as a real device has.
    "grpc.use_local_subchannel_pool": 1,
  });
  const client = createClient(EdgeGatewayServiceDefinition, channel);
  const abort = new AbortController();
  device.channel = channel;
  device.abort = abort;
  const { deviceSessionId, privateKey } = device;
  const request = signSubscribeEventsRequest(
    { deviceSessionId, requestId: `${label}-${device.index}`, timestampMs: Date.now() },
    privateKey,
  );
  device.done = (async () => {
    let failure: unknown;
    try {
      for await (const event of client.subscribeEvents(request, { signal: abort.signal })) {
        if (device.open) device.events.push(event.eventType);
        else device.open = true;
        device.onChange?.();
      }
    } catch (error) {
      failure = error;
    }
    device.end = streamEnd(failure);
    device.onChange?.();
  })();
}

/** Resolves once `ready(device)` holds for every one of `devices`, or rejects after `ms`. */
export function untilAll(
  devices: readonly Device[],
  ready: (device: Device) => boolean,
  ms: number,
  what: string,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let remaining = devices.length;
    const timer = setTimeout(() => {
      for (const device of devices) device.onChange = undefined;
      reject(new Error(`${remaining} of ${devices.length} ${what} after ${ms} ms`));
    }, ms);
    const check = (device: Device) => {
      if (!ready(device)) return;
      device.onChange = undefined;
      if (--remaining === 0) {
        clearTimeout(timer);
        resolve();
      }
    };
    for (const device of devices) {
      device.onChange = () => check(device);
      check(device);
    }
  });
}

/** Fails with the first few stream ends of `devices` no one asked for. */
export function requireNoEnds(devices: readonly Device[], when: string): void {
  const ended = devices.filter((device) => device.end !== undefined);
  if (ended.length === 0) return;
  const sample = ended
    .slice(0, 5)
    .map((device) => `${device.deviceSessionId}: ${device.end!.code} ${device.end!.message}`);
  throw new Error(`${ended.length} stream(s) ended ${when}:\n  ${sample.join("\n  ")}`);
}

/** Ends every stream from the client side and closes the connections. */
export async function closeDevices(devices: readonly Device[]): Promise<void> {
  for (const device of devices) device.abort?.abort();
  await Promise.allSettled(devices.map((device) => device.done));
  for (const device of devices) device.channel?.close();
}

/**
 * Opens the streams of `devices`, `batch` at a time, each batch waiting for
 * every bootstrap event. A stream that ends UNAVAILABLE before it is open is
 * opened again (up to {@link OPEN_RETRIES} times), as devices do; how each
 * of those ended is returned. Throws if any other stream ends.
 */
export async function openDevices(
  devices: readonly Device[],
  address: string,
  label: string,
  batch: number,
): Promise<string[]> {
  const openRetries: string[] = [];
  for (let from = 0; from < devices.length; from += batch) {
    const opened = devices.slice(from, from + batch);
    let opening = opened;
    for (let attempt = 0; opening.length > 0; attempt++) {
      for (const device of opening) openDevice(device, address, `${label}-${attempt}`);
      await untilAll(
        opening,
        (device) => device.open || device.end !== undefined,
        BATCH_TIMEOUT_MS,
        "streams not open",
      );
      // UNAVAILABLE tells a device to retry, and real devices do: so do these, a few times, and say so.
      opening = opened.filter((device) => !device.open && device.end?.code === "UNAVAILABLE");
      if (attempt === OPEN_RETRIES) break;
      for (const device of opening) {
        openRetries.push(`${device.deviceSessionId}: ${device.end!.code} ${device.end!.message}`);
        device.channel?.close();
        device.end = undefined;
      }
      if (opening.length > 0) await settle(OPEN_RETRY_DELAY_MS);
    }
    requireNoEnds(opened, `while opening (devices ${from}–${from + opened.length - 1})`);
  }
  return openRetries;
}

/** What revoking devices one after another measured. */
export interface RevokeTimes {
  /** Publish → stream ended with FAILED_PRECONDITION, ms, one per revoke. */
  readonly revokeMs: number[];
  /** Publish → Redis acknowledged the snapshot, ms, one per revoke. */
  readonly revokeAckMs: number[];
  /** This process's event-loop delay while revoking (p99, max), ms: how much of a latency the client added. */
  readonly loopDelayMs: { readonly p99: number; readonly max: number };
}

/**
 * Revokes the sessions of `devices` one after another
 * (publishSessionSnapshot, status revoked), each once the previous stream
 * ended; fails unless each ends with FAILED_PRECONDITION. The first
 * `warmUp` revokes are not timed: they run the code paths cold, in this
 * process and in the gateway.
 */
export async function revokeOneByOne(
  redis: Redis,
  devices: readonly Device[],
  warmUp = 0,
): Promise<RevokeTimes> {
  const revokeMs: number[] = [];
  const revokeAckMs: number[] = [];
  const loopDelay = monitorEventLoopDelay({ resolution: 1 });
  for (const [index, device] of devices.entries()) {
    if (index === warmUp) loopDelay.enable();
    const ended = untilAll([device], (d) => d.end !== undefined, REVOKE_TIMEOUT_MS, "revoked");
    const { deviceSessionId } = device;
    const snapshot = {
      deviceSessionId,
      userId: device.userId,
      clientPublicKey: device.publicKeyText,
      status: "revoked" as const,
      revokedAtMs: Date.now(),
    };
    const start = performance.now();
    await publishSessionSnapshot(redis, snapshot);
    const ackMs = performance.now() - start;
    await ended;
    const end = device.end!;
    if (end.code !== "FAILED_PRECONDITION") {
      throw new Error(`revoked ${deviceSessionId} ended ${end.code} ${end.message}`);
    }
    if (index < warmUp) continue;
    revokeAckMs.push(ackMs);
    revokeMs.push(end.at - start);
  }
  loopDelay.disable();
  return {
    revokeMs,
    revokeAckMs,
    loopDelayMs: { p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 },
  };
}

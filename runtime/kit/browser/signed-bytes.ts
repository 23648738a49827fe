/**
 * The signed bytes of contract §4 for browsers and other Web runtimes: the
 * same bytes as `handlers/signing.ts`, built with `TextEncoder`, `DataView`
 * and WebCrypto's SHA-256 instead of Node's `Buffer` and `node:crypto`.
 * Async because WebCrypto digests are.
 */
import type {
  EventSigned,
  ExecuteCommandResponseSigned,
  ExecuteCommandSigned,
  SubscribeEventsSigned,
} from "../../../handlers/signing.js";

export type {
  EventSigned,
  ExecuteCommandResponseSigned,
  ExecuteCommandSigned,
  SubscribeEventsSigned,
};

const DOMAIN = {
  executeCommand: "edge-gateway/v1/execute-command",
  subscribeEvents: "edge-gateway/v1/subscribe-events",
  executeCommandResponse: "edge-gateway/v1/execute-command-response",
  event: "edge-gateway/v1/event",
} as const;

const utf8 = new TextEncoder();

/** One field of the signed bytes: `lp(s)`, `u64(n)` or `H(b)`. */
type Part =
  | { readonly lp: string }
  | { readonly u64: number | bigint }
  | { readonly hash: Uint8Array };

async function encodePart(part: Part): Promise<Uint8Array> {
  if ("lp" in part) {
    const bytes = utf8.encode(part.lp);
    const out = new Uint8Array(4 + bytes.length);
    new DataView(out.buffer).setUint32(0, bytes.length);
    out.set(bytes, 4);
    return out;
  }
  if ("u64" in part) {
    const out = new Uint8Array(8);
    new DataView(out.buffer).setBigUint64(0, BigInt(part.u64));
    return out;
  }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", part.hash));
}

async function concat(parts: readonly Part[]): Promise<Uint8Array> {
  const encoded = await Promise.all(parts.map(encodePart));
  const out = new Uint8Array(encoded.reduce((total, bytes) => total + bytes.length, 0));
  let offset = 0;
  for (const bytes of encoded) {
    out.set(bytes, offset);
    offset += bytes.length;
  }
  return out;
}

/** A timestamp as the generated Connect messages carry it (`bigint`) or as the kit does (`number`). */
type Timestamped<T extends { readonly timestampMs: number }> = Omit<T, "timestampMs"> & {
  readonly timestampMs: number | bigint;
};

/** The bytes a device signs for ExecuteCommand. */
export function executeCommandSignedBytes(
  m: Timestamped<ExecuteCommandSigned>,
): Promise<Uint8Array> {
  return concat([
    { lp: DOMAIN.executeCommand },
    { lp: m.deviceSessionId },
    { lp: m.messageType },
    { lp: m.requestId },
    { u64: m.timestampMs },
    { hash: m.payload },
  ]);
}

/** The bytes a device signs for SubscribeEvents. */
export function subscribeEventsSignedBytes(
  m: Timestamped<SubscribeEventsSigned>,
): Promise<Uint8Array> {
  return concat([
    { lp: DOMAIN.subscribeEvents },
    { lp: m.deviceSessionId },
    { lp: m.requestId },
    { u64: m.timestampMs },
    { lp: m.lastEventId },
  ]);
}

/** The bytes the gateway signs for an ExecuteCommand response. */
export function executeCommandResponseSignedBytes(
  m: Timestamped<ExecuteCommandResponseSigned>,
): Promise<Uint8Array> {
  return concat([
    { lp: DOMAIN.executeCommandResponse },
    { lp: m.keyId },
    { lp: m.deviceSessionId },
    { lp: m.requestId },
    { lp: m.resultCode },
    { u64: m.timestampMs },
    { hash: m.payload },
  ]);
}

/** The bytes the gateway signs for a pushed event. */
export function eventSignedBytes(m: Timestamped<EventSigned>): Promise<Uint8Array> {
  return concat([
    { lp: DOMAIN.event },
    { lp: m.keyId },
    { lp: m.eventId },
    { lp: m.eventType },
    { lp: m.requestId },
    { u64: m.timestampMs },
    { hash: m.payload },
  ]);
}

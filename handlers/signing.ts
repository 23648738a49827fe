/**
 * The signed bytes of every v1 message (contract §4). Pure functions: the same
 * inputs always give the same bytes, and `test/signing.test.ts` pins them to
 * the shared vectors.
 */
import { createHash } from "node:crypto";

const DOMAIN = {
  executeCommand: "edge-gateway/v1/execute-command",
  subscribeEvents: "edge-gateway/v1/subscribe-events",
  executeCommandResponse: "edge-gateway/v1/execute-command-response",
  event: "edge-gateway/v1/event",
} as const;

/** Builds a byte string from length-prefixed strings, u64s and hashes. */
class SignedBytes {
  private readonly parts: Buffer[] = [];

  /** `lp(s)`: 4-byte big-endian UTF-8 length, then the bytes. */
  lp(value: string): this {
    const bytes = Buffer.from(value, "utf8");
    const length = Buffer.allocUnsafe(4);
    length.writeUInt32BE(bytes.length);
    this.parts.push(length, bytes);
    return this;
  }

  /** `u64(n)`: 8-byte big-endian unsigned. */
  u64(value: number): this {
    const bytes = Buffer.allocUnsafe(8);
    bytes.writeBigUInt64BE(BigInt(value));
    this.parts.push(bytes);
    return this;
  }

  /** `H(b)`: SHA-256 of raw bytes. */
  hash(value: Uint8Array): this {
    this.parts.push(createHash("sha256").update(value).digest());
    return this;
  }

  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** Signed fields of an ExecuteCommand request. */
export interface ExecuteCommandSigned {
  readonly deviceSessionId: string;
  readonly messageType: string;
  readonly requestId: string;
  readonly timestampMs: number;
  readonly payload: Uint8Array;
}

/** Signed fields of a SubscribeEvents request. */
export interface SubscribeEventsSigned {
  readonly deviceSessionId: string;
  readonly requestId: string;
  readonly timestampMs: number;
  readonly lastEventId: string;
}

/** Signed fields of an ExecuteCommand response. */
export interface ExecuteCommandResponseSigned {
  readonly keyId: string;
  readonly deviceSessionId: string;
  readonly requestId: string;
  readonly resultCode: string;
  readonly timestampMs: number;
  readonly payload: Uint8Array;
}

/** Signed fields of a pushed event. */
export interface EventSigned {
  readonly keyId: string;
  readonly eventId: string;
  readonly eventType: string;
  readonly requestId: string;
  readonly timestampMs: number;
  readonly payload: Uint8Array;
}

/** The bytes a device signs for ExecuteCommand. */
export function executeCommandSignedBytes(m: ExecuteCommandSigned): Buffer {
  return new SignedBytes()
    .lp(DOMAIN.executeCommand)
    .lp(m.deviceSessionId)
    .lp(m.messageType)
    .lp(m.requestId)
    .u64(m.timestampMs)
    .hash(m.payload)
    .done();
}

/** The bytes a device signs for SubscribeEvents. */
export function subscribeEventsSignedBytes(m: SubscribeEventsSigned): Buffer {
  return new SignedBytes()
    .lp(DOMAIN.subscribeEvents)
    .lp(m.deviceSessionId)
    .lp(m.requestId)
    .u64(m.timestampMs)
    .lp(m.lastEventId)
    .done();
}

/** The bytes the gateway signs for an ExecuteCommand response. */
export function executeCommandResponseSignedBytes(m: ExecuteCommandResponseSigned): Buffer {
  return new SignedBytes()
    .lp(DOMAIN.executeCommandResponse)
    .lp(m.keyId)
    .lp(m.deviceSessionId)
    .lp(m.requestId)
    .lp(m.resultCode)
    .u64(m.timestampMs)
    .hash(m.payload)
    .done();
}

/** The bytes the gateway signs for a pushed event. */
export function eventSignedBytes(m: EventSigned): Buffer {
  return new SignedBytes()
    .lp(DOMAIN.event)
    .lp(m.keyId)
    .lp(m.eventId)
    .lp(m.eventType)
    .lp(m.requestId)
    .u64(m.timestampMs)
    .hash(m.payload)
    .done();
}

/**
 * The signed bytes of every v1 message (contract §4). Pure functions: the same
 * inputs always give the same bytes, and `test/signing.test.ts` pins them to
 * the shared vectors.
 */
import { hash } from "node:crypto";

const DOMAIN = {
  executeCommand: "edge-gateway/v1/execute-command",
  subscribeEvents: "edge-gateway/v1/subscribe-events",
  executeCommandResponse: "edge-gateway/v1/execute-command-response",
  event: "edge-gateway/v1/event",
} as const;

/** Bytes of a `u64(n)`. */
const U64_SIZE = 8;
/** Bytes of an `H(b)`. */
const HASH_SIZE = 32;

/**
 * Writes SHA-256 of `data` into `out` (32 bytes), allocating nothing: a
 * library's hash given to the signed-bytes functions below in place of
 * node:crypto's, which returns a new Buffer per hash.
 */
export type Sha256Into = (out: Uint8Array, data: Uint8Array) => void;

/** Bytes of `lp(s)` for each string. */
function lpSize(...values: string[]): number {
  let size = 0;
  for (const value of values) size += 4 + Buffer.byteLength(value, "utf8");
  return size;
}

/**
 * Writes length-prefixed strings, u64s and hashes into one buffer of the
 * exact size: every request and response builds one, so it allocates once.
 */
class SignedBytes {
  private readonly bytes: Buffer;
  private offset = 0;

  constructor(
    size: number,
    private readonly sha256Into?: Sha256Into,
  ) {
    this.bytes = Buffer.allocUnsafe(size);
  }

  /** `lp(s)`: 4-byte big-endian UTF-8 length, then the bytes. */
  lp(value: string): this {
    const length = this.bytes.write(value, this.offset + 4, "utf8");
    this.bytes.writeUInt32BE(length, this.offset);
    this.offset += 4 + length;
    return this;
  }

  /** `u64(n)`: 8-byte big-endian unsigned. */
  u64(value: number): this {
    this.offset = this.bytes.writeBigUInt64BE(BigInt(value), this.offset);
    return this;
  }

  /** `H(b)`: SHA-256 of raw bytes. */
  hash(value: Uint8Array): this {
    if (this.sha256Into === undefined) this.bytes.set(hash("sha256", value, "buffer"), this.offset);
    else this.sha256Into(this.bytes.subarray(this.offset, this.offset + HASH_SIZE), value);
    this.offset += HASH_SIZE;
    return this;
  }

  done(): Buffer {
    if (this.offset !== this.bytes.length) throw new Error("signed bytes size mismatch");
    return this.bytes;
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

/** The bytes a device signs for ExecuteCommand; `sha256Into` hashes the payload if given. */
export function executeCommandSignedBytes(
  m: ExecuteCommandSigned,
  sha256Into?: Sha256Into,
): Buffer {
  const size = lpSize(DOMAIN.executeCommand, m.deviceSessionId, m.messageType, m.requestId);
  return new SignedBytes(size + U64_SIZE + HASH_SIZE, sha256Into)
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
  const size = lpSize(DOMAIN.subscribeEvents, m.deviceSessionId, m.requestId, m.lastEventId);
  return new SignedBytes(size + U64_SIZE)
    .lp(DOMAIN.subscribeEvents)
    .lp(m.deviceSessionId)
    .lp(m.requestId)
    .u64(m.timestampMs)
    .lp(m.lastEventId)
    .done();
}

/** The bytes the gateway signs for an ExecuteCommand response; `sha256Into` as above. */
export function executeCommandResponseSignedBytes(
  m: ExecuteCommandResponseSigned,
  sha256Into?: Sha256Into,
): Buffer {
  const size = lpSize(
    DOMAIN.executeCommandResponse,
    m.keyId,
    m.deviceSessionId,
    m.requestId,
    m.resultCode,
  );
  return new SignedBytes(size + U64_SIZE + HASH_SIZE, sha256Into)
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
export function eventSignedBytes(m: EventSigned, sha256Into?: Sha256Into): Buffer {
  const size = lpSize(DOMAIN.event, m.keyId, m.eventId, m.eventType, m.requestId);
  return new SignedBytes(size + U64_SIZE + HASH_SIZE, sha256Into)
    .lp(DOMAIN.event)
    .lp(m.keyId)
    .lp(m.eventId)
    .lp(m.eventType)
    .lp(m.requestId)
    .u64(m.timestampMs)
    .hash(m.payload)
    .done();
}

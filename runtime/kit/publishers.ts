/**
 * Publisher helpers for upstream services (contract §6, §11): they write the
 * session record and the two streams exactly as the gateway reads them. Input
 * is validated first; invalid input throws and writes nothing.
 */
import { isIdentifier, isTypeName } from "../../handlers/identifiers.js";
import { DEFAULTS } from "../config/defaults.js";
import type { RedisClient } from "../redis/connection.js";
import { createKeyspace } from "../redis/keyspace.js";
import {
  encodeSessionRecord,
  SESSION_FIELDS,
  type SessionRecordInput,
  type SessionRecordProblem,
} from "../redis/session-record.js";

/** The state of one device session, as the auth/session side publishes it. */
export type SessionSnapshotInput = SessionRecordInput;

/** Where a session snapshot goes. */
export interface PublishSessionSnapshotOptions {
  /** `GATEWAY_REDIS_KEY_PREFIX`; defaults to `gateway:`. */
  readonly keyPrefix?: string;
  /** `GATEWAY_SESSION_EVENTS_REDIS_STREAM`; defaults to `gateway:session_events`. */
  readonly stream?: string;
  /** Approximate stream length bound (`MAXLEN ~`); defaults to 100000. */
  readonly maxLen?: number;
  /** Clock for `updated_at_ms`, in Unix ms; defaults to `Date.now`. */
  readonly now?: () => number;
}

/** A client event for the devices of one user, or of one device session. */
export interface ClientEventInput {
  /** Every open stream of this user receives the event… */
  readonly userId: string;
  /** …or, when set, only the streams of this device session. */
  readonly deviceSessionId?: string;
  /** The event type (`[A-Za-z0-9._:/-]`, 1–128 bytes). */
  readonly eventType: string;
  /** Raw bytes, or text sent as UTF-8; absent or empty means no payload. */
  readonly payload?: Uint8Array | string;
  /** A correlation id the devices receive with the event. */
  readonly requestId?: string;
}

/** Where a client event goes. */
export interface PublishClientEventOptions {
  /** `GATEWAY_CLIENT_EVENTS_REDIS_STREAM`; defaults to `gateway:client_events`. */
  readonly stream?: string;
  /** Approximate stream length bound (`MAXLEN ~`); defaults to 100000. */
  readonly maxLen?: number;
  /**
   * Largest payload accepted; defaults to 65536, the gateway's default
   * `GATEWAY_MAX_EVENT_PAYLOAD_BYTES` (gateways drop larger events).
   */
  readonly maxPayloadBytes?: number;
}

/**
 * Publishes a device session's state: writes the hash `{prefix}session:{id}`
 * (`user_id`, `client_public_key`, `status`, `revoked_at_ms` when revoked with a
 * time, `updated_at_ms`) and appends the snapshot to the session-events stream,
 * both in one `MULTI` — on a Redis Cluster (`redis` is an ioredis `Cluster`),
 * where they live in different slots, the hash first and then the entry.
 * Resolves the stream entry id. Throws a TypeError or RangeError, writing
 * nothing, when the input is invalid (including a key of the wrong length or a
 * low-order key).
 *
 * @example
 * ```ts
 * import { Redis } from "ioredis";
 * const redis = new Redis({ host: "127.0.0.1", port: 6379, password });
 * const session = {
 *   deviceSessionId: "ds_42",
 *   userId: "user_7",
 *   clientPublicKey: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
 * };
 * await publishSessionSnapshot(redis, { ...session, status: "active" });
 * // later, on logout: gateways end the session's streams and refuse its calls
 * await publishSessionSnapshot(redis, { ...session, status: "revoked", revokedAtMs: Date.now() });
 * ```
 */
export async function publishSessionSnapshot(
  redis: RedisClient,
  snapshot: SessionSnapshotInput,
  options: PublishSessionSnapshotOptions = {},
): Promise<string> {
  const where = "publishSessionSnapshot";
  const updatedAtMs = (options.now ?? Date.now)();
  const encoded = encodeSessionRecord(snapshot, updatedAtMs);
  if (!encoded.ok) throw inputError(where, encoded);
  const stream = options.stream ?? DEFAULTS.sessionEventsStream;
  const maxLen = options.maxLen ?? DEFAULTS.streamMaxLen;
  requireMaxLen(where, maxLen);

  const hashKey = createKeyspace(options.keyPrefix).sessionKey(encoded.record.deviceSessionId);
  const transaction = redis.multi().hset(hashKey, encoded.hash);
  if (encoded.record.revokedAtMs === undefined) {
    transaction.hdel(hashKey, SESSION_FIELDS.revokedAtMs);
  }
  if (redis.isCluster) {
    // The hash and the stream live in different slots, and one MULTI cannot
    // span slots (CROSSSLOT): the hash first, then the entry. A crash between
    // the two leaves a hash the stream does not show yet; nodes read it when
    // their cached entry expires (GATEWAY_SESSION_CACHE_TTL), or take the next
    // snapshot of this session.
    throwFirstError(where, await transaction.exec());
    const id = await redis.xadd(stream, "MAXLEN", "~", maxLen, "*", ...encoded.entry);
    if (id === null) throw new Error(`${where}: XADD to ${stream} returned no id`);
    return id;
  }
  transaction.xadd(stream, "MAXLEN", "~", maxLen, "*", ...encoded.entry);
  return entryIdOf(where, await transaction.exec());
}

/**
 * Appends a client event to the client-events stream (`XADD … MAXLEN ~`), with
 * the payload as raw bytes. Every gateway node pushes it to the open streams of
 * `userId` (only those of `deviceSessionId` when set). Resolves the entry id, which
 * devices receive as `event_id`. Throws a TypeError or RangeError, writing
 * nothing, when the input is invalid.
 *
 * @example
 * ```ts
 * import { Redis } from "ioredis";
 * const redis = new Redis({ host: "127.0.0.1", port: 6379, password });
 * const eventId = await publishClientEvent(redis, {
 *   userId: "user_7",
 *   eventType: "chat.message",
 *   payload: new TextEncoder().encode(JSON.stringify({ text: "hi" })),
 *   requestId: "req-1",
 * });
 * ```
 */
export async function publishClientEvent(
  redis: RedisClient,
  event: ClientEventInput,
  options: PublishClientEventOptions = {},
): Promise<string> {
  const where = "publishClientEvent";
  const { userId, deviceSessionId, eventType, requestId } = event;
  requireIdentifier(where, "userId", userId);
  if (deviceSessionId !== undefined) requireIdentifier(where, "deviceSessionId", deviceSessionId);
  if (typeof eventType !== "string" || !isTypeName(eventType)) {
    throw new TypeError(`${where}: eventType must be 1-128 bytes of [A-Za-z0-9._:/-]`);
  }
  if (requestId !== undefined) requireIdentifier(where, "requestId", requestId);
  const payload =
    typeof event.payload === "string"
      ? Buffer.from(event.payload, "utf8")
      : event.payload === undefined
        ? Buffer.alloc(0)
        : Buffer.from(event.payload.buffer, event.payload.byteOffset, event.payload.byteLength);
  const maxPayloadBytes = options.maxPayloadBytes ?? DEFAULTS.maxEventPayloadBytes;
  if (payload.length > maxPayloadBytes) {
    throw new RangeError(
      `${where}: payload is ${payload.length} bytes, over the ${maxPayloadBytes} byte limit`,
    );
  }
  const stream = options.stream ?? DEFAULTS.clientEventsStream;
  const maxLen = options.maxLen ?? DEFAULTS.streamMaxLen;
  requireMaxLen(where, maxLen);

  const fields: (string | Buffer)[] = ["user_id", userId];
  if (deviceSessionId !== undefined) fields.push("device_session_id", deviceSessionId);
  fields.push("event_type", eventType);
  if (payload.length > 0) fields.push("payload", payload);
  if (requestId !== undefined) fields.push("request_id", requestId);
  const id = await redis.xadd(stream, "MAXLEN", "~", maxLen, "*", ...fields);
  if (id === null) throw new Error(`${where}: XADD to ${stream} returned no id`);
  return id;
}

function requireIdentifier(where: string, name: string, value: unknown): void {
  if (typeof value !== "string" || !isIdentifier(value)) {
    throw new TypeError(`${where}: ${name} must be 1-128 bytes of [A-Za-z0-9._:-]`);
  }
}

function requireMaxLen(where: string, maxLen: number): void {
  if (!Number.isSafeInteger(maxLen) || maxLen < 1) {
    throw new RangeError(`${where}: maxLen must be a positive integer`);
  }
}

/** The TypeError or RangeError for a refused snapshot, naming the input's own field. */
function inputError(where: string, refused: SessionRecordProblem): Error {
  const { field, reason } = refused;
  if (field === "client_public_key") {
    // An empty text is a key of the wrong length; a value that is not text is no encoding at all.
    const problem = reason === "missing" ? "length" : reason === "invalid" ? "encoding" : reason;
    const why =
      problem === "length"
        ? "an Ed25519 public key is 32 raw bytes"
        : problem === "low_order"
          ? "low-order keys accept forged signatures"
          : "not base64 or base64url of an Ed25519 public key";
    return new TypeError(`${where}: clientPublicKey refused: ${why}`);
  }
  if (field === "status") return new TypeError(`${where}: status must be "active" or "revoked"`);
  if (field === "revoked_at_ms") {
    return reason === "unexpected"
      ? new TypeError(`${where}: revokedAtMs needs status "revoked"`)
      : new RangeError(`${where}: revokedAtMs must be a non-negative integer of Unix ms`);
  }
  const name = Object.entries(SESSION_FIELDS).find(([, known]) => known === field)?.[0];
  return new TypeError(`${where}: ${name} must be 1-128 bytes of [A-Za-z0-9._:-]`);
}

/** Throws the first error of a `MULTI` reply, or that it was aborted. */
function throwFirstError(
  where: string,
  replies: [Error | null, unknown][] | null,
): asserts replies is [Error | null, unknown][] {
  if (replies === null) throw new Error(`${where}: the transaction was aborted`);
  for (const [error] of replies) if (error) throw error;
}

/** The XADD id from a `MULTI … XADD` reply, or the first error in it. */
function entryIdOf(where: string, replies: [Error | null, unknown][] | null): string {
  throwFirstError(where, replies);
  const id = replies[replies.length - 1]?.[1];
  if (typeof id !== "string") throw new Error(`${where}: XADD returned no id`);
  return id;
}

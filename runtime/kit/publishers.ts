/**
 * Publisher helpers for upstream services (contract §6, §11): they write the
 * session record and the two streams exactly as the gateway reads them. Input
 * is validated first; invalid input throws and writes nothing.
 */
import type { Redis } from "ioredis";
import {
  importRawPublicKey,
  type ParsedPublicKey,
  parseDevicePublicKey,
} from "../../handlers/ed25519.js";
import { isIdentifier, isTypeName } from "../../handlers/identifiers.js";

/** The state of one device session, as the auth/session side publishes it. */
export interface SessionSnapshotInput {
  /** The device session id (identifier). */
  readonly deviceSessionId: string;
  /** The user it belongs to (identifier). */
  readonly userId: string;
  /** The device's Ed25519 public key: base64 or base64url of the raw 32 bytes, or the bytes. */
  readonly clientPublicKey: string | Uint8Array;
  /** `active` or `revoked`. */
  readonly status: "active" | "revoked";
  /** When it was revoked, in Unix ms; only with `status: "revoked"`. */
  readonly revokedAtMs?: number;
}

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

const DEFAULT_MAX_LEN = 100_000;

/**
 * Publishes a device session's state: writes the hash `{prefix}session:{id}`
 * (`user_id`, `client_public_key`, `status`, `revoked_at_ms` when revoked with a
 * time, `updated_at_ms`) and appends the snapshot to the session-events stream,
 * both in one `MULTI`. Resolves the stream entry id. Throws a TypeError or
 * RangeError, writing nothing, when the input is invalid (including a key of the
 * wrong length or a low-order key).
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
  redis: Redis,
  snapshot: SessionSnapshotInput,
  options: PublishSessionSnapshotOptions = {},
): Promise<string> {
  const where = "publishSessionSnapshot";
  const { deviceSessionId, userId, status, revokedAtMs } = snapshot;
  requireIdentifier(where, "deviceSessionId", deviceSessionId);
  requireIdentifier(where, "userId", userId);
  const key =
    typeof snapshot.clientPublicKey === "string"
      ? parseDevicePublicKey(snapshot.clientPublicKey)
      : importRawPublicKey(snapshot.clientPublicKey);
  if (!key.ok) throw new TypeError(`${where}: clientPublicKey refused: ${keyProblem(key)}`);
  if (status !== "active" && status !== "revoked") {
    throw new TypeError(`${where}: status must be "active" or "revoked"`);
  }
  if (revokedAtMs !== undefined) {
    if (!Number.isSafeInteger(revokedAtMs) || revokedAtMs < 0) {
      throw new RangeError(`${where}: revokedAtMs must be a non-negative integer of Unix ms`);
    }
    if (status !== "revoked") throw new TypeError(`${where}: revokedAtMs needs status "revoked"`);
  }
  const keyPrefix = options.keyPrefix ?? "gateway:";
  const stream = options.stream ?? "gateway:session_events";
  const maxLen = options.maxLen ?? DEFAULT_MAX_LEN;
  requireMaxLen(where, maxLen);
  const updatedAtMs = (options.now ?? Date.now)();

  const fields: [string, string][] = [
    ["user_id", userId],
    ["client_public_key", key.raw.toString("base64url")],
    ["status", status],
  ];
  if (revokedAtMs !== undefined) fields.push(["revoked_at_ms", String(revokedAtMs)]);

  const hashKey = `${keyPrefix}session:${deviceSessionId}`;
  const transaction = redis
    .multi()
    .hset(hashKey, Object.fromEntries([...fields, ["updated_at_ms", String(updatedAtMs)]]));
  if (revokedAtMs === undefined) transaction.hdel(hashKey, "revoked_at_ms");
  transaction.xadd(
    stream,
    "MAXLEN",
    "~",
    maxLen,
    "*",
    "device_session_id",
    deviceSessionId,
    ...fields.flat(),
  );
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
  redis: Redis,
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
  const maxPayloadBytes = options.maxPayloadBytes ?? 65_536;
  if (payload.length > maxPayloadBytes) {
    throw new RangeError(
      `${where}: payload is ${payload.length} bytes, over the ${maxPayloadBytes} byte limit`,
    );
  }
  const stream = options.stream ?? "gateway:client_events";
  const maxLen = options.maxLen ?? DEFAULT_MAX_LEN;
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

function keyProblem(key: Extract<ParsedPublicKey, { ok: false }>): string {
  switch (key.problem) {
    case "length":
      return "an Ed25519 public key is 32 raw bytes";
    case "low_order":
      return "low-order keys accept forged signatures";
    case "encoding":
      return "not base64 or base64url of an Ed25519 public key";
  }
}

/** The XADD id from a `MULTI … XADD` reply, or the first error in it. */
function entryIdOf(where: string, replies: [Error | null, unknown][] | null): string {
  if (replies === null) throw new Error(`${where}: the transaction was aborted`);
  for (const [error] of replies) if (error) throw error;
  const id = replies[replies.length - 1]?.[1];
  if (typeof id !== "string") throw new Error(`${where}: XADD returned no id`);
  return id;
}

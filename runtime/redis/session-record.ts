/**
 * The session record (contract §6): the fields of the session hash
 * `{prefix}session:{device_session_id}` and of each session-events entry.
 * Writers (the publisher helpers, and through them the CLI and dev mode)
 * encode it here and readers (the session store, the session-events handler)
 * decode it here, so one set of rules decides what a valid session is.
 */
import type { KeyObject } from "node:crypto";
import {
  type PublicKeyProblem,
  parseDevicePublicKey,
  rawPublicKeyOf,
} from "../../handlers/ed25519.js";
import { isIdentifier } from "../../handlers/identifiers.js";

/**
 * The record's field names as Redis holds them, by the name the publisher
 * helpers' input gives each.
 */
export const SESSION_FIELDS = {
  deviceSessionId: "device_session_id",
  userId: "user_id",
  clientPublicKey: "client_public_key",
  status: "status",
  revokedAtMs: "revoked_at_ms",
  updatedAtMs: "updated_at_ms",
} as const;

/** One of the record's field names. */
export type SessionField = (typeof SESSION_FIELDS)[keyof typeof SESSION_FIELDS];

/**
 * The hash fields the gateway reads, in `HMGET` order: a hash without any of
 * them counts as no session.
 */
export const SESSION_HASH_FIELDS = [
  "user_id",
  "client_public_key",
  "status",
  "updated_at_ms",
] as const satisfies readonly SessionField[];

/** The fields every session-events entry carries. */
const ENTRY_FIELDS = [
  "device_session_id",
  "user_id",
  "client_public_key",
  "status",
] as const satisfies readonly SessionField[];

/** A session's state. */
export type SessionStatus = "active" | "revoked";

/** True for exactly `active` and `revoked`. */
export function isSessionStatus(value: unknown): value is SessionStatus {
  return value === "active" || value === "revoked";
}

/** A valid session record. */
export interface SessionRecord {
  /** The device session. */
  readonly deviceSessionId: string;
  /** The user it belongs to. */
  readonly userId: string;
  /** The imported device key (never one of the low-order keys). */
  readonly publicKey: KeyObject;
  /** `client_public_key` as it was read (base64 or base64url). */
  readonly publicKeyText: string;
  /** `active` or `revoked`. */
  readonly status: SessionStatus;
  /** When the session was revoked, in Unix ms, if the writer said. */
  readonly revokedAtMs?: number;
}

/** Why a record was refused: the first field found wanting. */
export interface SessionRecordProblem {
  readonly ok: false;
  /** The field. */
  readonly field: SessionField;
  /**
   * `missing` (absent or empty), `invalid` (not of the field's form),
   * `unexpected` (`revoked_at_ms` on a session a writer does not revoke), or
   * why the key was refused.
   */
  readonly reason: "missing" | "invalid" | "unexpected" | PublicKeyProblem;
  /** The same in one line for logs, e.g. `user_id is not an identifier`. */
  readonly problem: string;
}

/** A decoded record, or why it was refused. */
export type DecodedSessionRecord =
  | { readonly ok: true; readonly record: SessionRecord }
  | SessionRecordProblem;

/** Imports a `client_public_key` text, refusing what {@link parseDevicePublicKey} refuses. */
export type ImportSessionKey = (
  text: string,
) =>
  | { readonly ok: true; readonly key: KeyObject }
  | { readonly ok: false; readonly problem: PublicKeyProblem };

/**
 * Decodes a session hash: `values` is the `HMGET` reply for
 * {@link SESSION_HASH_FIELDS}. `importKey` lets a caller reuse a key it
 * imported before (imports are not free); it must refuse what
 * `parseDevicePublicKey` refuses.
 */
export function decodeSessionHash(
  deviceSessionId: string,
  values: readonly (string | null | undefined)[],
  importKey: ImportSessionKey = parseDevicePublicKey,
): DecodedSessionRecord {
  const hash = new Map<SessionField, string | null | undefined>(
    SESSION_HASH_FIELDS.map((field, index) => [field, values[index]]),
  );
  hash.set("device_session_id", deviceSessionId);
  return decode((field) => hash.get(field), SESSION_HASH_FIELDS, importKey);
}

/**
 * Decodes one session-events entry given its field lookup (text of a field,
 * `undefined` when absent). Unknown fields are ignored.
 */
export function decodeSessionEntry(
  field: (name: SessionField) => string | undefined,
): DecodedSessionRecord {
  return decode(field, ENTRY_FIELDS, parseDevicePublicKey);
}

/**
 * The rules: the required fields are present and non-empty; identifiers are
 * 1–128 bytes of `[A-Za-z0-9._:-]`; `status` is exactly `active` or
 * `revoked`; `revoked_at_ms`, when present, is a non-negative integer of Unix
 * ms; `client_public_key` is base64 or base64url of 32 raw bytes and not a
 * low-order point. The key is checked last: importing it costs the most.
 */
function decode(
  lookup: (field: SessionField) => string | null | undefined,
  required: readonly SessionField[],
  importKey: ImportSessionKey,
): DecodedSessionRecord {
  const text = (field: SessionField): string | undefined => {
    const value = lookup(field);
    return value === null || value === undefined || value === "" ? undefined : value;
  };
  for (const field of required) {
    if (text(field) === undefined) return refuse(field, "missing", "is missing or empty");
  }

  const deviceSessionId = text("device_session_id") ?? "";
  if (!isIdentifier(deviceSessionId)) {
    return refuse("device_session_id", "invalid", "is not an identifier");
  }
  const userId = text("user_id") ?? "";
  if (!isIdentifier(userId)) return refuse("user_id", "invalid", "is not an identifier");
  const status = text("status");
  if (!isSessionStatus(status)) return refuse("status", "invalid", "is not active or revoked");
  const revokedAtText = text("revoked_at_ms");
  const revokedAtMs = revokedAtText === undefined ? undefined : unixMs(revokedAtText);
  if (revokedAtText !== undefined && revokedAtMs === undefined) {
    return refuse("revoked_at_ms", "invalid", "is not a non-negative integer");
  }
  const publicKeyText = text("client_public_key") ?? "";
  const key = importKey(publicKeyText);
  if (!key.ok) return refuse("client_public_key", key.problem, `refused (${key.problem})`);

  return {
    ok: true,
    record: {
      deviceSessionId,
      userId,
      publicKey: key.key,
      publicKeyText,
      status,
      ...(revokedAtMs === undefined ? {} : { revokedAtMs }),
    },
  };
}

/** What a writer states about a session (the publisher helpers' input). */
export interface SessionRecordInput {
  /** The device session id (identifier). */
  readonly deviceSessionId: string;
  /** The user it belongs to (identifier). */
  readonly userId: string;
  /** The device's Ed25519 public key: base64 or base64url of the raw 32 bytes, or the bytes. */
  readonly clientPublicKey: string | Uint8Array;
  /** `active` or `revoked`. */
  readonly status: SessionStatus;
  /** When it was revoked, in Unix ms; only with `status: "revoked"`. */
  readonly revokedAtMs?: number;
}

/** A record as it is written. */
export interface EncodedSessionRecord {
  readonly ok: true;
  /** The record, as readers will decode it. */
  readonly record: SessionRecord;
  /** The session hash's fields, `updated_at_ms` last. */
  readonly hash: Readonly<Record<string, string>>;
  /** The session-events entry as flat `XADD` field/value pairs, `device_session_id` first. */
  readonly entry: readonly string[];
}

/**
 * Encodes a record for the hash (stamped `updated_at_ms`) and the
 * session-events entry, the key as base64url of its raw bytes. Input the
 * readers would refuse is refused here, by the same rules, and so is a
 * `revokedAtMs` on a session that is not revoked.
 */
export function encodeSessionRecord(
  input: SessionRecordInput,
  updatedAtMs: number,
): EncodedSessionRecord | SessionRecordProblem {
  const { clientPublicKey, revokedAtMs } = input;
  const given: Partial<Record<SessionField, unknown>> = {
    device_session_id: input.deviceSessionId,
    user_id: input.userId,
    client_public_key:
      clientPublicKey instanceof Uint8Array
        ? Buffer.from(clientPublicKey).toString("base64url")
        : clientPublicKey,
    status: input.status,
    revoked_at_ms: typeof revokedAtMs === "number" ? String(revokedAtMs) : revokedAtMs,
  };
  for (const [field, value] of Object.entries(given) as [SessionField, unknown][]) {
    if (value !== undefined && typeof value !== "string") {
      return refuse(field, "invalid", "is not text");
    }
  }
  const decoded = decodeSessionEntry((field) => given[field] as string | undefined);
  if (!decoded.ok) return decoded;
  const { record } = decoded;
  if (record.revokedAtMs !== undefined && record.status !== "revoked") {
    return refuse("revoked_at_ms", "unexpected", "is only for a revoked session");
  }

  const fields: [string, string][] = [
    ["user_id", record.userId],
    ["client_public_key", rawPublicKeyOf(record.publicKey).toString("base64url")],
    ["status", record.status],
  ];
  if (record.revokedAtMs !== undefined) fields.push(["revoked_at_ms", String(record.revokedAtMs)]);
  return {
    ok: true,
    record,
    hash: Object.fromEntries([...fields, ["updated_at_ms", String(updatedAtMs)]]),
    entry: ["device_session_id", record.deviceSessionId, ...fields.flat()],
  };
}

function refuse(
  field: SessionField,
  reason: SessionRecordProblem["reason"],
  what: string,
): SessionRecordProblem {
  return { ok: false, field, reason, problem: `${field} ${what}` };
}

function unixMs(value: string): number | undefined {
  if (!/^\d{1,16}$/.test(value)) return undefined;
  const ms = Number(value);
  return Number.isSafeInteger(ms) ? ms : undefined;
}

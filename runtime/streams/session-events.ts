/**
 * Session events (contract §6): each entry of the session-events stream is a full
 * snapshot of one device session. Snapshots are applied in stream order (last
 * writer wins); a revoke also ends that session's open streams. Incomplete or
 * ill-formed snapshots are dropped, counted and logged with their entry id.
 */
import type { KeyObject } from "node:crypto";
import { parseDevicePublicKey } from "../../handlers/ed25519.js";
import { isIdentifier } from "../../handlers/identifiers.js";
import type { Logger } from "../../handlers/ports.js";
import type { Metrics } from "../telemetry/metrics.js";
import { fieldText, type StreamEntry } from "./stream-reader.js";

/** A device session as a snapshot entry states it. */
export interface SessionSnapshot {
  /** The device session. */
  readonly deviceSessionId: string;
  /** The user it belongs to. */
  readonly userId: string;
  /** The imported device key (never one of the low-order keys). */
  readonly publicKey: KeyObject;
  /** `client_public_key` as the entry wrote it (base64 or base64url). */
  readonly publicKeyText: string;
  /** `active` or `revoked`. */
  readonly status: "active" | "revoked";
  /** When the session was revoked, in Unix ms, if the publisher said. */
  readonly revokedAtMs?: number;
}

/** A parsed snapshot, or why the entry was refused. */
export type ParsedSessionSnapshot =
  | { readonly ok: true; readonly snapshot: SessionSnapshot }
  | { readonly ok: false; readonly problem: string };

/**
 * Parses one session-events entry. `device_session_id`, `user_id`,
 * `client_public_key` and `status` are required; `revoked_at_ms` is optional (a
 * non-negative integer; empty counts as absent). The key must be the base64 or
 * base64url of 32 raw bytes and not a low-order point; `status` is exactly
 * `active` or `revoked`. Unknown fields are ignored.
 */
export function parseSessionSnapshot(entry: StreamEntry): ParsedSessionSnapshot {
  const fail = (problem: string): ParsedSessionSnapshot => ({ ok: false, problem });

  const deviceSessionId = fieldText(entry, "device_session_id");
  if (deviceSessionId === undefined) return fail("device_session_id is missing or empty");
  if (!isIdentifier(deviceSessionId)) return fail("device_session_id is not an identifier");

  const userId = fieldText(entry, "user_id");
  if (userId === undefined) return fail("user_id is missing or empty");
  if (!isIdentifier(userId)) return fail("user_id is not an identifier");

  const publicKeyText = fieldText(entry, "client_public_key");
  if (publicKeyText === undefined) return fail("client_public_key is missing or empty");
  const key = parseDevicePublicKey(publicKeyText);
  if (!key.ok) return fail(`client_public_key refused (${key.problem})`);

  const status = fieldText(entry, "status");
  if (status === undefined) return fail("status is missing or empty");
  if (status !== "active" && status !== "revoked") return fail("status is not active or revoked");

  const revokedAtText = fieldText(entry, "revoked_at_ms");
  const revokedAtMs = revokedAtText === undefined ? undefined : unixMs(revokedAtText);
  if (revokedAtText !== undefined && revokedAtMs === undefined) {
    return fail("revoked_at_ms is not a non-negative integer");
  }

  return {
    ok: true,
    snapshot: {
      deviceSessionId,
      userId,
      publicKey: key.key,
      publicKeyText,
      status,
      ...(revokedAtMs === undefined ? {} : { revokedAtMs }),
    },
  };
}

/** What the session-events handler needs. */
export interface SessionEventsHandlerOptions {
  /**
   * Writes the snapshot into the local session cache, then ends the open
   * streams it no longer allows (a revoked session's, or another user's or key's).
   */
  readonly apply: (snapshot: SessionSnapshot) => void;
  /** Counts `gateway_session_events_total{result}`. */
  readonly metrics?: Pick<Metrics, "sessionEvents">;
  /** Warns about dropped entries; logs each applied snapshot at debug. */
  readonly logger: Logger;
}

/**
 * The stream reader's `onEntries` for the session-events stream: each snapshot is
 * applied in stream order (`apply` updates the cache first, so new calls fail,
 * and then ends the session's open streams).
 */
export function createSessionEventsHandler(
  options: SessionEventsHandlerOptions,
): (entries: readonly StreamEntry[]) => void {
  const { apply, metrics, logger } = options;
  return (entries) => {
    for (const entry of entries) {
      const parsed = parseSessionSnapshot(entry);
      if (!parsed.ok) {
        metrics?.sessionEvents.inc({ result: "malformed" });
        logger.warn(`session event ${entry.id} dropped as malformed: ${parsed.problem}`);
        continue;
      }
      const { snapshot } = parsed;
      try {
        apply(snapshot);
      } catch (error) {
        logger.error(`session event ${entry.id} for ${snapshot.deviceSessionId}: failed`, error);
        continue;
      }
      metrics?.sessionEvents.inc({ result: "applied" });
      logger.debug(
        `session event ${entry.id}: session ${snapshot.deviceSessionId} of user ${snapshot.userId} is ${snapshot.status}`,
      );
    }
  };
}

function unixMs(value: string): number | undefined {
  if (!/^\d{1,16}$/.test(value)) return undefined;
  const ms = Number(value);
  return Number.isSafeInteger(ms) ? ms : undefined;
}

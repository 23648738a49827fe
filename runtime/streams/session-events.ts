/**
 * Session events (contract §6): each entry of the session-events stream is a full
 * snapshot of one device session. Snapshots are applied in stream order (last
 * writer wins); a revoke also ends that session's open streams. Incomplete or
 * ill-formed snapshots are dropped, counted and logged with their entry id.
 */
import type { Logger } from "../../handlers/ports.js";
import { decodeSessionEntry, type SessionRecord } from "../redis/session-record.js";
import type { Metrics } from "../telemetry/metrics.js";
import { fieldText, type StreamEntry } from "./stream-reader.js";

/** A device session as a snapshot entry states it. */
export type SessionSnapshot = SessionRecord;

/** A parsed snapshot, or why the entry was refused. */
export type ParsedSessionSnapshot =
  | { readonly ok: true; readonly snapshot: SessionSnapshot }
  | { readonly ok: false; readonly problem: string };

/**
 * Parses one session-events entry by the session record's rules
 * (`decodeSessionEntry`): `device_session_id`, `user_id`, `client_public_key`
 * and `status` are required, `revoked_at_ms` is optional (empty counts as
 * absent), and unknown fields are ignored.
 */
export function parseSessionSnapshot(entry: StreamEntry): ParsedSessionSnapshot {
  const decoded = decodeSessionEntry((name) => fieldText(entry, name));
  return decoded.ok
    ? { ok: true, snapshot: decoded.record }
    : { ok: false, problem: decoded.problem };
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

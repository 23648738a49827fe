/**
 * Client events (contract §6): parsing entries of the client-events stream and
 * handing each well-formed one to the PushHub. Ill-formed entries are dropped,
 * counted and logged; they never stop the reader.
 */
import { isIdentifier, isTypeName } from "../../handlers/identifiers.js";
import type { Logger } from "../../handlers/ports.js";
import type { Metrics } from "../telemetry/metrics.js";
import { fieldText, type StreamEntry } from "./stream-reader.js";

/** A client event as pushed to devices. */
export interface ClientEvent {
  /** The stream entry id; the pushed `event_id`. */
  readonly eventId: string;
  /** Every open stream of this user receives the event… */
  readonly userId: string;
  /** …or, when set, only the streams of this device session (of that user). */
  readonly deviceSessionId?: string;
  /** The event type. */
  readonly eventType: string;
  /** Raw payload bytes; empty when the entry has none. */
  readonly payload: Buffer;
  /** The publisher's correlation id; empty when the entry has none. */
  readonly requestId: string;
}

/** A parsed client event, or why the entry was refused. */
export type ParsedClientEvent =
  | { readonly ok: true; readonly event: ClientEvent }
  | { readonly ok: false; readonly problem: string };

/** Limits applied while parsing. */
export interface ClientEventLimits {
  /** Largest accepted payload (`GATEWAY_MAX_EVENT_PAYLOAD_BYTES`). */
  readonly maxPayloadBytes: number;
}

/**
 * Parses one client-events entry. `user_id` and `event_type` are required;
 * `device_session_id`, `payload` and `request_id` are optional, and an empty value
 * counts as absent (publishers that always write every field leave unused ones
 * empty). Unknown fields are ignored. A payload over `maxPayloadBytes` is refused.
 */
export function parseClientEvent(entry: StreamEntry, limits: ClientEventLimits): ParsedClientEvent {
  const fail = (problem: string): ParsedClientEvent => ({ ok: false, problem });

  const userId = fieldText(entry, "user_id");
  if (userId === undefined) return fail("user_id is missing or empty");
  if (!isIdentifier(userId)) return fail("user_id is not an identifier");

  const deviceSessionId = fieldText(entry, "device_session_id");
  if (deviceSessionId !== undefined && !isIdentifier(deviceSessionId)) {
    return fail("device_session_id is not an identifier");
  }

  const eventType = fieldText(entry, "event_type");
  if (eventType === undefined) return fail("event_type is missing or empty");
  if (!isTypeName(eventType)) return fail("event_type is not a type name");

  const payload = entry.fields.get("payload") ?? Buffer.alloc(0);
  if (payload.length > limits.maxPayloadBytes) {
    return fail(
      `payload is ${payload.length} bytes, over the ${limits.maxPayloadBytes} byte limit`,
    );
  }

  const requestId = fieldText(entry, "request_id");
  if (requestId !== undefined && !isIdentifier(requestId)) {
    return fail("request_id is not an identifier");
  }

  return {
    ok: true,
    event: {
      eventId: entry.id,
      userId,
      ...(deviceSessionId === undefined ? {} : { deviceSessionId }),
      eventType,
      payload,
      requestId: requestId ?? "",
    },
  };
}

/** What the client-events handler needs. */
export interface ClientEventsHandlerOptions extends ClientEventLimits {
  /** Hands the event to every matching open stream; returns how many streams it reached. */
  readonly deliver: (event: ClientEvent) => number;
  /** Counts `gateway_client_events_total{result}`. */
  readonly metrics?: Pick<Metrics, "clientEvents">;
  /** Warns about dropped entries; logs each consumed entry at debug. */
  readonly logger: Logger;
}

/**
 * The stream reader's `onEntries` for the client-events stream: each entry is
 * parsed and delivered in stream order and counted as `delivered` (reached at
 * least one stream), `no_subscriber` or `malformed`.
 */
export function createClientEventsHandler(
  options: ClientEventsHandlerOptions,
): (entries: readonly StreamEntry[]) => void {
  const { deliver, metrics, logger } = options;
  return (entries) => {
    for (const entry of entries) {
      const parsed = parseClientEvent(entry, options);
      if (!parsed.ok) {
        metrics?.clientEvents.inc({ result: "malformed" });
        logger.warn(`client event ${entry.id} dropped as malformed: ${parsed.problem}`);
        continue;
      }
      const { event } = parsed;
      const target =
        event.deviceSessionId === undefined
          ? `user ${event.userId}`
          : `user ${event.userId} session ${event.deviceSessionId}`;
      let reached: number;
      try {
        reached = deliver(event);
      } catch (error) {
        logger.error(`client event ${entry.id} for ${target}: delivery failed`, error);
        continue;
      }
      metrics?.clientEvents.inc({ result: reached > 0 ? "delivered" : "no_subscriber" });
      logger.debug(
        `client event ${entry.id} ${event.eventType} for ${target}: ${reached} stream(s)`,
      );
    }
  };
}

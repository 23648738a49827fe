/**
 * SubscribeEvents: shape checks and the §5 authentication pipeline for a
 * subscribe request, and the signing of pushed events (§4, §7). Pure: the
 * runtime owns the stream itself.
 */
import { type AuthenticateDeps, authenticate } from "./authenticate.js";
import { checkCommonShape, invalid } from "./execute-command.js";
import { isStreamId } from "./identifiers.js";
import type { DeviceSession, ResponseSigner } from "./ports.js";
import { eventSignedBytes, subscribeEventsSignedBytes } from "./signing.js";

/** SubscribeEvents request fields (the generated message type fits). */
export interface SubscribeEventsInput {
  readonly protocolVersion: number;
  readonly deviceSessionId: string;
  readonly requestId: string;
  readonly timestampMs: number;
  readonly signature: Uint8Array;
  /** Empty, or the Redis stream id a later version will resume from. */
  readonly lastEventId: string;
}

/** The fields of a pushed event that the gateway signs. */
export interface EventFields {
  /** Client-events stream entry id (the bootstrap event carries the node's cursor). */
  readonly eventId: string;
  readonly eventType: string;
  /** The publisher's correlation id, the subscribe request_id for the bootstrap event, or empty. */
  readonly requestId: string;
  /** Gateway clock when signed, Unix ms. */
  readonly timestampMs: number;
  readonly payload: Uint8Array;
}

/**
 * One signed pushed event (assignable to the generated SubscribeEventsResponse).
 * Frozen: one object is shared by every stream that receives it.
 */
export interface SignedEvent {
  readonly eventId: string;
  readonly eventType: string;
  readonly timestampMs: number;
  readonly payload: Buffer;
  readonly requestId: string;
  readonly keyId: string;
  readonly signature: Buffer;
}

/** `event_type` of the first event on every stream; clients correct their clock with it. */
export const SERVER_TIME_EVENT_TYPE = "gateway.server_time";

/** Shape rules of a SubscribeEvents request; throws an `invalid_argument` GatewayError. */
export function checkSubscribeEventsShape(request: SubscribeEventsInput): void {
  checkCommonShape(request);
  if (request.lastEventId !== "" && !isStreamId(request.lastEventId)) {
    throw invalid("last_event_id must be empty or a stream id such as 1764028801000-0");
  }
}

/**
 * Creates the SubscribeEvents authenticator: shape checks, then §5 from
 * freshness to replay reservation (shared replay namespace with ExecuteCommand).
 * Resolves the active session or rejects with a GatewayError.
 *
 * @example
 * const authenticateSubscribe = createSubscribeEventsAuthenticator({ sessions, replay, clock,
 *   maxClockSkewMs: 30_000 });
 * const session = await authenticateSubscribe(request);
 */
export function createSubscribeEventsAuthenticator(
  deps: AuthenticateDeps,
): (request: SubscribeEventsInput) => Promise<DeviceSession> {
  return async function authenticateSubscribeEvents(request) {
    checkSubscribeEventsShape(request);
    return authenticate(deps, {
      deviceSessionId: request.deviceSessionId,
      requestId: request.requestId,
      timestampMs: request.timestampMs,
      signature: request.signature,
      signedBytes: () => subscribeEventsSignedBytes(request),
    });
  };
}

/** Signs one pushed event with the gateway key (§4); call it once per event, not per stream. */
export function signEvent(signer: ResponseSigner, fields: EventFields): SignedEvent {
  const payload = Buffer.from(fields.payload);
  const signature = signer.sign(
    eventSignedBytes(
      {
        keyId: signer.keyId,
        eventId: fields.eventId,
        eventType: fields.eventType,
        requestId: fields.requestId,
        timestampMs: fields.timestampMs,
        payload,
      },
      signer.sha256Into,
    ),
  );
  return Object.freeze({
    eventId: fields.eventId,
    eventType: fields.eventType,
    timestampMs: fields.timestampMs,
    payload,
    requestId: fields.requestId,
    keyId: signer.keyId,
    signature,
  });
}

/**
 * The signed `gateway.server_time` event every stream starts with (§7):
 * `event_id` is the node's client-events cursor, `request_id` the subscribe
 * request's, the payload empty.
 */
export function bootstrapEvent(
  signer: ResponseSigner,
  fields: { readonly cursor: string; readonly requestId: string; readonly timestampMs: number },
): SignedEvent {
  return signEvent(signer, {
    eventId: fields.cursor,
    eventType: SERVER_TIME_EVENT_TYPE,
    requestId: fields.requestId,
    timestampMs: fields.timestampMs,
    payload: new Uint8Array(),
  });
}

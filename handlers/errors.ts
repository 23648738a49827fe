/**
 * The one error type of the gateway, the one table that maps each error code
 * to a gRPC status and an HTTP status with its envelope code, and the
 * outcomes whose message is fixed. Every transport answers through here.
 */

/** The closed set of error codes a handler may raise. */
export type GatewayErrorCode =
  | "invalid_argument"
  | "unauthenticated"
  | "not_found"
  | "method_not_allowed"
  | "already_exists"
  | "failed_precondition"
  | "resource_exhausted"
  | "unimplemented"
  | "unavailable"
  | "deadline_exceeded"
  | "unsupported_media_type"
  | "payload_too_large"
  | "upstream_timeout"
  | "internal";

/** gRPC status codes, numerically equal to `@grpc/grpc-js` `status`. */
export const GrpcCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

/** A gRPC status name such as `UNAUTHENTICATED`. */
export type GrpcCodeName = keyof typeof GrpcCode;

/** How one error code is answered on each transport. */
export interface ErrorMapping {
  /** gRPC status name. */
  readonly grpc: GrpcCodeName;
  /** HTTP status. */
  readonly http: number;
  /** `error.code` of the HTTP envelope. */
  readonly envelope: string;
}

/**
 * A timeout of whatever the gateway waited on: the call's deadline, a
 * downstream route or the auth upstream. One outcome on every transport.
 */
const TIMED_OUT: ErrorMapping = {
  grpc: "DEADLINE_EXCEEDED",
  http: 504,
  envelope: "upstream_timeout",
};

/** The only place an error code is mapped to transport statuses. */
export const ERROR_TABLE: Readonly<Record<GatewayErrorCode, ErrorMapping>> = {
  invalid_argument: { grpc: "INVALID_ARGUMENT", http: 400, envelope: "invalid_request" },
  unauthenticated: { grpc: "UNAUTHENTICATED", http: 401, envelope: "unauthenticated" },
  not_found: { grpc: "NOT_FOUND", http: 404, envelope: "not_found" },
  method_not_allowed: { grpc: "UNIMPLEMENTED", http: 405, envelope: "method_not_allowed" },
  already_exists: { grpc: "ALREADY_EXISTS", http: 409, envelope: "already_exists" },
  failed_precondition: {
    grpc: "FAILED_PRECONDITION",
    http: 412,
    envelope: "failed_precondition",
  },
  resource_exhausted: { grpc: "RESOURCE_EXHAUSTED", http: 429, envelope: "resource_exhausted" },
  unimplemented: { grpc: "UNIMPLEMENTED", http: 501, envelope: "not_implemented" },
  unavailable: { grpc: "UNAVAILABLE", http: 503, envelope: "service_unavailable" },
  deadline_exceeded: TIMED_OUT,
  unsupported_media_type: {
    grpc: "INVALID_ARGUMENT",
    http: 415,
    envelope: "unsupported_media_type",
  },
  payload_too_large: { grpc: "RESOURCE_EXHAUSTED", http: 413, envelope: "payload_too_large" },
  // One outcome with `deadline_exceeded` (the same row); the name stays in the
  // closed set because the auth upstream adapter and route modules raise it.
  upstream_timeout: TIMED_OUT,
  internal: { grpc: "INTERNAL", http: 500, envelope: "internal_error" },
};

/** An outcome a client is told about: its error code (statuses from {@link ERROR_TABLE}) and message. */
export interface Outcome {
  readonly code: GatewayErrorCode;
  readonly message: string;
}

/**
 * The outcomes with a fixed message that several parts of the gateway answer
 * with: authentication (contract §5), the push streams' terminal statuses and
 * caps (§7) and shutdown (§10). Clients may match these messages: they never
 * change.
 */
export const OUTCOMES = {
  staleTimestamp: {
    code: "unauthenticated",
    message: "request timestamp outside allowed clock skew",
  },
  unknownSession: { code: "unauthenticated", message: "device session not found" },
  badSignature: { code: "unauthenticated", message: "invalid request signature" },
  sessionRevoked: { code: "failed_precondition", message: "device session is revoked" },
  requestReplayed: { code: "already_exists", message: "request_id already used" },
  sessionStoreUnavailable: { code: "unavailable", message: "session store unavailable" },
  replayStoreUnavailable: { code: "unavailable", message: "replay store unavailable" },
  streamOverflowed: { code: "resource_exhausted", message: "push stream overflowed" },
  shuttingDown: { code: "unavailable", message: "gateway is shutting down" },
  sessionChanged: { code: "unavailable", message: "device session changed; reconnect" },
  recheckFailed: {
    code: "unavailable",
    message: "device session could not be re-checked; reconnect",
  },
  deliveryUnavailable: {
    code: "unavailable",
    message: "push delivery unavailable; reconnect",
  },
  streamInterrupted: {
    code: "unavailable",
    message: "push stream interrupted: events may have been lost; reconnect to resume",
  },
  tooManyStreamsForSession: {
    code: "resource_exhausted",
    message: "too many streams for this device session",
  },
  streamCapacityReached: { code: "resource_exhausted", message: "gateway stream capacity reached" },
} as const satisfies Record<string, Outcome>;

/**
 * The terminal outcome of a push stream the gateway ends, by the `reason`
 * label `gateway_push_stream_closes_total` counts it under.
 */
export const STREAM_END_OUTCOMES = {
  revoked: OUTCOMES.sessionRevoked,
  overflow: OUTCOMES.streamOverflowed,
  shutdown: OUTCOMES.shuttingDown,
  session_changed: OUTCOMES.sessionChanged,
  recheck_failed: OUTCOMES.recheckFailed,
  interrupted: OUTCOMES.streamInterrupted,
} as const satisfies Record<string, Outcome>;

/** Why the gateway ended a push stream; a `reason` of `gateway_push_stream_closes_total`. */
export type StreamEndReason = keyof typeof STREAM_END_OUTCOMES;

/** The gRPC status code and message a client gets for an outcome. */
export interface GrpcAnswer {
  /** Numerically a `@grpc/grpc-js` / nice-grpc `Status`. */
  readonly code: (typeof GrpcCode)[GrpcCodeName];
  readonly message: string;
}

/** How `outcome` (a GatewayError, or an entry of {@link OUTCOMES}) is answered over gRPC. */
export function grpcAnswerOf(outcome: Outcome): GrpcAnswer {
  return { code: GrpcCode[ERROR_TABLE[outcome.code].grpc], message: outcome.message };
}

/** The HTTP status and error envelope a client gets for an error. */
export interface HttpAnswer {
  readonly status: number;
  /** The body: `{"error":{"code","message"}}`. */
  readonly envelope: { readonly error: { readonly code: string; readonly message: string } };
}

/**
 * How `error` is answered over HTTP: the table's status and envelope code, or
 * the ones an upstream answered with when the error relays them (a relayed
 * status outside 400–599 is ignored).
 */
export function httpAnswerOf(error: GatewayError): HttpAnswer {
  const mapping = ERROR_TABLE[error.code];
  const relayed = error.details?.httpStatus;
  const status =
    relayed !== undefined && Number.isInteger(relayed) && relayed >= 400 && relayed <= 599
      ? relayed
      : mapping.http;
  const code = error.details?.envelopeCode ?? mapping.envelope;
  return { status, envelope: { error: { code, message: error.message } } };
}

const CODE_BY_HTTP_STATUS: ReadonlyMap<number, GatewayErrorCode> = (() => {
  const codes = new Map<number, GatewayErrorCode>();
  for (const [code, mapping] of Object.entries(ERROR_TABLE) as [GatewayErrorCode, ErrorMapping][]) {
    if (!codes.has(mapping.http)) codes.set(mapping.http, code);
  }
  return codes;
})();

/**
 * The error code answered with an HTTP status, read from the table backwards
 * (an upstream's 4xx relayed as an error); `undefined` for a status the table
 * does not answer with. 504 reads as `deadline_exceeded`.
 */
export function codeOfHttpStatus(status: number): GatewayErrorCode | undefined {
  return CODE_BY_HTTP_STATUS.get(status);
}

/** The message every unexpected failure is answered with; internals never reach a client. */
export const INTERNAL_MESSAGE = "internal error";

/** Why an authentication step failed; the `reason` label of `gateway_auth_failures_total`. */
export type AuthFailureReason =
  | "invalid_argument"
  | "stale_timestamp"
  | "unknown_session"
  | "bad_signature"
  | "revoked"
  | "replayed"
  | "redis_unavailable";

/** Optional client-safe detail carried by a GatewayError. */
export interface GatewayErrorDetails {
  /** An upstream's HTTP status to relay instead of the table's. */
  readonly httpStatus?: number;
  /** An upstream's envelope code to relay instead of the table's. */
  readonly envelopeCode?: string;
  /** Set when an authentication step failed. */
  readonly authFailure?: AuthFailureReason;
}

const BRAND = Symbol.for("edge-gateway.GatewayError");

/** An expected failure with a code from the closed set and a client-safe message. */
export class GatewayError extends Error {
  readonly [BRAND] = true;
  override readonly name = "GatewayError";
  /**
   * @param code one of the closed set of codes
   * @param message client-visible text
   * @param details optional client-safe fields (an upstream's envelope, say)
   */
  constructor(
    readonly code: GatewayErrorCode,
    message: string,
    readonly details?: GatewayErrorDetails,
  ) {
    super(message);
  }
}

/** True for a GatewayError from any copy of this module (checks the brand, not `instanceof`). */
export function isGatewayError(error: unknown): error is GatewayError {
  return (
    typeof error === "object" && error !== null && (error as { [BRAND]?: boolean })[BRAND] === true
  );
}

/**
 * Turns anything thrown into a GatewayError: a GatewayError passes through,
 * anything else becomes `internal` with the generic message.
 */
export function toGatewayError(error: unknown): GatewayError {
  return isGatewayError(error) ? error : new GatewayError("internal", INTERNAL_MESSAGE);
}

/** A GatewayError answering with `outcome`'s code and message. */
export function outcomeError(outcome: Outcome, details?: GatewayErrorDetails): GatewayError {
  return new GatewayError(outcome.code, outcome.message, details);
}

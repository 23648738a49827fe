/**
 * The one error type of the gateway and the one table that maps each error code
 * to a gRPC status and an HTTP status with its envelope code.
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
  deadline_exceeded: { grpc: "DEADLINE_EXCEEDED", http: 504, envelope: "upstream_timeout" },
  unsupported_media_type: {
    grpc: "INVALID_ARGUMENT",
    http: 415,
    envelope: "unsupported_media_type",
  },
  payload_too_large: { grpc: "RESOURCE_EXHAUSTED", http: 413, envelope: "payload_too_large" },
  upstream_timeout: { grpc: "DEADLINE_EXCEEDED", http: 504, envelope: "upstream_timeout" },
  internal: { grpc: "INTERNAL", http: 500, envelope: "internal_error" },
};

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

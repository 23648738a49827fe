/**
 * The gRPC status name of a failed call or stream, as the contract's tables
 * spell it (`FAILED_PRECONDITION`, `UNAVAILABLE`, …), for display and logs.
 */

/** gRPC status names by number; Connect's error codes use the same numbers. */
const STATUS_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

/**
 * The status name of `error` (a `ConnectError`, or anything with a numeric
 * gRPC `code`); `UNKNOWN` for anything else.
 */
export function statusNameOf(error: unknown): string {
  if (typeof error !== "object" || error === null || !("code" in error)) return "UNKNOWN";
  const { code } = error;
  return typeof code === "number" ? (STATUS_NAMES[code] ?? "UNKNOWN") : "UNKNOWN";
}

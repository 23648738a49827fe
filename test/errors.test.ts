/**
 * The one table from gateway outcome to transport answers: the fixed messages
 * clients may match (contract §5, §7, §10), the HTTP answers and the reverse
 * map the auth upstream adapter relays an upstream status through.
 */
import { describe, expect, it } from "vitest";
import {
  codeOfHttpStatus,
  ERROR_TABLE,
  GatewayError,
  type GatewayErrorCode,
  GrpcCode,
  grpcAnswerOf,
  httpAnswerOf,
  OUTCOMES,
  STREAM_END_OUTCOMES,
} from "../handlers/errors.js";

describe("OUTCOMES", () => {
  // Byte for byte what the contract promises clients.
  it.each([
    ["staleTimestamp", "UNAUTHENTICATED", "request timestamp outside allowed clock skew"],
    ["unknownSession", "UNAUTHENTICATED", "device session not found"],
    ["badSignature", "UNAUTHENTICATED", "invalid request signature"],
    ["sessionRevoked", "FAILED_PRECONDITION", "device session is revoked"],
    ["requestReplayed", "ALREADY_EXISTS", "request_id already used"],
    ["sessionStoreUnavailable", "UNAVAILABLE", "session store unavailable"],
    ["replayStoreUnavailable", "UNAVAILABLE", "replay store unavailable"],
    ["streamOverflowed", "RESOURCE_EXHAUSTED", "push stream overflowed"],
    ["shuttingDown", "UNAVAILABLE", "gateway is shutting down"],
    ["sessionChanged", "UNAVAILABLE", "device session changed; reconnect"],
    ["recheckFailed", "UNAVAILABLE", "device session could not be re-checked; reconnect"],
    ["tooManyStreamsForSession", "RESOURCE_EXHAUSTED", "too many streams for this device session"],
    ["streamCapacityReached", "RESOURCE_EXHAUSTED", "gateway stream capacity reached"],
  ] as const)("answers %s over gRPC as %s, %j", (name, status, message) => {
    expect(grpcAnswerOf(OUTCOMES[name])).toEqual({ code: GrpcCode[status], message });
  });

  it("ends push streams with the §7 terminal statuses, by close reason", () => {
    const answers = Object.fromEntries(
      Object.entries(STREAM_END_OUTCOMES).map(([reason, outcome]) => [
        reason,
        grpcAnswerOf(outcome),
      ]),
    );
    expect(answers).toEqual({
      revoked: { code: GrpcCode.FAILED_PRECONDITION, message: "device session is revoked" },
      overflow: { code: GrpcCode.RESOURCE_EXHAUSTED, message: "push stream overflowed" },
      shutdown: { code: GrpcCode.UNAVAILABLE, message: "gateway is shutting down" },
      session_changed: { code: GrpcCode.UNAVAILABLE, message: "device session changed; reconnect" },
      recheck_failed: {
        code: GrpcCode.UNAVAILABLE,
        message: "device session could not be re-checked; reconnect",
      },
      interrupted: {
        code: GrpcCode.UNAVAILABLE,
        message: "push stream interrupted: events may have been lost; reconnect to resume",
      },
    });
  });
});

describe("ERROR_TABLE", () => {
  it("has one row for a timeout, whichever code names it", () => {
    const rows = new Set(Object.values(ERROR_TABLE).filter((row) => row.http === 504));
    expect(rows.size).toBe(1);
    expect(ERROR_TABLE.upstream_timeout).toBe(ERROR_TABLE.deadline_exceeded);
    expect(ERROR_TABLE.deadline_exceeded).toEqual({
      grpc: "DEADLINE_EXCEEDED",
      http: 504,
      envelope: "upstream_timeout",
    });
  });
});

describe("httpAnswerOf", () => {
  it("answers with the table's status and envelope code and the error's message", () => {
    expect(httpAnswerOf(new GatewayError("payload_too_large", "too big"))).toEqual({
      status: 413,
      envelope: { error: { code: "payload_too_large", message: "too big" } },
    });
  });

  it("relays an upstream's 4xx status and envelope code", () => {
    const relayed = new GatewayError("failed_precondition", "code expired", {
      httpStatus: 410,
      envelopeCode: "challenge_expired",
    });
    expect(httpAnswerOf(relayed)).toEqual({
      status: 410,
      envelope: { error: { code: "challenge_expired", message: "code expired" } },
    });
  });

  it("ignores a relayed status outside 400–599", () => {
    const error = new GatewayError("unavailable", "down", { httpStatus: 200 });
    expect(httpAnswerOf(error).status).toBe(503);
  });
});

describe("codeOfHttpStatus", () => {
  it("reads every status the table answers with back to a code answered with it", () => {
    for (const row of Object.values(ERROR_TABLE)) {
      const code = codeOfHttpStatus(row.http) as GatewayErrorCode;
      expect(ERROR_TABLE[code].http, String(row.http)).toBe(row.http);
    }
  });

  it("reads the upstream 4xx statuses the adapter relays as their codes", () => {
    expect(
      [400, 401, 404, 405, 409, 412, 413, 415, 429].map((status) => codeOfHttpStatus(status)),
    ).toEqual([
      "invalid_argument",
      "unauthenticated",
      "not_found",
      "method_not_allowed",
      "already_exists",
      "failed_precondition",
      "payload_too_large",
      "unsupported_media_type",
      "resource_exhausted",
    ]);
    expect(codeOfHttpStatus(504)).toBe("deadline_exceeded");
  });

  it("knows no code for a status the table never answers with", () => {
    expect(codeOfHttpStatus(410)).toBeUndefined();
    expect(codeOfHttpStatus(418)).toBeUndefined();
  });
});

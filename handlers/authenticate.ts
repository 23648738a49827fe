/**
 * The authentication pipeline every gRPC call runs (contract §5), in order:
 * freshness, session lookup, signature, session status, replay reservation.
 * Shape checks come first and live with each method's handler.
 */
import { nodeEd25519 } from "./ed25519.js";
import {
  type AuthFailureReason,
  GatewayError,
  OUTCOMES,
  type Outcome,
  outcomeError,
} from "./errors.js";
import type {
  Clock,
  DeviceSession,
  ReplayStore,
  SessionStore,
  SignatureVerifier,
} from "./ports.js";

/** What authentication needs. */
export interface AuthenticateDeps {
  readonly sessions: SessionStore;
  readonly replay: ReplayStore;
  readonly clock: Clock;
  /** Allowed `|now − timestamp_ms|`, in ms. */
  readonly maxClockSkewMs: number;
  /** Verifies request signatures; node:crypto's verifier when absent. */
  readonly verifier?: SignatureVerifier;
}

/** The already shape-checked fields of a signed request. */
export interface SignedRequest {
  readonly deviceSessionId: string;
  readonly requestId: string;
  readonly timestampMs: number;
  readonly signature: Uint8Array;
  /** The request's signed bytes (§4), built only once freshness passed. */
  readonly signedBytes: () => Uint8Array;
}

/** Messages of contract §5, as {@link OUTCOMES} states them. */
export const AuthMessages = {
  stale: OUTCOMES.staleTimestamp.message,
  unknownSession: OUTCOMES.unknownSession.message,
  badSignature: OUTCOMES.badSignature.message,
  revoked: OUTCOMES.sessionRevoked.message,
  replayed: OUTCOMES.requestReplayed.message,
  sessionStoreUnavailable: OUTCOMES.sessionStoreUnavailable.message,
  replayStoreUnavailable: OUTCOMES.replayStoreUnavailable.message,
} as const;

/** A GatewayError for a failed authentication step, labelled with its reason. */
export function authFailure(
  code: ConstructorParameters<typeof GatewayError>[0],
  message: string,
  reason: AuthFailureReason,
): GatewayError {
  return new GatewayError(code, message, { authFailure: reason });
}

/**
 * Runs §5 from freshness to replay reservation and resolves the session.
 * Rejects with a GatewayError labelled by `authFailure`.
 */
export async function authenticate(
  deps: AuthenticateDeps,
  request: SignedRequest,
): Promise<DeviceSession> {
  const skew = Math.abs(deps.clock.now() - request.timestampMs);
  if (!(skew <= deps.maxClockSkewMs)) {
    throw outcomeError(OUTCOMES.staleTimestamp, { authFailure: "stale_timestamp" });
  }

  let session: DeviceSession | undefined;
  try {
    session = await deps.sessions.get(request.deviceSessionId);
  } catch {
    throw unavailable(OUTCOMES.sessionStoreUnavailable);
  }
  if (session === undefined) {
    throw outcomeError(OUTCOMES.unknownSession, { authFailure: "unknown_session" });
  }

  const verifier = deps.verifier ?? nodeEd25519;
  const valid = await verifier.verify(session.publicKey, request.signedBytes(), request.signature);
  if (!valid) {
    throw outcomeError(OUTCOMES.badSignature, { authFailure: "bad_signature" });
  }

  if (session.status !== "active") {
    throw outcomeError(OUTCOMES.sessionRevoked, { authFailure: "revoked" });
  }

  let reserved: boolean;
  try {
    reserved = await deps.replay.reserve(request.deviceSessionId, request.requestId);
  } catch {
    throw unavailable(OUTCOMES.replayStoreUnavailable);
  }
  if (!reserved) {
    throw outcomeError(OUTCOMES.requestReplayed, { authFailure: "replayed" });
  }
  return session;
}

/**
 * A store failure, failing closed as `unavailable` labelled `redis_unavailable`
 * (written out at each step rather than through a wrapper: no closure per call).
 */
function unavailable(outcome: Outcome): GatewayError {
  return outcomeError(outcome, { authFailure: "redis_unavailable" });
}

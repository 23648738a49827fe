/**
 * The one set of in-memory ports (handlers/ports.ts) the tests share: no
 * Redis, no sockets. The replay store and the auth upstream record what they were
 * asked, for assertions. The router is the project's own static router
 * (`createStaticRouter`), already in memory; loggers are in ./logger.ts.
 */
import { createPrivateKey, sign } from "node:crypto";
import { importRawPublicKey, keyIdOf, rawPublicKeyOf } from "../../handlers/ed25519.js";
import type {
  AuthUpstream,
  Clock,
  DeviceSession,
  ReplayStore,
  ResponseSigner,
  SessionStore,
} from "../../handlers/ports.js";
import { vectors } from "./keys.js";

/** The signing vectors' gateway private key. */
export const gatewayPrivateKey = createPrivateKey(vectors.gateway_key.private_key_pkcs8_pem);

/** The ResponseSigner the runtime builds from the vectors' gateway key. */
export const vectorSigner: ResponseSigner = {
  keyId: keyIdOf(rawPublicKeyOf(gatewayPrivateKey)),
  publicKey: rawPublicKeyOf(gatewayPrivateKey),
  sign: (data) => sign(null, data, gatewayPrivateKey),
};

/** The signing vectors' device key: the private key signs requests, sessions hold the public one. */
export const vectorDevice = {
  privateKey: createPrivateKey(vectors.device_key.private_key_pkcs8_pem),
  publicKey: (() => {
    const parsed = importRawPublicKey(
      Buffer.from(vectors.device_key.public_key_base64url, "base64url"),
    );
    if (!parsed.ok) throw new Error("the vectors' device key must import");
    return parsed.key;
  })(),
};

/** A SessionStore over a map the test fills and changes. */
export interface MemorySessionStore extends SessionStore {
  /** The sessions it answers with, by device session id. */
  readonly sessions: Map<string, DeviceSession>;
}

/** A session store holding `sessions`. */
export function createMemorySessionStore(
  sessions: Iterable<DeviceSession> = [],
): MemorySessionStore {
  const map = new Map<string, DeviceSession>();
  for (const session of sessions) map.set(session.deviceSessionId, session);
  return { sessions: map, get: async (deviceSessionId) => map.get(deviceSessionId) };
}

/** A ReplayStore that takes each request id once per session, as Redis `SET NX` does. */
export interface MemoryReplayStore extends ReplayStore {
  /** Every reservation asked for, taken or not, as `device_session_id/request_id`. */
  readonly reservations: string[];
}

/** An empty replay store. */
export function createMemoryReplayStore(): MemoryReplayStore {
  const reservations: string[] = [];
  const taken = new Set<string>();
  return {
    reservations,
    async reserve(deviceSessionId, requestId) {
      const key = `${deviceSessionId}/${requestId}`;
      reservations.push(key);
      if (taken.has(key)) return false;
      taken.add(key);
      return true;
    },
  };
}

/** A Clock that stands still until the test moves it. */
export interface ManualClock extends Clock {
  /** Moves the clock forward by `ms`. */
  advance(ms: number): void;
}

/** A clock reading `startMs` until advanced. */
export function createManualClock(startMs: number): ManualClock {
  let now = startMs;
  return {
    now: () => now,
    advance: (ms) => {
      now += ms;
    },
  };
}

/** The wall clock. */
export const systemClock: Clock = { now: () => Date.now() };

/** One call an in-memory AuthUpstream received. */
export interface AuthUpstreamCall {
  readonly route: "send" | "confirm";
  readonly body: unknown;
  readonly signal: AbortSignal;
}

/**
 * What the in-memory AuthUpstream answers instead of its defaults; an answer
 * may be anything, to test how the handlers check what an upstream returns.
 */
export interface AuthUpstreamAnswers {
  /** Answers send-email-code; `{ challenge_id: "ch_01J9Z" }` by default. */
  readonly sendEmailCode?: (
    body: { email: string },
    ctx: { signal: AbortSignal },
  ) => Promise<unknown>;
  /** Answers confirm-email-code; `{ device_session_id: "ds-1", user_id: "user-1" }` by default. */
  readonly confirmEmailCode?: (
    body: { challenge_id: string; code: string; client_public_key: string },
    ctx: { signal: AbortSignal },
  ) => Promise<unknown>;
}

/** An AuthUpstream that records each call and answers as told. */
export function createMemoryAuthUpstream(answers: AuthUpstreamAnswers = {}): {
  readonly upstream: AuthUpstream;
  readonly calls: AuthUpstreamCall[];
} {
  const calls: AuthUpstreamCall[] = [];
  const upstream: AuthUpstream = {
    async sendEmailCode(body, ctx) {
      calls.push({ route: "send", body, signal: ctx.signal });
      const answer = answers.sendEmailCode
        ? await answers.sendEmailCode(body, ctx)
        : { challenge_id: "ch_01J9Z" };
      return answer as { challenge_id: string };
    },
    async confirmEmailCode(body, ctx) {
      calls.push({ route: "confirm", body, signal: ctx.signal });
      const answer = answers.confirmEmailCode
        ? await answers.confirmEmailCode(body, ctx)
        : { device_session_id: "ds-1", user_id: "user-1" };
      return answer as { device_session_id: string; user_id: string };
    },
  };
  return { upstream, calls };
}

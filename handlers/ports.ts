/**
 * Ports: the dependencies handlers are given. Each is a plain interface named
 * for its role; the runtime passes Redis-backed session and replay stores, a
 * signer over the gateway's key, a router over the configured routes and, by
 * default, an HTTP auth upstream; tests pass in-memory ones.
 */
import type { KeyObject } from "node:crypto";
import type { Sha256Into } from "./signing.js";

/** A device session as the gateway sees it. */
export interface DeviceSession {
  /** The device session id. */
  readonly deviceSessionId: string;
  /** The user the session belongs to. */
  readonly userId: string;
  /** The session's Ed25519 public key, imported once and reused. */
  readonly publicKey: KeyObject;
  /** `active` or `revoked`. */
  readonly status: "active" | "revoked";
}

/** Looks device sessions up. */
export interface SessionStore {
  /**
   * The session, or `undefined` when none exists or its record is incomplete
   * or invalid. Rejects (or throws) when the backing store cannot answer; the
   * handlers turn any such failure into `unavailable`, failing closed.
   */
  get(deviceSessionId: string): Promise<DeviceSession | undefined>;
}

/** Reserves request ids against replay. */
export interface ReplayStore {
  /**
   * Reserves `requestId` for `deviceSessionId`, in one namespace per session
   * that ExecuteCommand and SubscribeEvents share; resolves `true` when this
   * call took it and `false` when it was already taken. A reservation lasts at
   * least as long as a request with that id could still pass the clock-skew check.
   * Rejects when the store cannot answer; the handlers turn that into
   * `unavailable` and never fall back to a local check.
   */
  reserve(deviceSessionId: string, requestId: string): Promise<boolean>;
}

/**
 * Verifies device signatures. The runtime may supply a faster implementation
 * than node:crypto's; handlers use node:crypto's when none is given.
 */
export interface SignatureVerifier {
  /**
   * True only when `signature` is a valid 64-byte Ed25519 signature of `data`
   * under `publicKey`; false (never a throw) for anything malformed.
   */
  verify(publicKey: KeyObject, data: Uint8Array, signature: Uint8Array): boolean | Promise<boolean>;
}

/** Signs with the gateway's Ed25519 key. */
export interface ResponseSigner {
  /** First 16 lowercase hex chars of SHA-256 of the raw public key. */
  readonly keyId: string;
  /** The raw 32-byte public key. */
  readonly publicKey: Buffer;
  /** A 64-byte Ed25519 signature of `data`. */
  sign(data: Uint8Array): Buffer;
  /**
   * SHA-256 into a buffer from the signer's crypto library, if it has one:
   * the handlers hash payloads for signed bytes with it (request and
   * response alike) instead of node:crypto's, which allocates per hash.
   */
  readonly sha256Into?: Sha256Into;
}

/** Wall clock in Unix milliseconds. */
export interface Clock {
  /** Now, in Unix milliseconds. */
  now(): number;
}

/** Structured logger; consola's shape, so consola instances fit. */
export interface Logger {
  /** Detail for debugging. */
  debug(message: string, ...args: unknown[]): void;
  /** Normal operation. */
  info(message: string, ...args: unknown[]): void;
  /** Something was dropped or degraded. */
  warn(message: string, ...args: unknown[]): void;
  /** Something failed. */
  error(message: string, ...args: unknown[]): void;
}

/** A command as a downstream route receives it, after authentication. */
export interface Command {
  /** The session's user. */
  readonly userId: string;
  /** The authenticated device session. */
  readonly deviceSessionId: string;
  /** The route key. */
  readonly messageType: string;
  /** The request id (unique per session). */
  readonly requestId: string;
  /** Opaque payload from the device. */
  readonly payload: Uint8Array;
}

/** What a route is given besides the command. */
export interface RouteContext {
  /**
   * Aborts when the call ends early: the client cancels or goes away, its
   * deadline passes, or shutdown forces the gRPC server down after its budget
   * (a graceful stop lets the call finish).
   */
  readonly signal: AbortSignal;
  /** Absolute deadline in Unix ms, or `undefined` when the client set none. */
  readonly deadline: number | undefined;
  /** The gateway's logger. */
  readonly logger: Logger;
  /** W3C trace context headers of the call (`traceparent`, `tracestate`), when present. */
  readonly traceHeaders?: Readonly<Record<string, string>>;
}

/** A route's answer; the gateway signs it. */
export interface RouteResult {
  /** Result code for the device (`ok`, `not_found`, …). */
  readonly resultCode: string;
  /** Result payload; empty when absent. */
  readonly payload?: Uint8Array;
}

/** A downstream handler for one message type. */
export type RouteHandler = (command: Command, ctx: RouteContext) => Promise<RouteResult>;

/** Maps message types to downstream handlers. */
export type Routes = Readonly<Record<string, RouteHandler>>;

/** Finds the handler of a message type. */
export interface Router {
  /** The handler, or `undefined` when no route exists. */
  resolve(messageType: string): RouteHandler | undefined;
}

/** The auth/session service behind the public auth routes. */
export interface AuthUpstream {
  /** Starts an email challenge; resolves the upstream's `{challenge_id}`. */
  sendEmailCode(
    body: { email: string },
    ctx: { signal: AbortSignal },
  ): Promise<{ challenge_id: string }>;
  /** Confirms a challenge and creates a device session. */
  confirmEmailCode(
    body: { challenge_id: string; code: string; client_public_key: string },
    ctx: { signal: AbortSignal },
  ): Promise<{ device_session_id: string; user_id: string }>;
}

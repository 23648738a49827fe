/**
 * ExecuteCommand: shape checks, the §5 authentication pipeline, routing by
 * `message_type`, and the signed response.
 */
import { type AuthenticateDeps, authenticate, authFailure } from "./authenticate.js";
import { GatewayError, INTERNAL_MESSAGE, isGatewayError } from "./errors.js";
import { isIdentifier, isTypeName } from "./identifiers.js";
import type { ResponseSigner, RouteContext, RouteResult, Router } from "./ports.js";
import { executeCommandResponseSignedBytes, executeCommandSignedBytes } from "./signing.js";

/** ExecuteCommand request fields (the generated message type fits). */
export interface ExecuteCommandInput {
  readonly protocolVersion: number;
  readonly deviceSessionId: string;
  readonly messageType: string;
  readonly requestId: string;
  readonly timestampMs: number;
  readonly payload: Uint8Array;
  readonly signature: Uint8Array;
}

/** ExecuteCommand response fields (assignable to the generated message type). */
export interface ExecuteCommandOutput {
  protocolVersion: number;
  requestId: string;
  resultCode: string;
  payload: Buffer;
  timestampMs: number;
  keyId: string;
  signature: Buffer;
}

/** What the ExecuteCommand handler needs. */
export interface ExecuteCommandDeps extends AuthenticateDeps {
  readonly signer: ResponseSigner;
  readonly router: Router;
  /** Largest accepted `payload`, in bytes. */
  readonly maxPayloadBytes: number;
}

/** Per-call context from the transport: what the route is given. */
export type CallContext = RouteContext;

/** The protocol version this gateway speaks. */
export const PROTOCOL_VERSION = 1;

const IDENTIFIER_RULE = "must be 1-128 characters of [A-Za-z0-9._:-]";
const TYPE_RULE = "must be 1-128 characters of [A-Za-z0-9._:/-]";

/** Shape rule shared by every signed request: version, ids and signature length. */
export function checkCommonShape(request: {
  readonly protocolVersion: number;
  readonly deviceSessionId: string;
  readonly requestId: string;
  readonly signature: Uint8Array;
}): void {
  if (request.protocolVersion !== PROTOCOL_VERSION) {
    throw invalid(`protocol_version must be ${PROTOCOL_VERSION}`);
  }
  if (!isIdentifier(request.deviceSessionId)) {
    throw invalid(`device_session_id ${IDENTIFIER_RULE}`);
  }
  if (!isIdentifier(request.requestId)) throw invalid(`request_id ${IDENTIFIER_RULE}`);
  if (request.signature.length !== 64) throw invalid("signature must be 64 bytes");
}

/** An `invalid_argument` error labelled for the auth-failure metric. */
export function invalid(message: string): GatewayError {
  return authFailure("invalid_argument", message, "invalid_argument");
}

/**
 * Creates the ExecuteCommand handler.
 *
 * @example
 * const handle = createExecuteCommandHandler({ sessions, replay, clock, signer, router,
 *   maxClockSkewMs: 30_000, maxPayloadBytes: 262_144 });
 * const response = await handle(request, { signal, deadline: undefined, logger });
 */
export function createExecuteCommandHandler(deps: ExecuteCommandDeps) {
  return async function executeCommand(
    request: ExecuteCommandInput,
    ctx: CallContext,
  ): Promise<ExecuteCommandOutput> {
    checkCommonShape(request);
    if (!isTypeName(request.messageType)) throw invalid(`message_type ${TYPE_RULE}`);
    if (request.payload.length > deps.maxPayloadBytes) {
      throw invalid(`payload exceeds ${deps.maxPayloadBytes} bytes`);
    }

    const session = await authenticate(deps, {
      deviceSessionId: request.deviceSessionId,
      requestId: request.requestId,
      timestampMs: request.timestampMs,
      signature: request.signature,
      signedBytes: () => executeCommandSignedBytes(request, deps.signer.sha256Into),
    });

    const route = deps.router.resolve(request.messageType);
    if (route === undefined) {
      throw new GatewayError("unimplemented", `no route for message_type ${request.messageType}`);
    }

    const result = await callRoute(ctx, () =>
      route(
        {
          userId: session.userId,
          deviceSessionId: session.deviceSessionId,
          messageType: request.messageType,
          requestId: request.requestId,
          payload: request.payload,
        },
        ctx,
      ),
    );

    const payload = asBuffer(result.payload);
    const timestampMs = deps.clock.now();
    const signature = deps.signer.sign(
      executeCommandResponseSignedBytes(
        {
          keyId: deps.signer.keyId,
          deviceSessionId: request.deviceSessionId,
          requestId: request.requestId,
          resultCode: result.resultCode,
          timestampMs,
          payload,
        },
        deps.signer.sha256Into,
      ),
    );
    return {
      protocolVersion: PROTOCOL_VERSION,
      requestId: request.requestId,
      resultCode: result.resultCode,
      payload,
      timestampMs,
      keyId: deps.signer.keyId,
      signature,
    };
  };
}

const EMPTY = Buffer.alloc(0);

/** The payload as a Buffer over the same bytes (no copy); empty when absent. */
function asBuffer(payload: Uint8Array | undefined): Buffer {
  if (payload === undefined) return EMPTY;
  return Buffer.isBuffer(payload)
    ? payload
    : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
}

/**
 * Calls a route under the call's signal and deadline and maps its failure
 * through the error table: a GatewayError passes, a passed deadline is
 * `deadline_exceeded`, anything else `internal` (logged, never shown).
 */
async function callRoute(ctx: CallContext, call: () => Promise<RouteResult>): Promise<RouteResult> {
  let result: RouteResult;
  try {
    result = await call();
  } catch (error) {
    if (isGatewayError(error)) throw error;
    if (ctx.deadline !== undefined && Date.now() >= ctx.deadline) {
      throw new GatewayError("deadline_exceeded", "downstream deadline exceeded");
    }
    ctx.logger.error("route failed", error);
    throw new GatewayError("internal", INTERNAL_MESSAGE);
  }
  if (
    typeof result !== "object" ||
    result === null ||
    typeof result.resultCode !== "string" ||
    (result.payload !== undefined && !(result.payload instanceof Uint8Array))
  ) {
    ctx.logger.error("route returned an invalid result");
    throw new GatewayError("internal", INTERNAL_MESSAGE);
  }
  return result;
}

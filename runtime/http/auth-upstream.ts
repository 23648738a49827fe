/**
 * The HTTP auth upstream adapter: the `AuthUpstream` port over plain JSON
 * HTTP calls to the auth/session service.
 */
import { z } from "zod";
import { codeOfHttpStatus, GatewayError } from "../../handlers/errors.js";
import type { AuthUpstream, Logger } from "../../handlers/ports.js";
import { CONFIRM_EMAIL_CODE_PATH, SEND_EMAIL_CODE_PATH } from "../../handlers/public-auth.js";
import { BodyTooLargeError, readBoundedBody } from "./bounded-body.js";

/** Options of {@link createHttpAuthUpstream}. */
export interface HttpAuthUpstreamOptions {
  /** Base URL of the auth service (`GATEWAY_AUTH_UPSTREAM_URL`); a trailing `/` is ignored. */
  readonly baseUrl: string;
  /** Budget of one call, from sending the request to reading the whole answer; default 5000. */
  readonly timeoutMs?: number;
  /** The fetch implementation; default the global `fetch`. */
  readonly fetch?: typeof globalThis.fetch;
  /** Where transport failures and unexpected answers are reported (with their cause). */
  readonly logger?: Logger;
}

/** The longest upstream answer read, in bytes; a longer one counts as invalid. */
export const MAX_UPSTREAM_RESPONSE_BYTES = 64 * 1024;

const DEFAULT_TIMEOUT_MS = 5000;

/** An upstream error envelope worth relaying: a snake_case code and a bounded message. */
const upstreamEnvelope = z.object({
  error: z.object({
    code: z.string().regex(/^[a-z][a-z0-9_]{0,63}$/),
    message: z.string().min(1).max(1024),
  }),
});

const challengeAnswer = z.object({ challenge_id: z.string() });
const sessionAnswer = z.object({ device_session_id: z.string(), user_id: z.string() });

/** Envelope code relayed for a 4xx the table does not know that came without a valid envelope. */
const GENERIC_REJECTION_CODE = "request_rejected";

const UNAVAILABLE_MESSAGE = "auth upstream unavailable";
const INVALID_ANSWER_MESSAGE = "auth upstream returned an invalid response";

/**
 * Creates the `AuthUpstream` port over HTTP. Each call POSTs its body as JSON
 * to `${baseUrl}/api/v1/public/auth/send-email-code` or
 * `${baseUrl}/api/v1/public/auth/confirm-email-code` (the same paths the
 * gateway serves, below the base URL's own path) and expects a 2xx JSON answer.
 *
 * Failures, as GatewayErrors:
 * - connection refused, DNS failure, reset, any other transport error, a 5xx,
 *   a 1xx/3xx (redirects are not followed), or a 2xx whose body is not the
 *   expected JSON or exceeds 64 KiB → `unavailable` (503 `service_unavailable`);
 *   the upstream's 5xx text is never relayed;
 * - no complete answer within `timeoutMs` → `upstream_timeout` (504);
 * - a 4xx → relayed: its status, and its envelope's `code` and `message` when
 *   the body is `{"error":{"code":"<snake_case>","message":"<text>"}}`;
 *   otherwise a generic message with the error table's envelope code for that
 *   status (`invalid_request` for 400, …) or `request_rejected` for a status
 *   the table does not know;
 * - the caller's signal aborting → `unavailable`, `request cancelled`.
 *
 * @example
 * const authUpstream = createHttpAuthUpstream({ baseUrl: "http://auth.internal:8080" });
 */
export function createHttpAuthUpstream(options: HttpAuthUpstreamOptions): AuthUpstream {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const fetchImpl = options.fetch ?? globalThis.fetch;
  const logger = options.logger;

  async function call<T>(
    path: string,
    body: unknown,
    signal: AbortSignal,
    answer: z.ZodType<T>,
  ): Promise<T> {
    const url = `${baseUrl}${path}`;
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), timeoutMs);
    const combined = AbortSignal.any([signal, timeout.signal]);
    let status: number;
    let text: string | undefined;
    try {
      const response = await fetchImpl(url, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify(body),
        redirect: "manual",
        signal: combined,
      });
      status = response.status;
      if ((status >= 200 && status < 300) || (status >= 400 && status < 500)) {
        const bytes = await readBoundedBody(response, { maxBytes: MAX_UPSTREAM_RESPONSE_BYTES });
        text = bytes.toString("utf8");
      } else {
        await response.body?.cancel().catch(() => {});
      }
    } catch (error) {
      if (timeout.signal.aborted && !signal.aborted) {
        logger?.warn(`auth upstream ${path} timed out after ${timeoutMs} ms`);
        throw new GatewayError("upstream_timeout", "auth upstream timed out");
      }
      if (signal.aborted) throw new GatewayError("unavailable", "request cancelled");
      if (error instanceof BodyTooLargeError) {
        logger?.warn(
          `auth upstream ${path} answered with more than ${MAX_UPSTREAM_RESPONSE_BYTES} bytes`,
        );
        throw new GatewayError("unavailable", INVALID_ANSWER_MESSAGE);
      }
      logger?.warn(`auth upstream ${path} unreachable`, describeCause(error));
      throw new GatewayError("unavailable", UNAVAILABLE_MESSAGE);
    } finally {
      clearTimeout(timer);
    }

    if (status >= 400 && status < 500) throw toRelayedError(status, parseJson(text));
    if (status < 200 || status >= 300) {
      logger?.warn(`auth upstream ${path} answered HTTP ${status}`);
      throw new GatewayError("unavailable", UNAVAILABLE_MESSAGE);
    }
    const parsed = answer.safeParse(parseJson(text));
    if (!parsed.success) {
      logger?.warn(`auth upstream ${path} answered HTTP ${status} with an unexpected body`);
      throw new GatewayError("unavailable", INVALID_ANSWER_MESSAGE);
    }
    return parsed.data;
  }

  return {
    sendEmailCode: (body, ctx) => call(SEND_EMAIL_CODE_PATH, body, ctx.signal, challengeAnswer),
    confirmEmailCode: (body, ctx) => call(CONFIRM_EMAIL_CODE_PATH, body, ctx.signal, sessionAnswer),
  };
}

/** The error relayed for an upstream 4xx. */
function toRelayedError(status: number, body: unknown): GatewayError {
  const known = codeOfHttpStatus(status);
  const code = known ?? "failed_precondition";
  const envelope = upstreamEnvelope.safeParse(body);
  if (envelope.success) {
    return new GatewayError(code, envelope.data.error.message, {
      httpStatus: status,
      envelopeCode: envelope.data.error.code,
    });
  }
  return new GatewayError(code, "auth upstream rejected the request", {
    httpStatus: status,
    ...(known === undefined ? { envelopeCode: GENERIC_REJECTION_CODE } : {}),
  });
}

/** JSON.parse that answers `undefined` for anything that is not JSON. */
function parseJson(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The loggable part of a fetch failure (undici puts the socket error in `cause`). */
function describeCause(error: unknown): { error: string; code?: string } {
  const cause = (error as { cause?: unknown } | undefined)?.cause;
  const source = cause instanceof Error ? cause : error;
  const code = (source as { code?: unknown } | undefined)?.code;
  return {
    error: source instanceof Error ? source.message : String(source),
    ...(typeof code === "string" ? { code } : {}),
  };
}

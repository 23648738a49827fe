/**
 * The public auth routes: validate a device's request, forward it to the auth
 * upstream, and check the upstream's answer before it goes back to the device.
 *
 * Rules (contract §8, §4):
 * - `email`: 3–254 characters, `local@domain`; the local part is a dot-atom of
 *   at most 64 characters, the domain at least two LDH labels of 1–63
 *   characters (IDNs in punycode). Quoted local parts, IP literals and
 *   non-ASCII addresses are refused.
 * - `code`: 1–32 characters of `[A-Za-z0-9-]`.
 * - `challenge_id`: the identifier rule of §3 (1–128 characters of
 *   `[A-Za-z0-9._:-]`), both where a device sends it and where the upstream
 *   issues it, so an id the upstream hands out is always one the gateway
 *   accepts back.
 * - `client_public_key`: base64 or base64url of a raw 32-byte Ed25519 key that
 *   is not one of the low-order encodings; forwarded exactly as sent.
 * - Unknown request fields are ignored and not forwarded.
 *
 * The upstream's `challenge_id`, `device_session_id` and `user_id` must follow
 * the identifier rule; any other answer is `unavailable` (never relayed raw).
 */
import { z } from "zod";
import { parseDevicePublicKey } from "./ed25519.js";
import { GatewayError } from "./errors.js";
import { isIdentifier } from "./identifiers.js";
import type { AuthUpstream, Logger } from "./ports.js";

/** Path of the route that starts an email challenge (also the upstream's path). */
export const SEND_EMAIL_CODE_PATH = "/api/v1/public/auth/send-email-code";

/** Path of the route that confirms a challenge (also the upstream's path). */
export const CONFIRM_EMAIL_CODE_PATH = "/api/v1/public/auth/confirm-email-code";

/** What the public auth handlers need. */
export interface PublicAuthDeps {
  /** The auth/session service the requests are forwarded to. */
  readonly authUpstream: AuthUpstream;
  /** Where invalid upstream answers are reported. */
  readonly logger: Logger;
}

/** Per-request context from the transport. */
export interface PublicAuthContext {
  /** Aborts when the client goes away; passed on to the upstream. */
  readonly signal: AbortSignal;
}

/** The `send-email-code` answer. */
export interface SendEmailCodeResult {
  readonly challenge_id: string;
}

/** The `confirm-email-code` answer. */
export interface ConfirmEmailCodeResult {
  readonly device_session_id: string;
  readonly user_id: string;
}

const EMAIL_LOCAL_PART = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;
const DOMAIN_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const VERIFICATION_CODE = /^[A-Za-z0-9-]{1,32}$/;

/** True for an address that meets the `email` rule above. */
export function isEmailAddress(value: string): boolean {
  if (value.length > 254) return false;
  const at = value.lastIndexOf("@");
  if (at < 1) return false;
  const local = value.slice(0, at);
  const labels = value.slice(at + 1).split(".");
  return (
    local.length <= 64 &&
    EMAIL_LOCAL_PART.test(local) &&
    labels.length >= 2 &&
    labels.every((label) => DOMAIN_LABEL.test(label)) &&
    !/^\d+$/.test(labels[labels.length - 1]!)
  );
}

const KEY_PROBLEM_MESSAGES = {
  encoding: "client_public_key must be base64 or base64url of a raw 32-byte Ed25519 public key",
  length: "client_public_key must be a raw 32-byte Ed25519 public key",
  low_order: "client_public_key is not an acceptable Ed25519 public key",
} as const;

/** A required string field whose errors name the field. */
function requiredString(field: string) {
  return z.string({
    error: (issue) =>
      issue.input === undefined ? `${field} is required` : `${field} must be a string`,
  });
}

const BODY_ERROR = { error: "request body must be a JSON object" };

const sendEmailCodeRequest = z.object(
  {
    email: requiredString("email").refine(
      isEmailAddress,
      "email must be an email address of at most 254 characters",
    ),
  },
  BODY_ERROR,
);

const confirmEmailCodeRequest = z.object(
  {
    challenge_id: requiredString("challenge_id").refine(
      isIdentifier,
      "challenge_id must be 1-128 characters of [A-Za-z0-9._:-]",
    ),
    code: requiredString("code").regex(
      VERIFICATION_CODE,
      "code must be 1-32 characters of [A-Za-z0-9-]",
    ),
    client_public_key: requiredString("client_public_key").superRefine((text, ctx) => {
      const parsed = parseDevicePublicKey(text);
      if (!parsed.ok)
        ctx.addIssue({ code: "custom", message: KEY_PROBLEM_MESSAGES[parsed.problem] });
    }),
  },
  BODY_ERROR,
);

const upstreamIdentifier = z.string().refine(isIdentifier);
const sendEmailCodeResponse = z.object({ challenge_id: upstreamIdentifier });
const confirmEmailCodeResponse = z.object({
  device_session_id: upstreamIdentifier,
  user_id: upstreamIdentifier,
});

/** Parses `input` with `schema`, or throws `invalid_argument` with the first problem. */
function parseRequest<T>(schema: z.ZodType<T>, input: unknown): T {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const message = result.error.issues[0]?.message ?? "invalid request";
  throw new GatewayError("invalid_argument", message);
}

/** Checks an upstream answer; a malformed one is logged and answered `unavailable`. */
function checkUpstreamAnswer<T>(
  schema: z.ZodType<T>,
  answer: unknown,
  route: string,
  logger: Logger,
): T {
  const result = schema.safeParse(answer);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  logger.warn(`auth upstream answered ${route} with an invalid body`, {
    field: issue?.path.join("."),
    problem: issue?.message,
  });
  throw new GatewayError("unavailable", "auth upstream returned an invalid response");
}

/**
 * `POST /api/v1/public/auth/send-email-code`: validates `{"email"}` (the parsed
 * JSON body), forwards it, and resolves the upstream's `{"challenge_id"}`.
 * Throws `invalid_argument` for a bad request, `unavailable` for a bad upstream
 * answer, and passes the upstream's own GatewayErrors through.
 */
export async function sendEmailCode(
  body: unknown,
  deps: PublicAuthDeps,
  ctx: PublicAuthContext,
): Promise<SendEmailCodeResult> {
  const request = parseRequest(sendEmailCodeRequest, body);
  const answer = await deps.authUpstream.sendEmailCode(
    { email: request.email },
    { signal: ctx.signal },
  );
  const checked = checkUpstreamAnswer(
    sendEmailCodeResponse,
    answer,
    "send-email-code",
    deps.logger,
  );
  return { challenge_id: checked.challenge_id };
}

/**
 * `POST /api/v1/public/auth/confirm-email-code`: validates
 * `{"challenge_id","code","client_public_key"}` (the parsed JSON body),
 * forwards it, and resolves the upstream's `{"device_session_id","user_id"}`.
 * Throws like {@link sendEmailCode}.
 */
export async function confirmEmailCode(
  body: unknown,
  deps: PublicAuthDeps,
  ctx: PublicAuthContext,
): Promise<ConfirmEmailCodeResult> {
  const request = parseRequest(confirmEmailCodeRequest, body);
  const answer = await deps.authUpstream.confirmEmailCode(
    {
      challenge_id: request.challenge_id,
      code: request.code,
      client_public_key: request.client_public_key,
    },
    { signal: ctx.signal },
  );
  const checked = checkUpstreamAnswer(
    confirmEmailCodeResponse,
    answer,
    "confirm-email-code",
    deps.logger,
  );
  return { device_session_id: checked.device_session_id, user_id: checked.user_id };
}

/**
 * The public auth routes (contract §8) from a browser: start an email
 * challenge, then confirm it with the code and the device's public key to get
 * a device session.
 */

/** Paths of the public auth routes, relative to the gateway's base URL. */
const SEND_EMAIL_CODE_PATH = "/api/v1/public/auth/send-email-code";
const CONFIRM_EMAIL_CODE_PATH = "/api/v1/public/auth/confirm-email-code";

/** An auth route's error answer: its HTTP status and the envelope's code and message. */
export class AuthRequestError extends Error {
  override readonly name = "AuthRequestError";
  /**
   * @param status the HTTP status
   * @param code the envelope's `error.code`, e.g. `invalid_request`
   * @param message the envelope's `error.message`
   */
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The device session a confirmed challenge created. */
export interface DeviceSession {
  /** The `device_session_id` the device signs its requests for. */
  readonly deviceSessionId: string;
  /** The user the session belongs to; events for this user reach the device. */
  readonly userId: string;
}

async function postJson(
  baseUrl: string,
  path: string,
  body: object,
  signal: AbortSignal | undefined,
): Promise<Record<string, unknown>> {
  const response = await fetch(new URL(path, baseUrl), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });
  const answer = (await response.json().catch(() => ({}))) as Record<string, unknown>;
  if (!response.ok) {
    const error = (answer.error ?? {}) as { code?: unknown; message?: unknown };
    throw new AuthRequestError(
      response.status,
      typeof error.code === "string" ? error.code : "unknown",
      typeof error.message === "string" ? error.message : `HTTP ${response.status}`,
    );
  }
  return answer;
}

/**
 * Asks for an email code; resolves the challenge id to confirm. Rejects with
 * an {@link AuthRequestError} for an error answer.
 */
export async function sendEmailCode(
  baseUrl: string,
  email: string,
  call: { signal?: AbortSignal } = {},
): Promise<string> {
  const answer = await postJson(baseUrl, SEND_EMAIL_CODE_PATH, { email }, call.signal);
  return String(answer.challenge_id);
}

/**
 * Confirms a challenge with its code and the device's raw public key
 * (base64url); resolves the new device session. Rejects with an
 * {@link AuthRequestError} for an error answer.
 */
export async function confirmEmailCode(
  baseUrl: string,
  confirm: { challengeId: string; code: string; clientPublicKey: string },
  call: { signal?: AbortSignal } = {},
): Promise<DeviceSession> {
  const answer = await postJson(
    baseUrl,
    CONFIRM_EMAIL_CODE_PATH,
    {
      challenge_id: confirm.challengeId,
      code: confirm.code,
      client_public_key: confirm.clientPublicKey,
    },
    call.signal,
  );
  return { deviceSessionId: String(answer.device_session_id), userId: String(answer.user_id) };
}

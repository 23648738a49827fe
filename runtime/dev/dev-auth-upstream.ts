/**
 * Dev mode's built-in auth upstream (contract §15): sign-in by email code
 * with no mail server. The code is printed on the terminal; a confirmed
 * challenge publishes an active device session for the key the device sent.
 * Only dev mode (`runtime/dev/dev.ts`) creates it; no setting turns it on
 * anywhere else.
 */
import { createHash, randomInt, randomUUID, timingSafeEqual } from "node:crypto";
import { GatewayError } from "../../handlers/errors.js";
import type { AuthUpstream } from "../../handlers/ports.js";
import type { SessionSnapshotInput } from "../kit/publishers.js";

/** How long an email code may be confirmed. */
export const DEV_CODE_TTL_MS = 10 * 60_000;

/** Wrong codes a challenge takes before it is dropped. */
export const DEV_CODE_MAX_ATTEMPTS = 5;

/** Options of {@link createDevAuthUpstream}. */
export interface DevAuthUpstreamOptions {
  /** Writes an active session (the publisher helper's hash + session-events entry). */
  readonly publishSession: (snapshot: SessionSnapshotInput) => Promise<unknown>;
  /** Shows one line to the developer: the terminal in dev mode. */
  readonly print: (line: string) => void;
  /** Clock in Unix ms; `Date.now` by default. */
  readonly now?: () => number;
}

interface Challenge {
  readonly email: string;
  readonly code: string;
  readonly expiresAtMs: number;
  attempts: number;
}

/** The user id of an email address: stable, so every sign-in of one address is one user. */
export function devUserIdOf(email: string): string {
  const digest = createHash("sha256").update(email.toLowerCase()).digest("hex");
  return `dev-user-${digest.slice(0, 16)}`;
}

const CHALLENGE_FAILED = "email code is wrong or expired; ask for a new one";

/**
 * Creates the dev auth upstream. `sendEmailCode` prints
 * `email code for <email>: <code>` (six digits) and answers a challenge id;
 * `confirmEmailCode` checks the code (one use, {@link DEV_CODE_TTL_MS},
 * {@link DEV_CODE_MAX_ATTEMPTS} tries), publishes an active session for
 * `client_public_key` under the email's user and answers its ids. A wrong,
 * used or expired code is `unauthenticated` (the device sees `401`).
 */
export function createDevAuthUpstream(options: DevAuthUpstreamOptions): AuthUpstream {
  const now = options.now ?? (() => Date.now());
  const challenges = new Map<string, Challenge>();
  const dropExpired = () => {
    for (const [id, challenge] of challenges) {
      if (challenge.expiresAtMs <= now()) challenges.delete(id);
    }
  };
  return {
    async sendEmailCode({ email }) {
      dropExpired();
      const challengeId = `dev-challenge-${randomUUID()}`;
      const code = String(randomInt(0, 1_000_000)).padStart(6, "0");
      challenges.set(challengeId, {
        email,
        code,
        expiresAtMs: now() + DEV_CODE_TTL_MS,
        attempts: 0,
      });
      options.print(`email code for ${email}: ${code}`);
      return { challenge_id: challengeId };
    },
    async confirmEmailCode({ challenge_id, code, client_public_key }) {
      dropExpired();
      const challenge = challenges.get(challenge_id);
      if (challenge === undefined) throw new GatewayError("unauthenticated", CHALLENGE_FAILED);
      const expected = Buffer.from(challenge.code);
      const given = Buffer.from(code);
      if (expected.length !== given.length || !timingSafeEqual(expected, given)) {
        challenge.attempts += 1;
        if (challenge.attempts >= DEV_CODE_MAX_ATTEMPTS) challenges.delete(challenge_id);
        throw new GatewayError("unauthenticated", CHALLENGE_FAILED);
      }
      challenges.delete(challenge_id);
      const session = {
        deviceSessionId: `dev-device-${randomUUID()}`,
        userId: devUserIdOf(challenge.email),
      };
      await options.publishSession({
        ...session,
        clientPublicKey: client_public_key,
        status: "active",
      });
      return { device_session_id: session.deviceSessionId, user_id: session.userId };
    },
  };
}

/**
 * The dev auth upstream (contract §15): the email code goes to the terminal,
 * a confirmed code publishes an active session for the device's key, and a
 * code works once, within its lifetime and its attempts.
 */
import { describe, expect, it } from "vitest";
import { isGatewayError } from "../handlers/errors.js";
import {
  createDevAuthUpstream,
  DEV_CODE_MAX_ATTEMPTS,
  DEV_CODE_TTL_MS,
  devUserIdOf,
} from "../runtime/dev/dev-auth-upstream.js";
import type { SessionSnapshotInput } from "../runtime/kit/publishers.js";
import { vectors } from "./support/keys.js";

const ctx = { signal: new AbortController().signal };
const key = vectors.device_key.public_key_base64url;

function devUpstream() {
  const lines: string[] = [];
  const published: SessionSnapshotInput[] = [];
  let nowMs = 1_000_000;
  const upstream = createDevAuthUpstream({
    publishSession: async (snapshot) => {
      published.push(snapshot);
    },
    print: (line) => lines.push(line),
    now: () => nowMs,
  });
  const codeFor = (email: string) => {
    const line = lines.findLast((text) => text.startsWith(`email code for ${email}: `));
    return line?.slice(line.lastIndexOf(" ") + 1) ?? "";
  };
  return { upstream, lines, published, codeFor, advance: (ms: number) => (nowMs += ms) };
}

async function rejection(promise: Promise<unknown>): Promise<{ code: string; message: string }> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  if (!isGatewayError(error)) throw new Error(`expected a GatewayError, got ${String(error)}`);
  return { code: error.code, message: error.message };
}

describe("dev auth upstream", () => {
  it("prints the code on one line and publishes an active session for the device key on confirm", async () => {
    const dev = devUpstream();
    const { challenge_id } = await dev.upstream.sendEmailCode({ email: "Ada@example.com" }, ctx);
    expect(dev.lines).toHaveLength(1);
    expect(dev.lines[0]).toMatch(/^email code for Ada@example\.com: \d{6}$/);

    const answer = await dev.upstream.confirmEmailCode(
      { challenge_id, code: dev.codeFor("Ada@example.com"), client_public_key: key },
      ctx,
    );
    expect(answer.user_id).toBe(devUserIdOf("ada@example.com"));
    expect(answer.device_session_id).toMatch(/^dev-device-[0-9a-f-]{36}$/);
    expect(dev.published).toEqual([
      {
        deviceSessionId: answer.device_session_id,
        userId: answer.user_id,
        clientPublicKey: key,
        status: "active",
      },
    ]);
  });

  it("refuses a wrong code, a used code, an expired code and a challenge after too many wrong codes", async () => {
    const dev = devUpstream();
    const failed = {
      code: "unauthenticated",
      message: "email code is wrong or expired; ask for a new one",
    };

    const first = await dev.upstream.sendEmailCode({ email: "a@example.com" }, ctx);
    const code = dev.codeFor("a@example.com");
    const wrong = code === "000000" ? "000001" : "000000";
    expect(
      await rejection(
        dev.upstream.confirmEmailCode(
          { challenge_id: first.challenge_id, code: wrong, client_public_key: key },
          ctx,
        ),
      ),
    ).toEqual(failed);
    const confirm = { challenge_id: first.challenge_id, code, client_public_key: key };
    await dev.upstream.confirmEmailCode(confirm, ctx);
    expect(await rejection(dev.upstream.confirmEmailCode(confirm, ctx))).toEqual(failed);

    const late = await dev.upstream.sendEmailCode({ email: "b@example.com" }, ctx);
    dev.advance(DEV_CODE_TTL_MS);
    const lateConfirm = {
      challenge_id: late.challenge_id,
      code: dev.codeFor("b@example.com"),
      client_public_key: key,
    };
    expect(await rejection(dev.upstream.confirmEmailCode(lateConfirm, ctx))).toEqual(failed);

    const guessed = await dev.upstream.sendEmailCode({ email: "c@example.com" }, ctx);
    const right = dev.codeFor("c@example.com");
    const guess = right === "000000" ? "000001" : "000000";
    for (let attempt = 0; attempt < DEV_CODE_MAX_ATTEMPTS; attempt += 1) {
      await rejection(
        dev.upstream.confirmEmailCode(
          { challenge_id: guessed.challenge_id, code: guess, client_public_key: key },
          ctx,
        ),
      );
    }
    expect(
      await rejection(
        dev.upstream.confirmEmailCode(
          { challenge_id: guessed.challenge_id, code: right, client_public_key: key },
          ctx,
        ),
      ),
    ).toEqual(failed);
    expect(dev.published).toHaveLength(1);
  });
});

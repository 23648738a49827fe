/**
 * The public auth handlers with an in-memory auth upstream: every request rule
 * (email, code, challenge_id, client_public_key as in contract §4), what is
 * forwarded, and how the upstream's answers are checked.
 */
import { generateKeyPairSync } from "node:crypto";
import { describe, expect, it } from "vitest";
import { GatewayError } from "../handlers/errors.js";
import type { AuthUpstream } from "../handlers/ports.js";
import {
  confirmEmailCode,
  isEmailAddress,
  type PublicAuthDeps,
  sendEmailCode,
} from "../handlers/public-auth.js";
import { lowOrderKeys } from "./support/keys.js";
import { captureLogger } from "./support/logger.js";
import { createMemoryAuthUpstream } from "./support/ports.js";
import { rejectionOf } from "./support/rejection.js";

const devicePublicKey = generateKeyPairSync("ed25519").publicKey.export({ format: "jwk" }).x!;

function depsWith(upstream: AuthUpstream): PublicAuthDeps {
  return { authUpstream: upstream, logger: captureLogger().logger };
}

const ctx = { signal: new AbortController().signal };

function confirmBody(overrides: Record<string, unknown> = {}) {
  return {
    challenge_id: "ch_01J9Z",
    code: "123456",
    client_public_key: devicePublicKey,
    ...overrides,
  };
}

describe("sendEmailCode", () => {
  it("forwards the email with the request's signal and answers the challenge id", async () => {
    const { upstream, calls } = createMemoryAuthUpstream();
    const signal = new AbortController().signal;
    const answer = await sendEmailCode({ email: "ada@example.com" }, depsWith(upstream), {
      signal,
    });
    expect(answer).toEqual({ challenge_id: "ch_01J9Z" });
    expect(calls).toEqual([{ route: "send", body: { email: "ada@example.com" }, signal }]);
  });

  it("ignores unknown fields and forwards only the email", async () => {
    const { upstream, calls } = createMemoryAuthUpstream();
    await sendEmailCode({ email: "ada@example.com", admin: true }, depsWith(upstream), ctx);
    expect(calls[0]?.body).toEqual({ email: "ada@example.com" });
  });

  it.each([
    ["null", null],
    ["an array", [{ email: "ada@example.com" }]],
    ["a string", "ada@example.com"],
    ["a number", 1],
  ])("refuses a body that is %s", async (_name, body) => {
    const { upstream, calls } = createMemoryAuthUpstream();
    const error = await rejectionOf(sendEmailCode(body, depsWith(upstream), ctx));
    expect(error.code).toBe("invalid_argument");
    expect(error.message).toBe("request body must be a JSON object");
    expect(calls).toEqual([]);
  });

  it("names a missing or mistyped email", async () => {
    const { upstream } = createMemoryAuthUpstream();
    const missing = await rejectionOf(sendEmailCode({}, depsWith(upstream), ctx));
    expect([missing.code, missing.message]).toEqual(["invalid_argument", "email is required"]);
    const mistyped = await rejectionOf(sendEmailCode({ email: 42 }, depsWith(upstream), ctx));
    expect([mistyped.code, mistyped.message]).toEqual([
      "invalid_argument",
      "email must be a string",
    ]);
  });

  it.each([
    "",
    "plain",
    "@example.com",
    "ada@",
    "ada@localhost",
    "ada@@example.com",
    "ada lovelace@example.com",
    " ada@example.com",
    ".ada@example.com",
    "ada.@example.com",
    "ada..l@example.com",
    "ada@-example.com",
    "ada@example-.com",
    "ada@example..com",
    "ada@exa_mple.com",
    "ada@example.123",
    "ada@[127.0.0.1]",
    '"ada"@example.com',
    "adä@example.com",
    `${"a".repeat(65)}@example.com`,
    `ada@${"a".repeat(64)}.com`,
    `${"a".repeat(64)}@${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(62)}`,
  ])("refuses the email %j", async (email) => {
    const { upstream, calls } = createMemoryAuthUpstream();
    const error = await rejectionOf(sendEmailCode({ email }, depsWith(upstream), ctx));
    expect(error.code).toBe("invalid_argument");
    expect(error.message).toBe("email must be an email address of at most 254 characters");
    expect(calls).toEqual([]);
  });

  it.each([
    "a@b.co",
    "first.last+tag@sub.example.com",
    "o'brien_{x}@example.org",
    "ada@xn--bcher-kva.example",
    "ada@123.example.com",
    // 64 + 1 + 189 = 254 characters: the longest accepted address.
    `${"a".repeat(64)}@${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`,
  ])("accepts the email %j", async (email) => {
    expect(isEmailAddress(email)).toBe(true);
    const { upstream, calls } = createMemoryAuthUpstream();
    await sendEmailCode({ email }, depsWith(upstream), ctx);
    expect(calls[0]?.body).toEqual({ email });
  });

  it("passes the upstream's own errors through unchanged", async () => {
    const relayed = new GatewayError("resource_exhausted", "slow down", {
      httpStatus: 429,
      envelopeCode: "rate_limited",
    });
    const { upstream } = createMemoryAuthUpstream({ sendEmailCode: () => Promise.reject(relayed) });
    const error = await rejectionOf(
      sendEmailCode({ email: "ada@example.com" }, depsWith(upstream), ctx),
    );
    expect(error).toBe(relayed);
  });

  it.each([
    ["without challenge_id", {}],
    ["with a numeric challenge_id", { challenge_id: 7 }],
    ["with a challenge_id outside the identifier rule", { challenge_id: "ch 1/2" }],
    ["with an over-long challenge_id", { challenge_id: "c".repeat(129) }],
    ["that is not an object", "ch_01J9Z"],
  ])("answers unavailable and logs when the upstream answers %s", async (_name, answer) => {
    const { upstream } = createMemoryAuthUpstream({ sendEmailCode: () => Promise.resolve(answer) });
    const { logger, warnings } = captureLogger();
    const error = await rejectionOf(
      sendEmailCode({ email: "ada@example.com" }, { authUpstream: upstream, logger }, ctx),
    );
    expect([error.code, error.message]).toEqual([
      "unavailable",
      "auth upstream returned an invalid response",
    ]);
    expect(warnings).toHaveLength(1);
  });

  it("answers only the challenge id, whatever else the upstream adds", async () => {
    const { upstream } = createMemoryAuthUpstream({
      sendEmailCode: () => Promise.resolve({ challenge_id: "ch_1", debug_code: "123456" }),
    });
    const answer = await sendEmailCode({ email: "ada@example.com" }, depsWith(upstream), ctx);
    expect(answer).toEqual({ challenge_id: "ch_1" });
  });
});

describe("confirmEmailCode", () => {
  it("forwards the three fields exactly as sent and answers the new session", async () => {
    const { upstream, calls } = createMemoryAuthUpstream();
    const answer = await confirmEmailCode(
      confirmBody({ extra: "ignored" }),
      depsWith(upstream),
      ctx,
    );
    expect(answer).toEqual({ device_session_id: "ds-1", user_id: "user-1" });
    expect(calls.map((call) => call.body)).toEqual([confirmBody()]);
  });

  it("accepts the key as padded base64 as well as base64url", async () => {
    const { upstream, calls } = createMemoryAuthUpstream();
    const padded = Buffer.from(devicePublicKey, "base64url").toString("base64");
    expect(padded.endsWith("=")).toBe(true);
    await confirmEmailCode(confirmBody({ client_public_key: padded }), depsWith(upstream), ctx);
    expect(calls[0]?.body).toEqual(confirmBody({ client_public_key: padded }));
  });

  it("refuses a body that is not an object", async () => {
    const { upstream } = createMemoryAuthUpstream();
    const error = await rejectionOf(confirmEmailCode([], depsWith(upstream), ctx));
    expect([error.code, error.message]).toEqual([
      "invalid_argument",
      "request body must be a JSON object",
    ]);
  });

  it.each(["challenge_id", "code", "client_public_key"])("names a missing %s", async (field) => {
    const { upstream, calls } = createMemoryAuthUpstream();
    const body: Record<string, unknown> = confirmBody();
    delete body[field];
    const error = await rejectionOf(confirmEmailCode(body, depsWith(upstream), ctx));
    expect([error.code, error.message]).toEqual(["invalid_argument", `${field} is required`]);
    expect(calls).toEqual([]);
  });

  it.each(["challenge_id", "code", "client_public_key"])("names a non-string %s", async (field) => {
    const { upstream } = createMemoryAuthUpstream();
    const error = await rejectionOf(
      confirmEmailCode(confirmBody({ [field]: 123 }), depsWith(upstream), ctx),
    );
    expect([error.code, error.message]).toEqual(["invalid_argument", `${field} must be a string`]);
  });

  it.each(["", "c".repeat(129), "ch/1", "ch 1", "ch#1", "ché"])(
    "refuses the challenge_id %j",
    async (challengeId) => {
      const { upstream, calls } = createMemoryAuthUpstream();
      const error = await rejectionOf(
        confirmEmailCode(confirmBody({ challenge_id: challengeId }), depsWith(upstream), ctx),
      );
      expect([error.code, error.message]).toEqual([
        "invalid_argument",
        "challenge_id must be 1-128 characters of [A-Za-z0-9._:-]",
      ]);
      expect(calls).toEqual([]);
    },
  );

  it.each(["c", "c".repeat(128), "01J9Z.ch_1:a-b", "550e8400-e29b-41d4-a716-446655440000"])(
    "accepts the challenge_id %j",
    async (challengeId) => {
      const { upstream, calls } = createMemoryAuthUpstream();
      await confirmEmailCode(confirmBody({ challenge_id: challengeId }), depsWith(upstream), ctx);
      expect(calls).toHaveLength(1);
    },
  );

  it.each(["", "1".repeat(33), "12_34", "12 34", "12.34", "١٢٣"])(
    "refuses the code %j",
    async (code) => {
      const { upstream, calls } = createMemoryAuthUpstream();
      const error = await rejectionOf(
        confirmEmailCode(confirmBody({ code }), depsWith(upstream), ctx),
      );
      expect([error.code, error.message]).toEqual([
        "invalid_argument",
        "code must be 1-32 characters of [A-Za-z0-9-]",
      ]);
      expect(calls).toEqual([]);
    },
  );

  it.each(["1", "1".repeat(32), "AB12-cd34"])("accepts the code %j", async (code) => {
    const { upstream, calls } = createMemoryAuthUpstream();
    await confirmEmailCode(confirmBody({ code }), depsWith(upstream), ctx);
    expect(calls).toHaveLength(1);
  });

  it.each([
    ["31 bytes", Buffer.alloc(31, 7).toString("base64")],
    ["33 bytes", Buffer.alloc(33, 7).toString("base64")],
    ["64 bytes", Buffer.alloc(64, 7).toString("base64url")],
    ["empty", ""],
  ])("refuses a key of the wrong length (%s)", async (_name, key) => {
    const { upstream, calls } = createMemoryAuthUpstream();
    const error = await rejectionOf(
      confirmEmailCode(confirmBody({ client_public_key: key }), depsWith(upstream), ctx),
    );
    expect(error.code).toBe("invalid_argument");
    expect(error.message).toMatch(/^client_public_key must be/);
    expect(calls).toEqual([]);
  });

  it("refuses a key that is not base64", async () => {
    const { upstream } = createMemoryAuthUpstream();
    const error = await rejectionOf(
      confirmEmailCode(
        confirmBody({ client_public_key: `${devicePublicKey.slice(0, 42)}!` }),
        depsWith(upstream),
        ctx,
      ),
    );
    expect([error.code, error.message]).toEqual([
      "invalid_argument",
      "client_public_key must be base64 or base64url of a raw 32-byte Ed25519 public key",
    ]);
  });

  // Node's verifier accepts forged signatures under these keys (contract §4).
  it("refuses every low-order key of the CCTV vectors, in base64 and base64url", async () => {
    expect(lowOrderKeys).toHaveLength(14);
    const { upstream, calls } = createMemoryAuthUpstream();
    for (const hex of lowOrderKeys) {
      for (const encoding of ["base64", "base64url"] as const) {
        const key = Buffer.from(hex, "hex").toString(encoding);
        const error = await rejectionOf(
          confirmEmailCode(confirmBody({ client_public_key: key }), depsWith(upstream), ctx),
        );
        expect([error.code, error.message]).toEqual([
          "invalid_argument",
          "client_public_key is not an acceptable Ed25519 public key",
        ]);
      }
    }
    expect(calls).toEqual([]);
  });

  it.each([
    ["without user_id", { device_session_id: "ds-1" }],
    [
      "with a device_session_id outside the identifier rule",
      { device_session_id: "ds 1", user_id: "u" },
    ],
    ["with an empty user_id", { device_session_id: "ds-1", user_id: "" }],
    ["null", null],
  ])("answers unavailable when the upstream answers %s", async (_name, answer) => {
    const { upstream } = createMemoryAuthUpstream({
      confirmEmailCode: () => Promise.resolve(answer),
    });
    const { logger, warnings } = captureLogger();
    const error = await rejectionOf(
      confirmEmailCode(confirmBody(), { authUpstream: upstream, logger }, ctx),
    );
    expect([error.code, error.message]).toEqual([
      "unavailable",
      "auth upstream returned an invalid response",
    ]);
    expect(warnings).toHaveLength(1);
  });
});

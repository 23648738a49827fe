/**
 * The session record codec (contract §6): which session hashes count as a
 * session, and that what the writers encode is exactly what the readers
 * decode. The snapshot rules are pinned entry by entry in
 * session-events.test.ts, the writers' errors in publishers.test.ts.
 */
import { describe, expect, it } from "vitest";
import { rawPublicKeyOf } from "../handlers/ed25519.js";
import {
  decodeSessionEntry,
  decodeSessionHash,
  encodeSessionRecord,
  SESSION_HASH_FIELDS,
  type SessionRecordInput,
} from "../runtime/redis/session-record.js";
import { lowOrderKeys } from "./support/keys.js";

/** RFC 8032 test 1 public key. */
const KEY = Buffer.from("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "hex");

const HASH = {
  user_id: "user-1",
  client_public_key: KEY.toString("base64"),
  status: "active",
  updated_at_ms: "1764028801234",
};

/** The HMGET reply for a hash holding `fields`. */
function hmget(fields: Record<string, string>): (string | null)[] {
  return SESSION_HASH_FIELDS.map((field) => fields[field] ?? null);
}

describe("decodeSessionHash", () => {
  it("decodes a complete hash, keeping the key text as it was stored", () => {
    const decoded = decodeSessionHash("ds-1", hmget(HASH));
    expect(decoded.ok).toBe(true);
    if (!decoded.ok) return;
    const { publicKey, ...rest } = decoded.record;
    expect(rest).toEqual({
      deviceSessionId: "ds-1",
      userId: "user-1",
      publicKeyText: KEY.toString("base64"),
      status: "active",
    });
    expect(rawPublicKeyOf(publicKey)).toEqual(KEY);
  });

  it.each(SESSION_HASH_FIELDS)("counts a hash without %s as missing", (field) => {
    for (const value of [undefined, ""]) {
      const fields: Record<string, string> = { ...HASH };
      if (value === undefined) delete fields[field];
      else fields[field] = value;
      expect(decodeSessionHash("ds-1", hmget(fields))).toMatchObject({
        ok: false,
        field,
        reason: "missing",
      });
    }
  });

  it.each([
    ["user_id", { user_id: "user 1" }, "invalid", "user_id is not an identifier"],
    ["status", { status: "Active" }, "invalid", "status is not active or revoked"],
    ["a short key", { client_public_key: "AAAA" }, "length", "client_public_key refused (length)"],
  ])("refuses an invalid %s", (_, override, reason, problem) => {
    expect(decodeSessionHash("ds-1", hmget({ ...HASH, ...override }))).toEqual({
      ok: false,
      field: Object.keys(override)[0],
      reason,
      problem,
    });
  });

  it.each(lowOrderKeys)("refuses the low-order key %s", (hex) => {
    const text = Buffer.from(hex, "hex").toString("base64url");
    expect(decodeSessionHash("ds-1", hmget({ ...HASH, client_public_key: text }))).toMatchObject({
      ok: false,
      reason: "low_order",
    });
  });

  it("imports the key through the caller's importer", () => {
    const seen: string[] = [];
    const decoded = decodeSessionHash("ds-1", hmget(HASH), (text) => {
      seen.push(text);
      return { ok: false, problem: "encoding" };
    });
    expect(seen).toEqual([HASH.client_public_key]);
    expect(decoded).toMatchObject({ ok: false, field: "client_public_key", reason: "encoding" });
  });
});

describe("encodeSessionRecord", () => {
  const input: SessionRecordInput = {
    deviceSessionId: "ds-1",
    userId: "user-1",
    clientPublicKey: KEY.toString("base64"),
    status: "revoked",
    revokedAtMs: 1764028800000,
  };

  it("writes the hash and the entry with the key as base64url of its raw bytes", () => {
    const encoded = encodeSessionRecord(input, 1764028801234);
    expect(encoded.ok).toBe(true);
    if (!encoded.ok) return;
    expect(encoded.hash).toEqual({
      user_id: "user-1",
      client_public_key: KEY.toString("base64url"),
      status: "revoked",
      revoked_at_ms: "1764028800000",
      updated_at_ms: "1764028801234",
    });
    expect(encoded.entry).toEqual([
      "device_session_id",
      "ds-1",
      "user_id",
      "user-1",
      "client_public_key",
      KEY.toString("base64url"),
      "status",
      "revoked",
      "revoked_at_ms",
      "1764028800000",
    ]);
  });

  it("writes what the readers decode to the same record", () => {
    const encoded = encodeSessionRecord({ ...input, clientPublicKey: KEY }, 1);
    if (!encoded.ok) throw new Error(encoded.problem);
    const fields = new Map<string, string>();
    for (let index = 0; index < encoded.entry.length; index += 2) {
      fields.set(encoded.entry[index]!, encoded.entry[index + 1]!);
    }
    const fromEntry = decodeSessionEntry((name) => fields.get(name));
    const fromHash = decodeSessionHash("ds-1", hmget(encoded.hash));
    expect(fromEntry.ok && fromEntry.record.revokedAtMs).toBe(1764028800000);
    expect(fromHash.ok && fromHash.record.status).toBe("revoked");
    expect(fromEntry.ok && rawPublicKeyOf(fromEntry.record.publicKey)).toEqual(KEY);
  });

  it("refuses what the readers would refuse, and revoked_at_ms on an active session", () => {
    expect(encodeSessionRecord({ ...input, userId: "user 1" }, 1)).toMatchObject({
      field: "user_id",
      reason: "invalid",
    });
    expect(encodeSessionRecord({ ...input, revokedAtMs: -1 }, 1)).toMatchObject({
      field: "revoked_at_ms",
      reason: "invalid",
    });
    expect(encodeSessionRecord({ ...input, status: "active" }, 1)).toMatchObject({
      field: "revoked_at_ms",
      reason: "unexpected",
    });
    const notText = { ...input, userId: 42 } as unknown as SessionRecordInput;
    expect(encodeSessionRecord(notText, 1)).toMatchObject({ field: "user_id", reason: "invalid" });
  });
});

/**
 * Session events (contract §6): which snapshots parse, which are dropped as
 * malformed (every low-order key among them), the order of apply and revoke,
 * and snapshots written by the publisher helper or a raw XADD going through a
 * real reader.
 */
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rawPublicKeyOf } from "../handlers/ed25519.js";
import { publishSessionSnapshot } from "../runtime/kit/publishers.js";
import {
  createSessionEventsHandler,
  parseSessionSnapshot,
  type SessionSnapshot,
} from "../runtime/streams/session-events.js";
import { createStreamReader } from "../runtime/streams/stream-reader.js";
import { createMetrics, type Metrics } from "../runtime/telemetry/metrics.js";
import { lowOrderKeys as cctvLowOrderKeys } from "./support/keys.js";
import { captureLogger } from "./support/logger.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";
import { streamEntry } from "./support/stream-entry.js";
import { waitFor } from "./support/wait.js";

const lowOrderKeys = [...cctvLowOrderKeys].sort();

/** RFC 8032 test 1 public key. */
const KEY_HEX = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const KEY_BASE64URL = Buffer.from(KEY_HEX, "hex").toString("base64url");
const KEY_BASE64 = Buffer.from(KEY_HEX, "hex").toString("base64");

const VALID = {
  device_session_id: "ds-1",
  user_id: "user-1",
  client_public_key: KEY_BASE64URL,
  status: "active",
};

function problemOf(fields: Record<string, string>): string | undefined {
  const parsed = parseSessionSnapshot(streamEntry(fields));
  return parsed.ok ? undefined : parsed.problem;
}

function without(name: keyof typeof VALID): Record<string, string> {
  const { [name]: _, ...rest } = VALID;
  return rest;
}

async function counted(metrics: Metrics, result: string): Promise<number> {
  const values = (await metrics.sessionEvents.get()).values;
  return values.find((value) => value.labels.result === result)?.value ?? 0;
}

describe("parseSessionSnapshot", () => {
  it("parses an active snapshot and imports its key", () => {
    const parsed = parseSessionSnapshot(streamEntry(VALID));
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    const { publicKey, ...rest } = parsed.snapshot;
    expect(rest).toEqual({
      deviceSessionId: "ds-1",
      userId: "user-1",
      publicKeyText: KEY_BASE64URL,
      status: "active",
    });
    expect(rawPublicKeyOf(publicKey).toString("hex")).toBe(KEY_HEX);
  });

  it("parses a revoked snapshot with and without revoked_at_ms, and a base64 key", () => {
    const withTime = parseSessionSnapshot(
      streamEntry({ ...VALID, status: "revoked", revoked_at_ms: "1764028801000" }),
    );
    expect(withTime.ok && withTime.snapshot.revokedAtMs).toBe(1764028801000);
    const withoutTime = parseSessionSnapshot(
      streamEntry({
        ...VALID,
        status: "revoked",
        client_public_key: KEY_BASE64,
        revoked_at_ms: "",
      }),
    );
    expect(withoutTime.ok && withoutTime.snapshot.status).toBe("revoked");
    expect(withoutTime.ok && withoutTime.snapshot).not.toHaveProperty("revokedAtMs");
  });

  it("ignores fields it does not know", () => {
    expect(problemOf({ ...VALID, updated_at_ms: "1", note: "x y" })).toBeUndefined();
  });

  const malformed: [string, Record<string, string>, RegExp][] = [
    ["device_session_id missing", without("device_session_id"), /device_session_id is missing/],
    [
      "device_session_id empty",
      { ...VALID, device_session_id: "" },
      /device_session_id is missing/,
    ],
    ["device_session_id invalid", { ...VALID, device_session_id: "a/b" }, /device_session_id/],
    ["device_session_id of 129 bytes", { ...VALID, device_session_id: "d".repeat(129) }, /device/],
    ["user_id missing", without("user_id"), /user_id is missing/],
    ["user_id invalid", { ...VALID, user_id: "user 1" }, /user_id is not an identifier/],
    ["client_public_key missing", without("client_public_key"), /client_public_key is missing/],
    ["a key of 31 bytes", { ...VALID, client_public_key: b64(31) }, /refused \(length\)/],
    ["a key of 33 bytes", { ...VALID, client_public_key: b64(33) }, /refused \(length\)/],
    ["a key that is not base64", { ...VALID, client_public_key: "!".repeat(43) }, /encoding/],
    ["status missing", without("status"), /status is missing/],
    ["status Active", { ...VALID, status: "Active" }, /status is not active or revoked/],
    ["status deleted", { ...VALID, status: "deleted" }, /status is not active or revoked/],
    ["status with a space", { ...VALID, status: "active " }, /status is not active or revoked/],
    ["revoked_at_ms negative", { ...VALID, revoked_at_ms: "-1" }, /revoked_at_ms/],
    ["revoked_at_ms fractional", { ...VALID, revoked_at_ms: "1.5" }, /revoked_at_ms/],
    ["revoked_at_ms text", { ...VALID, revoked_at_ms: "yesterday" }, /revoked_at_ms/],
    ["revoked_at_ms too large", { ...VALID, revoked_at_ms: "99999999999999999" }, /revoked_at/],
  ];
  it.each(malformed)("refuses a snapshot with %s", (_, fields, problem) => {
    expect(problemOf(fields)).toMatch(problem);
  });

  it("finds 14 distinct low-order keys in the CCTV vectors", () => {
    expect(lowOrderKeys).toHaveLength(14);
  });

  it.each(lowOrderKeys)("refuses the low-order key %s", (hex) => {
    const raw = Buffer.from(hex, "hex");
    for (const text of [raw.toString("base64url"), raw.toString("base64")]) {
      expect(problemOf({ ...VALID, client_public_key: text })).toBe(
        "client_public_key refused (low_order)",
      );
    }
  });
});

function b64(bytes: number): string {
  return Buffer.alloc(bytes, 7).toString("base64url");
}

describe("createSessionEventsHandler", () => {
  it("applies snapshots in order and counts applied and malformed", async () => {
    const metrics = createMetrics();
    const { logger, lines } = captureLogger();
    const calls: string[] = [];
    const handle = createSessionEventsHandler({
      metrics,
      logger,
      apply: (snapshot: SessionSnapshot) =>
        calls.push(`apply ${snapshot.deviceSessionId} ${snapshot.status}`),
    });
    handle([
      streamEntry({ ...VALID, device_session_id: "a" }, "1-1"),
      streamEntry({ ...VALID, device_session_id: "b", status: "revoked" }, "1-2"),
      streamEntry({ ...VALID, device_session_id: "c", status: "gone" }, "1-3"),
      streamEntry({ ...VALID, device_session_id: "a", status: "revoked" }, "1-4"),
    ]);

    expect(calls).toEqual(["apply a active", "apply b revoked", "apply a revoked"]);
    expect(await counted(metrics, "applied")).toBe(3);
    expect(await counted(metrics, "malformed")).toBe(1);
    const warnings = lines.filter((line) => line.level === "warn");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.message).toContain("1-3");
  });

  it("logs an apply that throws and goes on with the next snapshot", () => {
    const { logger, lines } = captureLogger();
    const applied: string[] = [];
    const handle = createSessionEventsHandler({
      logger,
      apply: (snapshot) => {
        if (snapshot.deviceSessionId === "a") throw new Error("cache bug");
        applied.push(snapshot.deviceSessionId);
      },
    });
    handle([
      streamEntry({ ...VALID, device_session_id: "a" }, "1-1"),
      streamEntry({ ...VALID, device_session_id: "b" }, "1-2"),
    ]);
    expect(applied).toEqual(["b"]);
    expect(lines.some((line) => line.level === "error" && line.message.includes("1-1"))).toBe(true);
  });
});

describe("session events through a real stream reader", () => {
  let server: TestRedis;
  let redis: Redis;

  beforeAll(async () => {
    server = await startRedis();
    redis = server.client();
  });

  afterAll(async () => {
    redis.disconnect();
    await server.stop();
  });

  async function readSessionEvents(stream: string) {
    const metrics = createMetrics();
    const { logger, lines } = captureLogger();
    const applied: SessionSnapshot[] = [];
    const reader = createStreamReader({
      redis,
      stream,
      count: 8,
      blockMs: 500,
      logger,
      onEntries: createSessionEventsHandler({
        metrics,
        logger,
        apply: (snapshot) => applied.push(snapshot),
      }),
    });
    await reader.start();
    return { reader, applied, metrics, lines };
  }

  it("drops a malformed snapshot and applies the valid one after it", async () => {
    const stream = "test:session_events:malformed";
    const { reader, applied, metrics, lines } = await readSessionEvents(stream);
    try {
      const lowOrder = Buffer.from(lowOrderKeys[0]!, "hex").toString("base64url");
      const bad = await redis.xadd(
        stream,
        "*",
        ...Object.entries({ ...VALID, client_public_key: lowOrder }).flat(),
      );
      const good = await publishSessionSnapshot(
        redis,
        {
          deviceSessionId: "ds-2",
          userId: "user-2",
          clientPublicKey: KEY_BASE64,
          status: "active",
        },
        { stream },
      );
      await waitFor("the valid snapshot", () => applied.length === 1);
      expect(applied[0]!.deviceSessionId).toBe("ds-2");
      expect(await counted(metrics, "malformed")).toBe(1);
      expect(lines.some((line) => line.level === "warn" && line.message.includes(bad!))).toBe(true);
      expect(lines.some((line) => line.message.includes(good))).toBe(true);
    } finally {
      await reader.stop();
    }
  });

  it("applies what the helper and a raw XADD publish, revoked snapshots included", async () => {
    const stream = "test:session_events:publishers";
    const { reader, applied } = await readSessionEvents(stream);
    try {
      await publishSessionSnapshot(
        redis,
        {
          deviceSessionId: "ds-1",
          userId: "user-1",
          clientPublicKey: Buffer.from(KEY_HEX, "hex"),
          status: "revoked",
          revokedAtMs: 1764028801000,
        },
        { stream },
      );
      // As a publisher in another language writes it, the unused field left empty.
      await redis.call(
        "XADD",
        stream,
        "*",
        "device_session_id",
        "ds-3",
        "user_id",
        "user-3",
        "client_public_key",
        KEY_BASE64,
        "status",
        "active",
        "revoked_at_ms",
        "",
      );

      await waitFor("both snapshots", () => applied.length === 2);
      expect(
        applied.map(({ deviceSessionId, userId, status, revokedAtMs }) => ({
          deviceSessionId,
          userId,
          status,
          revokedAtMs,
        })),
      ).toEqual([
        {
          deviceSessionId: "ds-1",
          userId: "user-1",
          status: "revoked",
          revokedAtMs: 1764028801000,
        },
        { deviceSessionId: "ds-3", userId: "user-3", status: "active", revokedAtMs: undefined },
      ]);
    } finally {
      await reader.stop();
    }
  });
});

/**
 * The publisher helpers against a real redis-server (contract §6): what they
 * write, that the session hash and its snapshot entry go in one MULTI, that
 * invalid input writes nothing, and that MAXLEN keeps the streams bounded.
 */
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  publishClientEvent,
  publishSessionSnapshot,
  type SessionSnapshotInput,
} from "../runtime/kit/publishers.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";
import { waitFor } from "./support/wait.js";

/** RFC 8032 test 1 public key. */
const KEY = Buffer.from("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "hex");
const LOW_ORDER_KEY = Buffer.from(
  "0100000000000000000000000000000000000000000000000000000000000000",
  "hex",
);

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

/** The fields of one stream entry, as text. */
async function entryFields(stream: string, id: string): Promise<Record<string, string>> {
  const [found] = await redis.xrange(stream, id, id);
  const flat = found?.[1] ?? [];
  const fields: Record<string, string> = {};
  for (let index = 0; index + 1 < flat.length; index += 2) fields[flat[index]!] = flat[index + 1]!;
  return fields;
}

/** The arguments of the first XADD to `stream` that `publish` sends, as MONITOR on another connection sees them. */
async function sentXadd(stream: string, publish: () => Promise<unknown>): Promise<string[]> {
  const monitor = await redis.monitor();
  const xadds: string[][] = [];
  monitor.on("monitor", (_time: string, args: string[]) => {
    if (args[0]?.toLowerCase() === "xadd" && args[1] === stream) xadds.push(args);
  });
  try {
    await publish();
    await waitFor(`XADD to ${stream}`, () => xadds.length > 0);
    return xadds[0] ?? [];
  } finally {
    monitor.disconnect();
  }
}

describe("publishSessionSnapshot", () => {
  const session = {
    deviceSessionId: "ds-1",
    userId: "user-1",
    clientPublicKey: KEY.toString("base64"),
  };

  it("writes the session hash and appends the snapshot entry", async () => {
    const options = { keyPrefix: "p1:", stream: "p1:session_events", now: () => 1764028801234 };
    const id = await publishSessionSnapshot(redis, { ...session, status: "active" }, options);

    expect(await redis.hgetall("p1:session:ds-1")).toEqual({
      user_id: "user-1",
      client_public_key: KEY.toString("base64url"),
      status: "active",
      updated_at_ms: "1764028801234",
    });
    expect(await entryFields("p1:session_events", id)).toEqual({
      device_session_id: "ds-1",
      user_id: "user-1",
      client_public_key: KEY.toString("base64url"),
      status: "active",
    });
  });

  it("writes revoked_at_ms when revoked with a time, and removes it when a later snapshot has none", async () => {
    const options = { keyPrefix: "p2:", stream: "p2:session_events" };
    const revokedId = await publishSessionSnapshot(
      redis,
      { ...session, status: "revoked", revokedAtMs: 1764028800000 },
      options,
    );
    expect(await redis.hget("p2:session:ds-1", "revoked_at_ms")).toBe("1764028800000");
    expect(await entryFields("p2:session_events", revokedId)).toMatchObject({
      status: "revoked",
      revoked_at_ms: "1764028800000",
    });

    const activeId = await publishSessionSnapshot(redis, { ...session, status: "active" }, options);
    expect(await redis.hexists("p2:session:ds-1", "revoked_at_ms")).toBe(0);
    expect(await redis.hget("p2:session:ds-1", "status")).toBe("active");
    expect(await entryFields("p2:session_events", activeId)).not.toHaveProperty("revoked_at_ms");
  });

  it("uses the contract's default key prefix and stream", async () => {
    const id = await publishSessionSnapshot(redis, { ...session, status: "active" });
    expect(await redis.hget("gateway:session:ds-1", "user_id")).toBe("user-1");
    expect(await entryFields("gateway:session_events", id)).toMatchObject({
      device_session_id: "ds-1",
    });
  });

  // Redis runs a MULTI … EXEC block as one unit: no reader sees the hash
  // without its entry, or the entry before its hash.
  it("sends the hash write and the XADD in one MULTI", async () => {
    const monitor = await redis.monitor();
    const commands: string[] = [];
    monitor.on("monitor", (_time: string, args: string[]) => {
      if (args[0] !== undefined) commands.push(args[0].toLowerCase());
    });
    try {
      await publishSessionSnapshot(redis, { ...session, status: "active" }, { keyPrefix: "p3:" });
      await waitFor("EXEC", () => commands.includes("exec"));
      expect(commands.slice(commands.indexOf("multi"), commands.indexOf("exec") + 1)).toEqual([
        "multi",
        "hset",
        "hdel",
        "xadd",
        "exec",
      ]);
    } finally {
      monitor.disconnect();
    }
  });

  const invalid: [string, Record<string, unknown>, RegExp][] = [
    ["an empty deviceSessionId", { deviceSessionId: "" }, /deviceSessionId/],
    ["a deviceSessionId with a slash", { deviceSessionId: "a/b" }, /deviceSessionId/],
    ["a userId of 129 bytes", { userId: "u".repeat(129) }, /userId/],
    ["a key of 31 bytes", { clientPublicKey: KEY.subarray(1) }, /32 raw bytes/],
    ["a base64 key of 33 bytes", { clientPublicKey: Buffer.alloc(33, 9).toString("base64") }, /32/],
    ["a key that is not base64", { clientPublicKey: "!".repeat(43) }, /base64/],
    ["a low-order key as bytes", { clientPublicKey: LOW_ORDER_KEY }, /low-order/],
    ["a low-order key as text", { clientPublicKey: LOW_ORDER_KEY.toString("base64url") }, /low/],
    ["status Revoked", { status: "Revoked" }, /status/],
    ["revokedAtMs with status active", { status: "active", revokedAtMs: 1 }, /revokedAtMs/],
    ["a negative revokedAtMs", { status: "revoked", revokedAtMs: -1 }, /revokedAtMs/],
    ["a fractional revokedAtMs", { status: "revoked", revokedAtMs: 1.5 }, /revokedAtMs/],
  ];
  it.each(invalid)("throws and writes nothing for %s", async (_, override, message) => {
    const input = { ...session, status: "active", ...override } as SessionSnapshotInput;
    const options = { keyPrefix: "bad:", stream: "bad:session_events" };
    await expect(publishSessionSnapshot(redis, input, options)).rejects.toThrow(message);
    expect(await redis.keys("bad:*")).toEqual([]);
  });

  it("throws and writes nothing for a maxLen that is not a positive integer", async () => {
    const options = { keyPrefix: "bad:", stream: "bad:session_events", maxLen: 0 };
    await expect(
      publishSessionSnapshot(redis, { ...session, status: "active" }, options),
    ).rejects.toThrow(/maxLen/);
    expect(await redis.keys("bad:*")).toEqual([]);
  });

  it("bounds the stream with MAXLEN ~ 100000 when no maxLen is given", async () => {
    const stream = "p5:session_events";
    const args = await sentXadd(stream, () =>
      publishSessionSnapshot(redis, { ...session, status: "active" }, { keyPrefix: "p5:", stream }),
    );
    expect(args.slice(2, 6)).toEqual(["MAXLEN", "~", "100000", "*"]);
  });

  it("keeps the stream near maxLen", async () => {
    const stream = "p4:session_events";
    for (let index = 0; index < 600; index += 1) {
      await publishSessionSnapshot(
        redis,
        { ...session, deviceSessionId: `ds-${index}`, status: "active" },
        { keyPrefix: "p4:", stream, maxLen: 100 },
      );
    }
    // MAXLEN ~ trims whole radix-tree nodes (100 entries each by default).
    const length = await redis.xlen(stream);
    expect(length).toBeGreaterThanOrEqual(100);
    expect(length).toBeLessThan(300);
  });
});

describe("publishClientEvent", () => {
  it("appends an event with every field, the payload as raw bytes", async () => {
    const stream = "c1:client_events";
    const payload = Buffer.from(Array.from({ length: 256 }, (_, byte) => byte));
    const id = await publishClientEvent(
      redis,
      { userId: "u1", deviceSessionId: "ds1", eventType: "chat/msg.v1", payload, requestId: "r1" },
      { stream },
    );
    const [found] = await redis.xrangeBuffer(stream, id, id);
    const flat = found![1].map((value) => value);
    expect(flat.filter((_, index) => index % 2 === 0).map(String)).toEqual([
      "user_id",
      "device_session_id",
      "event_type",
      "payload",
      "request_id",
    ]);
    expect(Buffer.compare(flat[7]!, payload)).toBe(0);
  });

  it("writes only what is set, text payloads as UTF-8, and the default stream", async () => {
    const bare = await publishClientEvent(redis, { userId: "u1", eventType: "ping" });
    expect(await entryFields("gateway:client_events", bare)).toEqual({
      user_id: "u1",
      event_type: "ping",
    });
    const empty = await publishClientEvent(redis, { userId: "u1", eventType: "ping", payload: "" });
    expect(await entryFields("gateway:client_events", empty)).not.toHaveProperty("payload");
    const text = await publishClientEvent(redis, {
      userId: "u1",
      eventType: "t",
      payload: "héllo",
    });
    expect((await entryFields("gateway:client_events", text)).payload).toBe("héllo");
  });

  const invalid: [string, Record<string, unknown>, RegExp][] = [
    ["an empty userId", { userId: "" }, /userId/],
    ["a userId with a space", { userId: "a b" }, /userId/],
    ["an empty deviceSessionId", { deviceSessionId: "" }, /deviceSessionId/],
    ["an eventType with a space", { eventType: "a b" }, /eventType/],
    ["an empty eventType", { eventType: "" }, /eventType/],
    ["a requestId of 129 bytes", { requestId: "r".repeat(129) }, /requestId/],
    ["a payload over the limit", { payload: Buffer.alloc(65_537) }, /65537 bytes/],
  ];
  it.each(invalid)("throws and writes nothing for %s", async (_, override, message) => {
    const input = { userId: "u1", eventType: "t", ...override } as Parameters<
      typeof publishClientEvent
    >[1];
    await expect(publishClientEvent(redis, input, { stream: "bad:client_events" })).rejects.toThrow(
      message,
    );
    expect(await redis.exists("bad:client_events")).toBe(0);
  });

  it("honours a smaller maxPayloadBytes", async () => {
    await expect(
      publishClientEvent(
        redis,
        { userId: "u1", eventType: "t", payload: Buffer.alloc(11) },
        { stream: "bad:client_events", maxPayloadBytes: 10 },
      ),
    ).rejects.toThrow(RangeError);
    expect(await redis.exists("bad:client_events")).toBe(0);
  });

  it("bounds the stream with MAXLEN ~ 100000 when no maxLen is given", async () => {
    const stream = "c3:client_events";
    const args = await sentXadd(stream, () =>
      publishClientEvent(redis, { userId: "u1", eventType: "t" }, { stream }),
    );
    expect(args.slice(2, 6)).toEqual(["MAXLEN", "~", "100000", "*"]);
  });

  it("keeps the stream near maxLen", async () => {
    const stream = "c2:client_events";
    const pending: Promise<string>[] = [];
    for (let index = 0; index < 1000; index += 1) {
      pending.push(
        publishClientEvent(redis, { userId: "u1", eventType: "t" }, { stream, maxLen: 100 }),
      );
    }
    await Promise.all(pending);
    const length = await redis.xlen(stream);
    expect(length).toBeGreaterThanOrEqual(100);
    expect(length).toBeLessThan(300);
  });
});

/**
 * Client events (contract §6): which entries parse, which are dropped as
 * malformed, how results are counted and logged, and entries written by the
 * publisher helper or by a raw XADD going through a real reader.
 */
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { publishClientEvent } from "../runtime/kit/publishers.js";
import {
  type ClientEvent,
  createClientEventsHandler,
  parseClientEvent,
} from "../runtime/streams/client-events.js";
import { createStreamReader } from "../runtime/streams/stream-reader.js";
import { createMetrics, type Metrics } from "../runtime/telemetry/metrics.js";
import { captureLogger } from "./support/logger.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";
import { streamEntry } from "./support/stream-entry.js";
import { waitFor } from "./support/wait.js";

const LIMITS = { maxPayloadBytes: 64 };

function problemOf(fields: Record<string, string | Buffer>): string | undefined {
  const parsed = parseClientEvent(streamEntry(fields), LIMITS);
  return parsed.ok ? undefined : parsed.problem;
}

async function counted(metrics: Metrics, result: string): Promise<number> {
  const values = (await metrics.clientEvents.get()).values;
  return values.find((value) => value.labels.result === result)?.value ?? 0;
}

describe("parseClientEvent", () => {
  it("parses a complete entry, with the entry id as event id and the payload as raw bytes", () => {
    const payload = Buffer.from([0x00, 0xff, 0xc3, 0x28]);
    const parsed = parseClientEvent(
      streamEntry(
        {
          user_id: "user-1",
          device_session_id: "ds.1",
          event_type: "chat/message.v1",
          payload,
          request_id: "req:9",
        },
        "1764028801000-7",
      ),
      LIMITS,
    );
    expect(parsed).toEqual({
      ok: true,
      event: {
        eventId: "1764028801000-7",
        userId: "user-1",
        deviceSessionId: "ds.1",
        eventType: "chat/message.v1",
        payload,
        requestId: "req:9",
      },
    });
  });

  it("needs only user_id and event_type; absent optional fields read as no session, no payload, no request id", () => {
    const parsed = parseClientEvent(streamEntry({ user_id: "u", event_type: "t" }), LIMITS);
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect(parsed.event).not.toHaveProperty("deviceSessionId");
    expect(parsed.event.payload.length).toBe(0);
    expect(parsed.event.requestId).toBe("");
  });

  // Publishers that always write every field leave the unused ones empty.
  it("reads empty optional fields as absent", () => {
    const parsed = parseClientEvent(
      streamEntry({
        user_id: "u",
        event_type: "t",
        device_session_id: "",
        payload: "",
        request_id: "",
      }),
      LIMITS,
    );
    expect(parsed.ok && parsed.event).toEqual({
      eventId: "1764028801000-0",
      userId: "u",
      eventType: "t",
      payload: Buffer.alloc(0),
      requestId: "",
    });
  });

  it("ignores fields it does not know", () => {
    expect(problemOf({ user_id: "u", event_type: "t", trace_id: "x y z" })).toBeUndefined();
  });

  it("accepts a payload of exactly the limit", () => {
    expect(problemOf({ user_id: "u", event_type: "t", payload: Buffer.alloc(64, 1) })).toBe(
      undefined,
    );
  });

  const malformed: [string, Record<string, string | Buffer>, RegExp][] = [
    ["user_id missing", { event_type: "t" }, /user_id is missing/],
    ["user_id empty", { user_id: "", event_type: "t" }, /user_id is missing/],
    ["user_id with a space", { user_id: "a b", event_type: "t" }, /user_id is not an identifier/],
    ["user_id with a slash", { user_id: "a/b", event_type: "t" }, /user_id is not an identifier/],
    ["user_id of 129 bytes", { user_id: "u".repeat(129), event_type: "t" }, /user_id/],
    ["user_id not ASCII", { user_id: "usér", event_type: "t" }, /user_id/],
    ["user_id invalid UTF-8", { user_id: Buffer.from([0x75, 0xff]), event_type: "t" }, /user_id/],
    ["event_type missing", { user_id: "u" }, /event_type is missing/],
    ["event_type empty", { user_id: "u", event_type: "" }, /event_type is missing/],
    ["event_type with a space", { user_id: "u", event_type: "a b" }, /event_type is not a type/],
    ["event_type of 129 bytes", { user_id: "u", event_type: "t".repeat(129) }, /event_type/],
    [
      "device_session_id invalid",
      { user_id: "u", event_type: "t", device_session_id: "ds/1" },
      /device_session_id is not an identifier/,
    ],
    [
      "request_id invalid",
      { user_id: "u", event_type: "t", request_id: "r".repeat(129) },
      /request_id is not an identifier/,
    ],
    [
      "payload one byte over the limit",
      { user_id: "u", event_type: "t", payload: Buffer.alloc(65) },
      /payload is 65 bytes, over the 64 byte limit/,
    ],
  ];
  it.each(malformed)("refuses an entry with %s", (_, fields, problem) => {
    expect(problemOf(fields)).toMatch(problem);
  });
});

describe("createClientEventsHandler", () => {
  it("delivers in order and counts delivered, no_subscriber and malformed", async () => {
    const metrics = createMetrics();
    const { logger, lines } = captureLogger();
    const delivered: ClientEvent[] = [];
    const handle = createClientEventsHandler({
      ...LIMITS,
      metrics,
      logger,
      deliver: (event) => {
        delivered.push(event);
        return event.userId === "online" ? 2 : 0;
      },
    });
    handle([
      streamEntry({ user_id: "online", event_type: "a" }, "1-1"),
      streamEntry({ user_id: "offline", event_type: "b" }, "1-2"),
      streamEntry({ user_id: "online" }, "1-3"),
      streamEntry({ user_id: "online", device_session_id: "ds", event_type: "c" }, "1-4"),
    ]);

    expect(delivered.map((event) => event.eventId)).toEqual(["1-1", "1-2", "1-4"]);
    expect(await counted(metrics, "delivered")).toBe(2);
    expect(await counted(metrics, "no_subscriber")).toBe(1);
    expect(await counted(metrics, "malformed")).toBe(1);
    const warnings = lines.filter((line) => line.level === "warn");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.message).toContain("1-3");
    expect(warnings[0]!.message).toContain("event_type is missing");
    const debug = lines.filter((line) => line.level === "debug").map((line) => line.message);
    expect(debug).toHaveLength(3);
    expect(debug[0]).toContain("1-1");
    expect(debug[0]).toContain("user online");
    expect(debug[2]).toContain("session ds");
  });

  it("logs a delivery that throws and goes on with the next entry", () => {
    const { logger, lines } = captureLogger();
    const delivered: string[] = [];
    const handle = createClientEventsHandler({
      ...LIMITS,
      logger,
      deliver: (event) => {
        if (event.eventId === "1-1") throw new Error("hub bug");
        delivered.push(event.eventId);
        return 1;
      },
    });
    handle([
      streamEntry({ user_id: "u", event_type: "t" }, "1-1"),
      streamEntry({ user_id: "u", event_type: "t" }, "1-2"),
    ]);
    expect(delivered).toEqual(["1-2"]);
    expect(lines.some((line) => line.level === "error" && line.message.includes("1-1"))).toBe(true);
  });
});

describe("client events through a real stream reader", () => {
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

  async function readClientEvents(stream: string) {
    const metrics = createMetrics();
    const { logger, lines } = captureLogger();
    const events: ClientEvent[] = [];
    const reader = createStreamReader({
      redis,
      stream,
      count: 8,
      blockMs: 500,
      logger,
      onEntries: createClientEventsHandler({
        maxPayloadBytes: 65_536,
        metrics,
        logger,
        deliver: (event) => {
          events.push(event);
          return 1;
        },
      }),
    });
    await reader.start();
    return { reader, events, metrics, lines };
  }

  it("drops a malformed entry and handles the valid one after it", async () => {
    const stream = "test:client_events:malformed";
    const { reader, events, metrics, lines } = await readClientEvents(stream);
    try {
      const bad = await redis.xadd(stream, "*", "user_id", "no spaces allowed", "event_type", "t");
      const good = await publishClientEvent(redis, { userId: "u1", eventType: "t" }, { stream });
      await waitFor("the valid event", () => events.length === 1);
      expect(events[0]!.eventId).toBe(good);
      expect(await counted(metrics, "malformed")).toBe(1);
      expect(lines.some((line) => line.level === "warn" && line.message.includes(bad!))).toBe(true);
    } finally {
      await reader.stop();
    }
  });

  it("reads what the helper and a raw XADD publish, binary payloads intact", async () => {
    const stream = "test:client_events:publishers";
    const { reader, events } = await readClientEvents(stream);
    try {
      const payload = Buffer.from(Array.from({ length: 256 }, (_, byte) => byte));
      const viaHelper = await publishClientEvent(
        redis,
        {
          userId: "u1",
          deviceSessionId: "ds1",
          eventType: "chat.message",
          payload,
          requestId: "r1",
        },
        { stream },
      );
      // As a publisher in another language writes it: every field, unused ones empty.
      const viaXadd = (await redis.call(
        "XADD",
        stream,
        "MAXLEN",
        "~",
        "1000",
        "*",
        "user_id",
        "u2",
        "device_session_id",
        "",
        "event_type",
        "presence/online",
        "payload",
        payload,
        "request_id",
        "",
      )) as string;

      await waitFor("both events", () => events.length === 2);
      expect(events).toEqual([
        {
          eventId: viaHelper,
          userId: "u1",
          deviceSessionId: "ds1",
          eventType: "chat.message",
          payload,
          requestId: "r1",
        },
        { eventId: viaXadd, userId: "u2", eventType: "presence/online", payload, requestId: "" },
      ]);
    } finally {
      await reader.stop();
    }
  });
});

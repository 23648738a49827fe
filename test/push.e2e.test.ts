/**
 * The push path end to end: a real redis-server, the gateway host on real
 * sockets (in-process, and the bin where a process is needed) and real gRPC
 * clients. Everything is asserted as a device or an operator sees it:
 * statuses, messages, bytes, signatures, logs and the admin /metrics.
 */
import { spawn, spawnSync } from "node:child_process";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Routes } from "../handlers/ports.js";
import type { SubscribeEventsResponse } from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { publishClientEvent, publishSessionSnapshot } from "../runtime/kit/publishers.js";
import { createKeyspace } from "../runtime/redis/keyspace.js";
import { createCleanup } from "./support/cleanup.js";
import { putSession, startGatewayBin } from "./support/gateway.js";
import { lowOrderKeys, newDeviceKey, vectors } from "./support/keys.js";
import {
  blockedSubscription,
  connectedChannel,
  contractEventSignedBytes,
  execute,
  executeRequest,
  grpcClient,
  hasValidGatewaySignature,
  metric,
  metricValue,
  newDevice,
  pausedSubscription,
  SAFETY_MS,
  type Subscription,
  scrapeMetrics,
  startPushGateway,
  subscribe,
  subscribeRequest,
  type TestDevice,
  uniqueName,
} from "./support/push.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";

let redis: TestRedis;
let publisher: Redis;
const cleanup = createCleanup();

beforeAll(async () => {
  redis = await startRedis();
  publisher = redis.client();
});

afterEach(() => cleanup.run());

afterAll(async () => {
  publisher?.disconnect();
  await redis?.stop();
});

const echoRoutes: Routes = {
  "demo.echo": async (command) => ({ resultCode: "ok", payload: command.payload }),
};

const REVOKED = { status: "FAILED_PRECONDITION", details: "device session is revoked" };
const SHUTTING_DOWN = { status: "UNAVAILABLE", details: "gateway is shutting down" };

/** A device session whose record is in Redis (hash only, as the auth side writes it). */
async function storedDevice(
  userId: string,
  client: Redis = publisher,
  status: "active" | "revoked" = "active",
): Promise<TestDevice> {
  const device = newDevice(userId);
  await putSession(client, { ...device, status });
  return device;
}

/** Runs redis-cli against the test Redis with `input` on stdin; resolves what it printed. */
function redisCli(args: string[], input: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("redis-cli", ["-h", redis.host, "-p", String(redis.port), ...args], {
      env: { ...process.env, REDISCLI_AUTH: redis.password },
    });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString("utf8");
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString("utf8");
    });
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve(output) : reject(new Error(`redis-cli exited ${code}: ${output}`)),
    );
    child.stdin.end(input);
  });
}

/** Every byte value once. */
const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, index) => index));

function eventIds(events: readonly SubscribeEventsResponse[]): string[] {
  return events.map((event) => event.eventId);
}

/** Waits (safety net only) until a /metrics series has the expected value. */
async function expectMetric(admin: string, series: string, value: number): Promise<void> {
  await expect.poll(() => metric(admin, series), { timeout: SAFETY_MS, interval: 20 }).toBe(value);
}

/** The warn lines of an in-process gateway that name a stream entry id. */
function warnLinesNaming(lines: readonly string[], id: string): string[] {
  return lines.filter((line) => line.startsWith("warn ") && line.includes(id));
}

describe("the bootstrap event", () => {
  it("checks signatures with bytes built from contract §4, pinned to the shared vectors", () => {
    for (const name of ["event_client", "event_server_time_bootstrap"]) {
      const vector = vectors.cases.find((candidate) => candidate.name === name);
      if (vector === undefined) throw new Error(`vector ${name} is missing`);
      const fields = vector.fields;
      const event: SubscribeEventsResponse = {
        keyId: String(fields.key_id),
        eventId: String(fields.event_id),
        eventType: String(fields.event_type),
        requestId: String(fields.request_id),
        timestampMs: Number(fields.timestamp_ms),
        payload: Buffer.from(String(fields.payload_hex), "hex"),
        signature: Buffer.from(vector.signature_hex, "hex"),
      };
      expect(contractEventSignedBytes(event).toString("hex")).toBe(vector.signed_bytes_hex);
      expect(hasValidGatewaySignature(event)).toBe(true);
      expect(hasValidGatewaySignature({ ...event, eventId: `${event.eventId}1` })).toBe(false);
    }
  });

  it("comes first on every stream: gateway.server_time, the subscribe request_id, the node's cursor, empty payload, gateway signature", async () => {
    const gw = await startPushGateway(redis, publisher, cleanup);
    const alice = await storedDevice("alice");

    // The client-events stream is empty at startup: the cursor is 0-0.
    const before = Date.now();
    const first = subscribe(gw.grpc, subscribeRequest(alice), cleanup);
    const [bootstrap] = await first.received(1);
    const after = Date.now();
    expect(bootstrap).toMatchObject({
      eventType: "gateway.server_time",
      eventId: "0-0",
      requestId: first.request.requestId,
      keyId: vectors.gateway_key.key_id,
    });
    expect(bootstrap!.payload).toHaveLength(0);
    expect(bootstrap!.timestampMs).toBeGreaterThanOrEqual(before);
    expect(bootstrap!.timestampMs).toBeLessThanOrEqual(after);
    expect(hasValidGatewaySignature(bootstrap!)).toBe(true);

    // An entry nobody receives still moves the cursor once consumed.
    const unseen = await gw.publish({ userId: "nobody-online", eventType: "demo.unseen" });
    await expectMetric(gw.admin, 'gateway_client_events_total{result="no_subscriber"}', 1);
    const second = subscribe(gw.grpc, subscribeRequest(alice), cleanup);
    const [secondBootstrap] = await second.received(1);
    expect(secondBootstrap).toMatchObject({
      eventType: "gateway.server_time",
      eventId: unseen,
      requestId: second.request.requestId,
    });
    expect(hasValidGatewaySignature(secondBootstrap!)).toBe(true);

    const delivered = await gw.publish({ userId: "alice", eventType: "demo.hello" });
    expect(eventIds((await first.received(2)).slice(1))).toEqual([delivered]);
    expect(eventIds((await second.received(2)).slice(1))).toEqual([delivered]);
    const third = subscribe(gw.grpc, subscribeRequest(alice), cleanup);
    const [thirdBootstrap] = await third.received(1);
    expect(thirdBootstrap).toMatchObject({
      eventType: "gateway.server_time",
      eventId: delivered,
      requestId: third.request.requestId,
    });
    expect(hasValidGatewaySignature(thirdBootstrap!)).toBe(true);
  });

  it("carries the stream's last id at startup when the stream already holds entries", async () => {
    const name = uniqueName("preloaded");
    const lastAtStartup = await publisher.xadd(
      `${name}:client_events`,
      "*",
      "user_id",
      "someone",
      "event_type",
      "demo.old",
    );
    const gw = await startPushGateway(redis, publisher, cleanup, { name });
    const alice = await storedDevice("alice");
    const stream = subscribe(gw.grpc, subscribeRequest(alice), cleanup);
    const [bootstrap] = await stream.received(1);
    expect(bootstrap?.eventId).toBe(lastAtStartup);
    expect(bootstrap?.eventType).toBe("gateway.server_time");
    expect(hasValidGatewaySignature(bootstrap!)).toBe(true);
  });
});

describe("SubscribeEvents authentication", () => {
  const suite = createCleanup();
  let gw: Awaited<ReturnType<typeof startPushGateway>>;
  let alice: TestDevice;

  beforeAll(async () => {
    gw = await startPushGateway(redis, publisher, suite, { routes: echoRoutes });
    alice = await storedDevice("alice");
  });
  afterAll(() => suite.run());

  /** Opens a stream that must fail, and resolves its status (it must carry no event). */
  async function refused(request: ReturnType<typeof subscribeRequest>) {
    const stream = subscribe(gw.grpc, request, cleanup);
    const outcome = await stream.terminal();
    expect(stream.events).toEqual([]);
    return outcome;
  }

  it("answers UNAUTHENTICATED for an unknown session", async () => {
    expect(await refused(subscribeRequest(newDevice("alice")))).toEqual({
      status: "UNAUTHENTICATED",
      details: "device session not found",
    });
  });

  it("answers UNAUTHENTICATED for a signature by another key, or over other bytes", async () => {
    const badSignature = { status: "UNAUTHENTICATED", details: "invalid request signature" };
    expect(
      await refused(subscribeRequest(alice, { signingKey: newDeviceKey().privateKey })),
    ).toEqual(badSignature);
    // last_event_id is part of the signed bytes.
    const tampered = { ...subscribeRequest(alice), lastEventId: "1764028801000-0" };
    expect(await refused(tampered)).toEqual(badSignature);
  });

  it("answers UNAUTHENTICATED for a timestamp outside the clock skew, either way", async () => {
    const stale = {
      status: "UNAUTHENTICATED",
      details: "request timestamp outside allowed clock skew",
    };
    expect(await refused(subscribeRequest(alice, { timestampMs: Date.now() - 31_000 }))).toEqual(
      stale,
    );
    expect(await refused(subscribeRequest(alice, { timestampMs: Date.now() + 31_000 }))).toEqual(
      stale,
    );
  });

  it("answers FAILED_PRECONDITION for a revoked session", async () => {
    const revoked = await storedDevice("alice", publisher, "revoked");
    expect(await refused(subscribeRequest(revoked))).toEqual(REVOKED);
  });

  it("answers INVALID_ARGUMENT for a malformed last_event_id and accepts a stream id", async () => {
    const outcome = await refused(subscribeRequest(alice, { lastEventId: "yesterday" }));
    expect(outcome.status).toBe("INVALID_ARGUMENT");
    expect(outcome.details).toContain("last_event_id");

    // A valid resume point is accepted; the stream still carries live events only.
    const earlier = await gw.publish({ userId: "alice", eventType: "demo.earlier" });
    await expectMetric(gw.admin, 'gateway_client_events_total{result="no_subscriber"}', 1);
    const resumed = subscribe(gw.grpc, subscribeRequest(alice, { lastEventId: "0-0" }), cleanup);
    const [bootstrap] = await resumed.received(1);
    expect(bootstrap).toMatchObject({ eventType: "gateway.server_time", eventId: earlier });
    const live = await gw.publish({ userId: "alice", eventType: "demo.live" });
    expect(eventIds((await resumed.received(2)).slice(1))).toEqual([live]);
  });

  // ExecuteCommand and SubscribeEvents reserve request_ids in one namespace
  // per session: an id used by either cannot be used again by the other.
  it("answers ALREADY_EXISTS for a replayed request_id, shared with ExecuteCommand", async () => {
    const replayed = { status: "ALREADY_EXISTS", details: "request_id already used" };

    const open = subscribe(gw.grpc, subscribeRequest(alice, { requestId: "sub-once" }), cleanup);
    await open.received(1);
    expect(await refused(subscribeRequest(alice, { requestId: "sub-once" }))).toEqual(replayed);

    expect(await execute(gw.grpc, alice, cleanup, { requestId: "cmd-first" })).toEqual({
      status: "OK",
      details: "ok",
    });
    expect(await refused(subscribeRequest(alice, { requestId: "cmd-first" }))).toEqual(replayed);

    const streamFirst = subscribe(
      gw.grpc,
      subscribeRequest(alice, { requestId: "sub-first" }),
      cleanup,
    );
    await streamFirst.received(1);
    expect(await execute(gw.grpc, alice, cleanup, { requestId: "sub-first" })).toEqual(replayed);
  });

  it("counts each refusal in /metrics by reason and status", async () => {
    const text = await scrapeMetrics(gw.admin);
    expect(metricValue(text, 'gateway_auth_failures_total{reason="unknown_session"}')).toBe(1);
    expect(metricValue(text, 'gateway_auth_failures_total{reason="bad_signature"}')).toBe(2);
    expect(metricValue(text, 'gateway_auth_failures_total{reason="stale_timestamp"}')).toBe(2);
    expect(metricValue(text, 'gateway_auth_failures_total{reason="revoked"}')).toBe(1);
    expect(metricValue(text, 'gateway_auth_failures_total{reason="invalid_argument"}')).toBe(1);
    expect(metricValue(text, 'gateway_auth_failures_total{reason="replayed"}')).toBe(3);
    expect(
      metricValue(
        text,
        'gateway_grpc_requests_total{method="SubscribeEvents",code="UNAUTHENTICATED"}',
      ),
    ).toBe(5);
    expect(
      metricValue(
        text,
        'gateway_grpc_requests_total{method="SubscribeEvents",code="ALREADY_EXISTS"}',
      ),
    ).toBe(2);
  });
});

describe("fan-out", () => {
  it("delivers a user's event to every session of that user, byte-exact, signed once, with the publisher's request_id", async () => {
    const gw = await startPushGateway(redis, publisher, cleanup);
    const alicePhone = await storedDevice("alice");
    const aliceLaptop = await storedDevice("alice");
    const bobPhone = await storedDevice("bob");
    const phone = subscribe(gw.grpc, subscribeRequest(alicePhone), cleanup);
    const laptop = subscribe(gw.grpc, subscribeRequest(aliceLaptop), cleanup);
    const bob = subscribe(gw.grpc, subscribeRequest(bobPhone), cleanup);
    await Promise.all([phone.received(1), laptop.received(1), bob.received(1)]);

    const id = await gw.publish({
      userId: "alice",
      eventType: "chat.message",
      payload: ALL_BYTES,
      requestId: "corr-42",
    });
    const [, onPhone] = await phone.received(2);
    const [, onLaptop] = await laptop.received(2);
    expect(onPhone).toMatchObject({
      eventId: id,
      eventType: "chat.message",
      requestId: "corr-42",
      keyId: vectors.gateway_key.key_id,
    });
    expect(Buffer.from(onPhone!.payload).equals(ALL_BYTES)).toBe(true);
    expect(hasValidGatewaySignature(onPhone!)).toBe(true);
    // Signed once: both streams carry the very same signed event.
    expect(onLaptop).toEqual(onPhone);
    expect(Buffer.from(onLaptop!.signature).equals(Buffer.from(onPhone!.signature))).toBe(true);

    // Bob's stream got nothing of Alice's: his next event is his own.
    const forBob = await gw.publish({ userId: "bob", eventType: "chat.message" });
    expect(eventIds((await bob.received(2)).slice(1))).toEqual([forBob]);
    const forAlice = await gw.publish({ userId: "alice", eventType: "chat.message" });
    expect(eventIds((await phone.received(3)).slice(1))).toEqual([id, forAlice]);
    expect(eventIds((await laptop.received(3)).slice(1))).toEqual([id, forAlice]);

    const text = await scrapeMetrics(gw.admin);
    expect(metricValue(text, 'gateway_client_events_total{result="delivered"}')).toBe(3);
    expect(metricValue(text, "gateway_push_events_delivered_total")).toBe(5);
    expect(metricValue(text, "gateway_push_streams_active")).toBe(3);
    const lag = text
      .split("\n")
      .find((line) =>
        line.startsWith(`gateway_stream_reader_lag_seconds{stream="${gw.clientEvents}"} `),
      );
    expect(lag, "the client-events reader's lag gauge").toBeDefined();
    expect(Number.isFinite(Number(lag?.split(" ")[1]))).toBe(true);
  });

  it("delivers a session-targeted event only to that session's streams, and only when the user matches", async () => {
    const gw = await startPushGateway(redis, publisher, cleanup);
    const alicePhone = await storedDevice("alice");
    const aliceLaptop = await storedDevice("alice");
    const phoneA = subscribe(gw.grpc, subscribeRequest(alicePhone), cleanup);
    const phoneB = subscribe(gw.grpc, subscribeRequest(alicePhone), cleanup);
    const laptop = subscribe(gw.grpc, subscribeRequest(aliceLaptop), cleanup);
    await Promise.all([phoneA.received(1), phoneB.received(1), laptop.received(1)]);

    const targeted = await gw.publish({
      userId: "alice",
      deviceSessionId: alicePhone.deviceSessionId,
      eventType: "device.ping",
      requestId: "corr-ping",
    });
    // Another user's id with Alice's session: no stream matches both.
    await gw.publish({
      userId: "mallory",
      deviceSessionId: alicePhone.deviceSessionId,
      eventType: "device.ping",
    });
    const everyone = await gw.publish({ userId: "alice", eventType: "demo.marker" });

    for (const stream of [phoneA, phoneB]) {
      const events = (await stream.received(3)).slice(1);
      expect(eventIds(events)).toEqual([targeted, everyone]);
      expect(events[0]?.requestId).toBe("corr-ping");
      expect(events.every(hasValidGatewaySignature)).toBe(true);
    }
    expect(eventIds((await laptop.received(2)).slice(1))).toEqual([everyone]);
    expect(await metric(gw.admin, 'gateway_client_events_total{result="no_subscriber"}')).toBe(1);
  });

  // Publishers in other languages write the entry themselves: §6 field names,
  // any field order, optional fields absent or empty, the payload as raw bytes.
  it("delivers events a non-TypeScript publisher adds with a raw XADD", async () => {
    const gw = await startPushGateway(redis, publisher, cleanup);
    const alicePhone = await storedDevice("alice");
    const aliceLaptop = await storedDevice("alice");
    const phone = subscribe(gw.grpc, subscribeRequest(alicePhone), cleanup);
    const laptop = subscribe(gw.grpc, subscribeRequest(aliceLaptop), cleanup);
    await Promise.all([phone.received(1), laptop.received(1)]);

    // redis-cli -x reads the last argument (the payload) raw from stdin.
    const cliOutput = await redisCli(
      [
        "-x",
        "XADD",
        gw.clientEvents,
        "*",
        "event_type",
        "raw.binary",
        "request_id",
        "corr-cli",
        "user_id",
        "alice",
        "payload",
      ],
      ALL_BYTES,
    );
    const cliId = cliOutput.trim();
    expect(cliId).toMatch(/^\d+-\d+$/);

    const targeted = await publisher.xadd(
      gw.clientEvents,
      "*",
      "user_id",
      "alice",
      "device_session_id",
      alicePhone.deviceSessionId,
      "event_type",
      "raw.targeted",
    );
    // A publisher that always writes every field leaves the unused ones empty.
    const allFields = await publisher.xadd(
      gw.clientEvents,
      "*",
      "user_id",
      "alice",
      "device_session_id",
      "",
      "event_type",
      "raw.all_fields",
      "payload",
      "",
      "request_id",
      "",
    );

    const onPhone = (await phone.received(4)).slice(1);
    const onLaptop = (await laptop.received(3)).slice(1);
    expect(eventIds(onPhone)).toEqual([cliId, targeted, allFields]);
    expect(eventIds(onLaptop)).toEqual([cliId, allFields]);
    expect(onPhone[0]).toMatchObject({ eventType: "raw.binary", requestId: "corr-cli" });
    expect(Buffer.from(onPhone[0]!.payload).equals(ALL_BYTES)).toBe(true);
    expect(onPhone[1]).toMatchObject({ eventType: "raw.targeted", requestId: "" });
    expect(onPhone[2]).toMatchObject({ eventType: "raw.all_fields", requestId: "" });
    expect(onPhone[2]?.payload).toHaveLength(0);
    expect([...onPhone, ...onLaptop].every(hasValidGatewaySignature)).toBe(true);
  });
});

describe("malformed client events", () => {
  it("drops each malformed entry, counts and logs it with its id, and delivers the valid one after it", async () => {
    const gw = await startPushGateway(redis, publisher, cleanup, {
      env: { GATEWAY_MAX_EVENT_PAYLOAD_BYTES: "1024" },
    });
    const alice = await storedDevice("alice");
    const stream = subscribe(gw.grpc, subscribeRequest(alice), cleanup);
    await stream.received(1);

    const add = (...fields: (string | Buffer)[]) =>
      publisher.xadd(gw.clientEvents, "*", ...fields) as Promise<string>;
    const malformed = [
      await add("event_type", "demo.no_user", "payload", "x"),
      await add("user_id", "alice", "event_type", "not a type"),
      await add("user_id", "alice"),
      await add("user_id", "alice", "event_type", "demo.big", "payload", Buffer.alloc(1025, 7)),
    ];
    const valid = await add(
      "user_id",
      "alice",
      "event_type",
      "demo.at_limit",
      "payload",
      Buffer.alloc(1024, 9),
    );

    const [, delivered] = await stream.received(2);
    expect(delivered).toMatchObject({ eventId: valid, eventType: "demo.at_limit" });
    expect(Buffer.from(delivered!.payload).equals(Buffer.alloc(1024, 9))).toBe(true);
    expect(hasValidGatewaySignature(delivered!)).toBe(true);

    const text = await scrapeMetrics(gw.admin);
    expect(metricValue(text, 'gateway_client_events_total{result="malformed"}')).toBe(4);
    expect(metricValue(text, 'gateway_client_events_total{result="delivered"}')).toBe(1);
    for (const id of malformed) {
      expect(warnLinesNaming(gw.gateway.logger.lines, id), `a warn line naming ${id}`).toHaveLength(
        1,
      );
    }
    // The stream is still live after the dropped entries.
    const later = await gw.publish({ userId: "alice", eventType: "demo.later" });
    expect(eventIds((await stream.received(3)).slice(1))).toEqual([valid, later]);
  });
});

describe("revocation", () => {
  it("ends exactly the revoked session's streams, refuses its new calls and keeps the user's other session", async () => {
    const gw = await startPushGateway(redis, publisher, cleanup, { routes: echoRoutes });
    const alicePhone = newDevice("alice");
    const aliceLaptop = newDevice("alice");
    await gw.snapshot(alicePhone, "active");
    await gw.snapshot(aliceLaptop, "active");
    const phoneA = subscribe(gw.grpc, subscribeRequest(alicePhone), cleanup);
    const phoneB = subscribe(gw.grpc, subscribeRequest(alicePhone), cleanup);
    const laptop = subscribe(gw.grpc, subscribeRequest(aliceLaptop), cleanup);
    await Promise.all([phoneA.received(1), phoneB.received(1), laptop.received(1)]);

    await gw.snapshot(alicePhone, "revoked");
    expect(await phoneA.terminal()).toEqual(REVOKED);
    expect(await phoneB.terminal()).toEqual(REVOKED);
    expect(phoneA.events).toHaveLength(1);
    expect(phoneB.events).toHaveLength(1);

    const after = await gw.publish({ userId: "alice", eventType: "demo.after_revoke" });
    expect(eventIds((await laptop.received(2)).slice(1))).toEqual([after]);
    expect(laptop.ended).toBeUndefined();

    expect(await execute(gw.grpc, alicePhone, cleanup)).toEqual(REVOKED);
    const reopened = subscribe(gw.grpc, subscribeRequest(alicePhone), cleanup);
    expect(await reopened.terminal()).toEqual(REVOKED);
    expect(reopened.events).toEqual([]);
    expect(await execute(gw.grpc, aliceLaptop, cleanup)).toEqual({ status: "OK", details: "ok" });

    const text = await scrapeMetrics(gw.admin);
    expect(metricValue(text, 'gateway_push_stream_closes_total{reason="revoked"}')).toBe(2);
    expect(metricValue(text, 'gateway_session_events_total{result="applied"}')).toBe(3);
    expect(metricValue(text, "gateway_push_streams_active")).toBe(1);
    expect(metricValue(text, 'gateway_client_events_total{result="delivered"}')).toBe(1);
    const promtool = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
    expect(
      promtool.error,
      "promtool (Debian package prometheus) must be installed",
    ).toBeUndefined();
    expect(promtool.stdout + promtool.stderr).toBe("");
    expect(promtool.status).toBe(0);
  });

  it("applies a revoke that a non-TypeScript publisher writes with MULTI, HSET and a raw XADD", async () => {
    const gw = await startPushGateway(redis, publisher, cleanup, { routes: echoRoutes });
    const tablet = await storedDevice("carol");
    const phone = await storedDevice("carol");
    const tabletStream = subscribe(gw.grpc, subscribeRequest(tablet), cleanup);
    const phoneStream = subscribe(gw.grpc, subscribeRequest(phone), cleanup);
    await Promise.all([tabletStream.received(1), phoneStream.received(1)]);

    // Standard base64 with padding, as many languages encode by default.
    const key = Buffer.from(tablet.publicKeyText, "base64url").toString("base64");
    const revokedAt = String(Date.now());
    const replies = await publisher
      .multi()
      .hset(createKeyspace().sessionKey(tablet.deviceSessionId), {
        user_id: "carol",
        client_public_key: key,
        status: "revoked",
        revoked_at_ms: revokedAt,
        updated_at_ms: revokedAt,
      })
      .xadd(
        gw.sessionEvents,
        "MAXLEN",
        "~",
        "100000",
        "*",
        "status",
        "revoked",
        "client_public_key",
        key,
        "user_id",
        "carol",
        "device_session_id",
        tablet.deviceSessionId,
        "revoked_at_ms",
        revokedAt,
      )
      .exec();
    expect(replies?.every(([error]) => error === null)).toBe(true);

    expect(await tabletStream.terminal()).toEqual(REVOKED);
    expect(await execute(gw.grpc, tablet, cleanup)).toEqual(REVOKED);
    const later = await gw.publish({ userId: "carol", eventType: "demo.later" });
    expect(eventIds((await phoneStream.received(2)).slice(1))).toEqual([later]);
    expect(await metric(gw.admin, 'gateway_push_stream_closes_total{reason="revoked"}')).toBe(1);
  });

  it("drops a malformed snapshot, counts and logs it with its id, and leaves the session as it was", async () => {
    const gw = await startPushGateway(redis, publisher, cleanup, { routes: echoRoutes });
    const alice = await storedDevice("alice");
    const stream = subscribe(gw.grpc, subscribeRequest(alice), cleanup);
    await stream.received(1);

    const lowOrderKey = Buffer.from(lowOrderKeys[0]!, "hex").toString("base64url");
    const snapshot = (...fields: string[]) =>
      publisher.xadd(gw.sessionEvents, "*", ...fields) as Promise<string>;
    const lowOrder = await snapshot(
      "device_session_id",
      alice.deviceSessionId,
      "user_id",
      "alice",
      "client_public_key",
      lowOrderKey,
      "status",
      "revoked",
    );
    const noStatus = await snapshot(
      "device_session_id",
      alice.deviceSessionId,
      "user_id",
      "alice",
      "client_public_key",
      alice.publicKeyText,
    );
    await expectMetric(gw.admin, 'gateway_session_events_total{result="malformed"}', 2);
    for (const id of [lowOrder, noStatus]) {
      expect(warnLinesNaming(gw.gateway.logger.lines, id), `a warn line naming ${id}`).toHaveLength(
        1,
      );
    }

    const later = await gw.publish({ userId: "alice", eventType: "demo.still_open" });
    expect(eventIds((await stream.received(2)).slice(1))).toEqual([later]);
    expect(stream.ended).toBeUndefined();
    expect(await execute(gw.grpc, alice, cleanup)).toEqual({ status: "OK", details: "ok" });
    expect(await metric(gw.admin, 'gateway_push_stream_closes_total{reason="revoked"}')).toBe(0);
  });

  it("re-activates a session with a later active snapshot: the last writer wins", async () => {
    const gw = await startPushGateway(redis, publisher, cleanup, { routes: echoRoutes });
    const alice = newDevice("alice");
    await gw.snapshot(alice, "active");
    const first = subscribe(gw.grpc, subscribeRequest(alice), cleanup);
    await first.received(1);

    await gw.snapshot(alice, "revoked");
    expect(await first.terminal()).toEqual(REVOKED);
    expect(await execute(gw.grpc, alice, cleanup)).toEqual(REVOKED);

    await gw.snapshot(alice, "active");
    await expect
      .poll(() => execute(gw.grpc, alice, cleanup), { timeout: SAFETY_MS, interval: 20 })
      .toEqual({ status: "OK", details: "ok" });
    const second = subscribe(gw.grpc, subscribeRequest(alice), cleanup);
    await second.received(1);
    const event = await gw.publish({ userId: "alice", eventType: "demo.welcome_back" });
    expect(eventIds((await second.received(2)).slice(1))).toEqual([event]);

    // Back to back, the later snapshot decides.
    await gw.snapshot(alice, "active");
    await gw.snapshot(alice, "revoked");
    expect(await second.terminal()).toEqual(REVOKED);
    await expectMetric(gw.admin, 'gateway_session_events_total{result="applied"}', 5);
    expect(await execute(gw.grpc, alice, cleanup)).toEqual(REVOKED);
  });

  // §6: no interleaving of a subscribe with a revoke of its session may leave
  // the stream open. The connection is up before each round, so the call and
  // the revoke really overlap; each round varies which side starts first and
  // by how much, from the revoke landing before authentication to after the
  // bootstrap event.
  it("never leaves a stream open when a revoke races its subscribe (30 rounds)", async () => {
    const gw = await startPushGateway(redis, publisher, cleanup);
    const channel = await connectedChannel(gw.grpc, cleanup);
    const rounds = 30;
    const devices: TestDevice[] = [];
    const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    for (let round = 0; round < rounds; round++) {
      const device = newDevice("racer");
      devices.push(device);
      if (round % 2 === 0) await putSession(publisher, device);
      else await gw.snapshot(device, "active");
      const request = subscribeRequest(device);

      let stream: Subscription | undefined;
      const open = () => {
        stream = subscribe(channel, request, cleanup);
        return stream;
      };
      const revoke = () => gw.snapshot(device, "revoked");
      let revoked: Promise<string>;
      switch (round % 6) {
        case 0:
          revoked = revoke();
          open();
          break;
        case 1:
          open();
          revoked = revoke();
          break;
        case 2:
          open();
          await new Promise((resolve) => setImmediate(resolve));
          revoked = revoke();
          break;
        case 3:
        case 4:
          open();
          await pause((round % 6) - 2);
          revoked = revoke();
          break;
        default:
          await open()
            .received(1)
            .catch(() => undefined);
          revoked = revoke();
      }
      await revoked;
      const outcome = await stream!.terminal();
      expect(outcome, `round ${round}`).toEqual(REVOKED);
      // Refused at open (no event) or ended after the bootstrap event.
      expect(stream!.events.length, `round ${round}`).toBeLessThanOrEqual(1);
      for (const event of stream!.events) {
        expect(event.eventType).toBe("gateway.server_time");
        expect(hasValidGatewaySignature(event)).toBe(true);
      }
    }

    await expectMetric(gw.admin, "gateway_push_streams_active", 0);
    const text = await scrapeMetrics(gw.admin);
    expect(
      metricValue(text, 'gateway_push_stream_closes_total{reason="revoked"}') +
        metricValue(text, 'gateway_auth_failures_total{reason="revoked"}'),
    ).toBe(rounds);
    expect(
      metricValue(
        text,
        'gateway_grpc_requests_total{method="SubscribeEvents",code="FAILED_PRECONDITION"}',
      ),
    ).toBe(rounds);
    const outcomes = await Promise.all(
      devices.map((device) => execute(gw.grpc, device, cleanup, { messageType: "demo.none" })),
    );
    expect(outcomes.every((outcome) => outcome.status === "FAILED_PRECONDITION")).toBe(true);
  });
});

describe("overflow", () => {
  // The blocked client's window is zero: nothing it is sent leaves, so every
  // event waits in its queue. Eight fit; the ninth overflows it.
  it("ends a stream whose client stops reading with RESOURCE_EXHAUSTED once more than the queue size wait, while another session's stream gets every event in order", async () => {
    const gw = await startPushGateway(redis, publisher, cleanup, {
      env: { GATEWAY_PUSH_STREAM_QUEUE_SIZE: "8" },
    });
    const alicePhone = await storedDevice("alice");
    const aliceLaptop = await storedDevice("alice");
    const stalled = blockedSubscription(gw.grpc, subscribeRequest(alicePhone), cleanup);
    await stalled.responded;
    const healthy = subscribe(gw.grpc, subscribeRequest(aliceLaptop), cleanup);
    await healthy.received(1);

    const published: string[] = [];
    const publishOne = async () => {
      const id = await gw.publish({
        userId: "alice",
        eventType: "demo.tick",
        payload: Buffer.alloc(64, published.length),
      });
      published.push(id);
      const events = await healthy.received(published.length + 1);
      expect(events[published.length]?.eventId).toBe(id);
    };

    for (let index = 0; index < 8; index++) await publishOne();
    let text = await scrapeMetrics(gw.admin);
    expect(metricValue(text, 'gateway_push_stream_closes_total{reason="overflow"}')).toBe(0);
    expect(metricValue(text, "gateway_push_streams_active")).toBe(2);

    await publishOne();
    text = await scrapeMetrics(gw.admin);
    expect(metricValue(text, 'gateway_push_stream_closes_total{reason="overflow"}')).toBe(1);
    expect(metricValue(text, "gateway_push_streams_active")).toBe(1);

    for (let index = 0; index < 3; index++) await publishOne();
    expect(eventIds(healthy.events.slice(1))).toEqual(published);
    expect(healthy.events.every(hasValidGatewaySignature)).toBe(true);
    expect(healthy.ended).toBeUndefined();

    stalled.resume();
    const { status, events } = await stalled.end();
    expect(status).toEqual({ status: "RESOURCE_EXHAUSTED", details: "push stream overflowed" });
    expect(events.map((event) => event.eventType)).toEqual(["gateway.server_time"]);
    expect(
      gw.gateway.logger.lines.some((line) => line.startsWith("warn push stream overflowed")),
    ).toBe(true);
  });

  it("overflows a gRPC client that pauses reading, and only that stream", async () => {
    const gw = await startPushGateway(redis, publisher, cleanup, {
      env: { GATEWAY_PUSH_STREAM_QUEUE_SIZE: "8" },
    });
    const alicePhone = await storedDevice("alice");
    const aliceLaptop = await storedDevice("alice");
    const paused = pausedSubscription(gw.grpc, subscribeRequest(alicePhone), cleanup);
    await paused.bootstrap;
    const healthy = subscribe(gw.grpc, subscribeRequest(aliceLaptop), cleanup);
    await healthy.received(1);

    const published: string[] = [];
    const overflowed = () =>
      metric(gw.admin, 'gateway_push_stream_closes_total{reason="overflow"}');
    // One event at a time, each taken by the healthy client before the next:
    // only the paused stream can fall behind. The bound is a safety net.
    while ((await overflowed()) === 0) {
      if (published.length >= 300) throw new Error("the paused stream never overflowed");
      published.push(
        await gw.publish({
          userId: "alice",
          eventType: "demo.tick",
          payload: Buffer.alloc(16_384),
        }),
      );
      await healthy.received(published.length + 1);
    }
    for (let index = 0; index < 3; index++) {
      published.push(await gw.publish({ userId: "alice", eventType: "demo.tick" }));
      await healthy.received(published.length + 1);
    }
    expect(eventIds(healthy.events.slice(1))).toEqual(published);
    expect(healthy.ended).toBeUndefined();

    paused.resume();
    expect(await paused.status).toEqual({
      status: "RESOURCE_EXHAUSTED",
      details: "push stream overflowed",
    });
    const got = eventIds(paused.events.slice(1));
    expect(got).toEqual(published.slice(0, got.length));
    expect(got.length).toBeLessThan(published.length);
  });
});

describe("stream caps", () => {
  it("refuses a stream past the per-session cap or the process cap, and opens one once a client cancels", async () => {
    const gw = await startPushGateway(redis, publisher, cleanup, {
      env: { GATEWAY_MAX_STREAMS_PER_SESSION: "2", GATEWAY_MAX_PUSH_STREAMS: "3" },
    });
    const tooMany = {
      status: "RESOURCE_EXHAUSTED",
      details: "too many streams for this device session",
    };
    const capacity = { status: "RESOURCE_EXHAUSTED", details: "gateway stream capacity reached" };
    const phone = await storedDevice("alice");
    const laptop = await storedDevice("alice");
    const tablet = await storedDevice("bob");
    const open = async (device: TestDevice) => {
      const stream = subscribe(gw.grpc, subscribeRequest(device), cleanup);
      await stream.received(1);
      return stream;
    };
    const refused = async (device: TestDevice) => {
      const stream = subscribe(gw.grpc, subscribeRequest(device), cleanup);
      const outcome = await stream.terminal();
      expect(stream.events).toEqual([]);
      return outcome;
    };

    const phoneFirst = await open(phone);
    await open(phone);
    expect(await refused(phone)).toEqual(tooMany);
    const laptopStream = await open(laptop);
    expect(await refused(tablet)).toEqual(capacity);
    expect(await refused(phone)).toEqual(tooMany);

    phoneFirst.cancel();
    await expectMetric(gw.admin, "gateway_push_streams_active", 2);
    await expectMetric(gw.admin, 'gateway_push_stream_closes_total{reason="client"}', 1);
    await open(phone);

    laptopStream.cancel();
    await expectMetric(gw.admin, "gateway_push_streams_active", 2);
    await open(tablet);
    expect(await metric(gw.admin, "gateway_push_streams_active")).toBe(3);
  });
});

describe("shutdown", () => {
  // A unary call held by its route keeps the gRPC step of the shutdown
  // waiting, so the listeners stay up while the earlier steps are observed.
  it("ends open streams UNAVAILABLE on stop(), answers /readyz 503 and refuses new calls once shutdown begins", async () => {
    let entered: () => void = () => {};
    const holding = new Promise<void>((resolve) => {
      entered = resolve;
    });
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const gw = await startPushGateway(redis, publisher, cleanup, {
      env: { GATEWAY_SHUTDOWN_TIMEOUT: "20s" },
      routes: {
        "demo.hold": async () => {
          entered();
          await released;
          return { resultCode: "released" };
        },
      },
    });
    cleanup.defer(() => release());
    const alice = await storedDevice("alice");
    const bob = await storedDevice("bob");
    const carol = await storedDevice("carol");
    const aliceStream = subscribe(gw.grpc, subscribeRequest(alice), cleanup);
    const bobStream = subscribe(gw.grpc, subscribeRequest(bob), cleanup);
    const stalled = blockedSubscription(gw.grpc, subscribeRequest(carol), cleanup);
    await Promise.all([aliceStream.received(1), bobStream.received(1), stalled.responded]);
    const ready = await fetch(`http://${gw.publicHttp}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: "ready" });

    const client = grpcClient(gw.grpc, cleanup);
    const held = client.executeCommand(executeRequest(alice, { messageType: "demo.hold" }));
    await holding;

    const stopping = gw.gateway.stop();
    const notReady = await fetch(`http://${gw.publicHttp}/readyz`);
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toEqual({ status: "not_ready" });

    expect(await aliceStream.terminal()).toEqual(SHUTTING_DOWN);
    expect(await bobStream.terminal()).toEqual(SHUTTING_DOWN);
    const late = subscribe(gw.grpc, subscribeRequest(alice), cleanup);
    expect(await late.terminal()).toEqual(SHUTTING_DOWN);
    expect(late.events).toEqual([]);
    expect(await execute(gw.grpc, alice, cleanup)).toEqual(SHUTTING_DOWN);

    const text = await scrapeMetrics(gw.admin);
    expect(metricValue(text, 'gateway_push_stream_closes_total{reason="shutdown"}')).toBe(3);
    expect(metricValue(text, "gateway_push_streams_active")).toBe(0);

    // The stalled client reads again and takes its status behind the bootstrap event.
    stalled.resume();
    const { status, events } = await stalled.end();
    expect(status).toEqual(SHUTTING_DOWN);
    expect(events.map((event) => event.eventType)).toEqual(["gateway.server_time"]);

    release();
    expect((await held).resultCode).toBe("released");
    await stopping;
    const steps = [
      "shutdown: readiness set to not ready",
      "shutdown: stream readers stopped",
      "shutdown: push hub closed",
      "shutdown: gRPC server stopped",
    ].map((step) => gw.gateway.logger.lines.findIndex((line) => line.includes(step)));
    expect(steps.every((index) => index >= 0)).toBe(true);
    expect([...steps].sort((a, b) => a - b)).toEqual(steps);
  });

  it("the bin on SIGTERM: open streams end UNAVAILABLE and the process exits 0", async () => {
    const name = uniqueName("bin");
    const clientEvents = `${name}:client_events`;
    const { bin, grpc } = await startGatewayBin(redis, cleanup, {
      GATEWAY_CLIENT_EVENTS_REDIS_STREAM: clientEvents,
      GATEWAY_SESSION_EVENTS_REDIS_STREAM: `${name}:session_events`,
    });
    const phone = await storedDevice("alice");
    const laptop = await storedDevice("alice");
    const phoneStream = subscribe(grpc, subscribeRequest(phone), cleanup);
    const laptopStream = subscribe(grpc, subscribeRequest(laptop), cleanup);
    await Promise.all([phoneStream.received(1), laptopStream.received(1)]);
    const id = await publisher.xadd(clientEvents, "*", "user_id", "alice", "event_type", "demo.hi");
    expect(eventIds((await phoneStream.received(2)).slice(1))).toEqual([id]);
    expect(eventIds((await laptopStream.received(2)).slice(1))).toEqual([id]);

    bin.child.kill("SIGTERM");
    expect(await phoneStream.terminal()).toEqual(SHUTTING_DOWN);
    expect(await laptopStream.terminal()).toEqual(SHUTTING_DOWN);
    expect(await bin.exited).toBe(0);
    expect(bin.output()).toContain("shutdown: push hub closed");
    expect(bin.output()).toContain("shutdown complete");
  });
});

describe("Redis outage", () => {
  // Redis dies and comes back empty on the same port. The open stream does
  // not need Redis; the client-events reader reports the stream lost, reads on
  // after its old cursor (which the bootstrap of a new stream still carries)
  // and delivers what is published after the restart, whose `*` ids lie above
  // that cursor. Sessions are written as hashes only here, so the
  // session-events reader has nothing to lose and no open stream is re-checked.
  it("answers UNAVAILABLE while Redis is down, then keeps delivering to the stream that stayed open, and serves new streams", async () => {
    const own = await startRedis();
    cleanup.defer(() => own.stop());
    let client = own.client();
    cleanup.defer(() => client.disconnect());
    const gw = await startPushGateway(own, client, cleanup, { routes: echoRoutes });
    const cached = await storedDevice("carol", client);
    const uncached = await storedDevice("carol", client);
    const stream = subscribe(gw.grpc, subscribeRequest(cached), cleanup);
    await stream.received(1);

    const beforeOutage = await publishClientEvent(
      client,
      { userId: "carol", eventType: "demo.before" },
      { stream: gw.clientEvents },
    );
    expect(eventIds((await stream.received(2)).slice(1))).toEqual([beforeOutage]);

    client.disconnect();
    await own.kill();
    const sessionStoreDown = { status: "UNAVAILABLE", details: "session store unavailable" };
    const replayStoreDown = { status: "UNAVAILABLE", details: "replay store unavailable" };
    expect(await execute(gw.grpc, uncached, cleanup)).toEqual(sessionStoreDown);
    expect(await execute(gw.grpc, cached, cleanup)).toEqual(replayStoreDown);
    expect(await subscribe(gw.grpc, subscribeRequest(uncached), cleanup).terminal()).toEqual(
      sessionStoreDown,
    );
    expect(await subscribe(gw.grpc, subscribeRequest(cached), cleanup).terminal()).toEqual(
      replayStoreDown,
    );
    expect(stream.ended).toBeUndefined();

    await own.restart();
    client = own.client();
    await putSession(client, cached);
    await putSession(client, uncached);
    await expect
      .poll(
        () => gw.gateway.logger.lines.some((line) => line.startsWith("warn client events lost")),
        { timeout: SAFETY_MS, interval: 50 },
      )
      .toBe(true);

    await expect
      .poll(() => execute(gw.grpc, uncached, cleanup), { timeout: SAFETY_MS, interval: 50 })
      .toEqual({ status: "OK", details: "ok" });
    // The bootstrap carries the reader's cursor: after the lost gap, still the
    // last entry read before the outage (not 0-0), until an entry is read.
    const fresh = subscribe(gw.grpc, subscribeRequest(uncached), cleanup);
    const [bootstrap] = await fresh.received(1);
    expect(bootstrap).toMatchObject({ eventType: "gateway.server_time", eventId: beforeOutage });

    const afterRestart = await publishClientEvent(
      client,
      { userId: "carol", eventType: "demo.after" },
      { stream: gw.clientEvents },
    );
    expect(BigInt(afterRestart.split("-")[0]!)).toBeGreaterThan(
      BigInt(beforeOutage.split("-")[0]!),
    );
    const [, , resumed] = await stream.received(3);
    expect(resumed).toMatchObject({ eventId: afterRestart, eventType: "demo.after" });
    expect(hasValidGatewaySignature(resumed!)).toBe(true);
    expect(eventIds((await fresh.received(2)).slice(1))).toEqual([afterRestart]);

    // Once the reader has read an entry, the bootstrap carries that entry's id.
    const later = subscribe(gw.grpc, subscribeRequest(cached), cleanup);
    const [laterBootstrap] = await later.received(1);
    expect(laterBootstrap).toMatchObject({
      eventType: "gateway.server_time",
      eventId: afterRestart,
    });
    const last = await publishClientEvent(
      client,
      { userId: "carol", eventType: "demo.last" },
      { stream: gw.clientEvents },
    );
    expect(eventIds((await later.received(2)).slice(1))).toEqual([last]);
    expect(eventIds((await fresh.received(3)).slice(1))).toEqual([afterRestart, last]);
    expect(eventIds((await stream.received(4)).slice(1))).toEqual([
      beforeOutage,
      afterRestart,
      last,
    ]);
  });

  // §6: snapshots the session-events reader had read are gone with the old
  // stream, so the node drops its cache and re-checks every open stream's
  // session against Redis; a session whose record did not come back is closed.
  it("closes an open stream whose session record did not survive the outage", async () => {
    const own = await startRedis();
    cleanup.defer(() => own.stop());
    let client = own.client();
    cleanup.defer(() => client.disconnect());
    const gw = await startPushGateway(own, client, cleanup);
    const device = newDevice("dave");
    await publishSessionSnapshot(
      client,
      {
        deviceSessionId: device.deviceSessionId,
        userId: device.userId,
        clientPublicKey: device.publicKeyText,
        status: "active",
      },
      { stream: gw.sessionEvents },
    );
    await expectMetric(gw.admin, 'gateway_session_events_total{result="applied"}', 1);
    const stream = subscribe(gw.grpc, subscribeRequest(device), cleanup);
    await stream.received(1);

    client.disconnect();
    await own.kill();
    await own.restart();
    client = own.client();

    expect(await stream.terminal()).toEqual(REVOKED);
    expect(stream.events).toHaveLength(1);
    expect(
      gw.gateway.logger.lines.some(
        (line) => line.startsWith("warn session events lost") && line.includes("re-checking"),
      ),
    ).toBe(true);
  });
});

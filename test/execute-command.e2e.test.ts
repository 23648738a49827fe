/**
 * ExecuteCommand end to end: a real redis-server, the gateway host on real
 * sockets, and a real gRPC client. Every §5 status and message as a device sees it.
 */
import { spawnSync } from "node:child_process";
import { type KeyObject, randomUUID } from "node:crypto";
import { credentials, makeGenericClientConstructor } from "@grpc/grpc-js";
import type { Redis } from "ioredis";
import { type Channel, ClientError, createChannel, createClientFactory, Status } from "nice-grpc";
import type { DeadlineOptions } from "nice-grpc-client-middleware-deadline";
import { deadlineMiddleware } from "nice-grpc-client-middleware-deadline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Routes } from "../handlers/ports.js";
import {
  type EdgeGatewayServiceClient,
  EdgeGatewayServiceDefinition,
  type ExecuteCommandRequest,
} from "../proto/gen/edgegateway/v1/edge_gateway.js";
import {
  importGatewayKey,
  signExecuteCommandRequest,
  verifyExecuteCommandResponse,
} from "../runtime/kit/device-client.js";
import { createKeyspace } from "../runtime/redis/keyspace.js";
import { putSession, startGateway } from "./support/gateway.js";
import { lowOrderKeys, newDeviceKey, vectors } from "./support/keys.js";
import { metric, metricValue } from "./support/push.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";

const SKEW_MS = 30_000;

let redis: TestRedis;
let admin: Redis;
let gateway: Awaited<ReturnType<typeof startGateway>>;
let channel: Channel;
let client: EdgeGatewayServiceClient<DeadlineOptions>;
let now = Date.now();
let routeCalls = 0;

const device = newDeviceKey();
const userId = "user-1";
const sessionId = "ds-active";

const routes: Routes = {
  "demo.echo": async (command) => {
    routeCalls += 1;
    return { resultCode: "ok", payload: command.payload };
  },
  "demo.whoami": async (command) => ({
    resultCode: "ok",
    payload: Buffer.from(
      JSON.stringify({ userId: command.userId, deviceSessionId: command.deviceSessionId }),
    ),
  }),
  "demo.fail": async () => {
    throw new Error("database password is hunter2");
  },
  "demo.slow": async (_command, ctx) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => resolve({ resultCode: "late" }), 10_000);
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(ctx.signal.reason);
      });
    }),
};

function request(
  fields: Partial<ExecuteCommandRequest> & { key?: KeyObject } = {},
): ExecuteCommandRequest {
  const { key, ...rest } = fields;
  const signed = signExecuteCommandRequest(
    {
      deviceSessionId: rest.deviceSessionId ?? sessionId,
      messageType: rest.messageType ?? "demo.echo",
      requestId: rest.requestId ?? randomUUID(),
      timestampMs: rest.timestampMs ?? now,
      payload: rest.payload ?? Buffer.from("hello"),
    },
    key ?? device.privateKey,
  );
  return { ...signed, ...rest };
}

async function expectStatus(call: Promise<unknown>, code: Status, message?: string) {
  const error = await call.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error, "the call should fail").toBeInstanceOf(ClientError);
  expect(Status[(error as ClientError).code]).toBe(Status[code]);
  if (message !== undefined) expect((error as ClientError).details).toBe(message);
}

beforeAll(async () => {
  redis = await startRedis();
  admin = redis.client();
  await putSession(admin, {
    deviceSessionId: sessionId,
    userId,
    publicKeyText: device.publicKeyText,
  });
  gateway = await startGateway(redis, { routes, now: () => now });
  channel = createChannel(gateway.addresses.grpc);
  client = createClientFactory()
    .use(deadlineMiddleware)
    .create(EdgeGatewayServiceDefinition, channel);
});

afterAll(async () => {
  channel?.close();
  await gateway?.stop();
  admin?.disconnect();
  await redis?.stop();
});

describe("ExecuteCommand", () => {
  it("routes a signed command and signs the response with the gateway key", async () => {
    now = Date.now();
    const sent = request({ payload: Buffer.from("ping") });
    const response = await client.executeCommand(sent);
    expect(response.resultCode).toBe("ok");
    expect(Buffer.from(response.payload).toString()).toBe("ping");
    expect(response.requestId).toBe(sent.requestId);
    expect(response.protocolVersion).toBe(1);
    expect(response.keyId).toBe(vectors.gateway_key.key_id);
    expect(response.timestampMs).toBe(now);
    await verifyExecuteCommandResponse(
      response,
      sessionId,
      importGatewayKey(vectors.gateway_key.public_key_base64url),
    );
  });

  it("passes the authenticated user and session to the route", async () => {
    const response = await client.executeCommand(request({ messageType: "demo.whoami" }));
    expect(JSON.parse(Buffer.from(response.payload).toString())).toEqual({
      userId,
      deviceSessionId: sessionId,
    });
  });

  it("answers INVALID_ARGUMENT for each shape rule", async () => {
    await expectStatus(
      client.executeCommand(request({ protocolVersion: 2 })),
      Status.INVALID_ARGUMENT,
      "protocol_version must be 1",
    );
    await expectStatus(
      client.executeCommand(request({ deviceSessionId: "bad/id" })),
      Status.INVALID_ARGUMENT,
      "device_session_id must be 1-128 characters of [A-Za-z0-9._:-]",
    );
    await expectStatus(
      client.executeCommand(request({ requestId: "" })),
      Status.INVALID_ARGUMENT,
      "request_id must be 1-128 characters of [A-Za-z0-9._:-]",
    );
    await expectStatus(
      client.executeCommand(request({ messageType: "a b" })),
      Status.INVALID_ARGUMENT,
      "message_type must be 1-128 characters of [A-Za-z0-9._:/-]",
    );
    await expectStatus(
      client.executeCommand(request({ signature: Buffer.alloc(63) })),
      Status.INVALID_ARGUMENT,
      "signature must be 64 bytes",
    );
    await expectStatus(
      client.executeCommand(request({ payload: Buffer.alloc(262_145) })),
      Status.INVALID_ARGUMENT,
      "payload exceeds 262144 bytes",
    );
  });

  it("refuses a message over the payload limit + 4 KiB at the transport", async () => {
    await expectStatus(
      client.executeCommand(request({ payload: Buffer.alloc(262_144 + 8192) })),
      Status.RESOURCE_EXHAUSTED,
    );
  });

  // grpc-js answers INTERNAL for bytes its deserializer cannot decode; the
  // contract wants INVALID_ARGUMENT.
  it("answers INVALID_ARGUMENT for request bytes that do not decode", async () => {
    const Raw = makeGenericClientConstructor({}, "Raw");
    const raw = new Raw(gateway.addresses.grpc, credentials.createInsecure());
    try {
      const error = await new Promise<{ code: number; details: string }>((resolve) => {
        raw.makeUnaryRequest(
          "/edgegateway.v1.EdgeGatewayService/ExecuteCommand",
          (value: Buffer) => value,
          (value: Buffer) => value,
          Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
          (err) => resolve(err as unknown as { code: number; details: string }),
        );
      });
      expect(error.code).toBe(Status.INVALID_ARGUMENT);
      expect(error.details).toBe("request message could not be decoded");
    } finally {
      raw.close();
    }
  });

  it("accepts timestamps exactly at both edges of the skew window and refuses one past them", async () => {
    now = Date.now();
    for (const offset of [-SKEW_MS, SKEW_MS]) {
      const response = await client.executeCommand(request({ timestampMs: now + offset }));
      expect(response.resultCode).toBe("ok");
    }
    for (const offset of [-(SKEW_MS + 1), SKEW_MS + 1]) {
      await expectStatus(
        client.executeCommand(request({ timestampMs: now + offset })),
        Status.UNAUTHENTICATED,
        "request timestamp outside allowed clock skew",
      );
    }
  });

  it("answers UNAUTHENTICATED for an unknown session", async () => {
    await expectStatus(
      client.executeCommand(request({ deviceSessionId: "ds-nobody" })),
      Status.UNAUTHENTICATED,
      "device session not found",
    );
  });

  it("answers UNAUTHENTICATED for a signature by another key", async () => {
    await expectStatus(
      client.executeCommand(request({ key: newDeviceKey().privateKey })),
      Status.UNAUTHENTICATED,
      "invalid request signature",
    );
  });

  it("answers UNAUTHENTICATED when a signed field was changed", async () => {
    const tampered = { ...request(), payload: Buffer.from("tampered") };
    await expectStatus(
      client.executeCommand(tampered),
      Status.UNAUTHENTICATED,
      "invalid request signature",
    );
  });

  it("treats a session whose key is low-order as no session, for all 14 encodings", async () => {
    expect(lowOrderKeys).toHaveLength(14);
    for (const [index, hex] of lowOrderKeys.entries()) {
      const deviceSessionId = `ds-low-order-${index}`;
      await putSession(admin, {
        deviceSessionId,
        userId,
        publicKeyText: Buffer.from(hex, "hex").toString("base64url"),
      });
      // The all-zero signature verifies under several low-order keys in Node's verifier.
      await expectStatus(
        client.executeCommand(request({ deviceSessionId, signature: Buffer.alloc(64) })),
        Status.UNAUTHENTICATED,
        "device session not found",
      );
    }
  });

  it("treats a session with a wrong-length key or a missing field as no session", async () => {
    await putSession(admin, {
      deviceSessionId: "ds-short",
      userId,
      publicKeyText: Buffer.alloc(31, 1).toString("base64"),
    });
    await expectStatus(
      client.executeCommand(request({ deviceSessionId: "ds-short" })),
      Status.UNAUTHENTICATED,
      "device session not found",
    );
    await admin.hset(createKeyspace().sessionKey("ds-partial"), {
      client_public_key: device.publicKeyText,
      status: "active",
    });
    await expectStatus(
      client.executeCommand(request({ deviceSessionId: "ds-partial" })),
      Status.UNAUTHENTICATED,
      "device session not found",
    );
  });

  it("answers FAILED_PRECONDITION for a revoked session", async () => {
    const revoked = newDeviceKey();
    await putSession(admin, {
      deviceSessionId: "ds-revoked",
      userId,
      publicKeyText: revoked.publicKeyText,
      status: "revoked",
    });
    await expectStatus(
      client.executeCommand(request({ deviceSessionId: "ds-revoked", key: revoked.privateKey })),
      Status.FAILED_PRECONDITION,
      "device session is revoked",
    );
  });

  it("answers ALREADY_EXISTS for a reused request_id and reserves the exact key and expiry", async () => {
    now = Date.now();
    const first = request({ requestId: "req-once" });
    await client.executeCommand(first);
    await expectStatus(
      client.executeCommand(request({ requestId: "req-once" })),
      Status.ALREADY_EXISTS,
      "request_id already used",
    );
    const ttl = await admin.pttl("gateway:replay:ds-active/req-once");
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(2 * SKEW_MS + 1000);
    expect(await admin.get("gateway:replay:ds-active/req-once")).toBe("1");
  });

  it("accepts exactly one of 20 concurrent identical requests", async () => {
    now = Date.now();
    const same = request({ requestId: "req-concurrent" });
    const before = routeCalls;
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, () => client.executeCommand(same)),
    );
    const accepted = results.filter((result) => result.status === "fulfilled");
    const refused = results.filter(
      (result) =>
        result.status === "rejected" &&
        (result.reason as ClientError).code === Status.ALREADY_EXISTS,
    );
    expect(accepted).toHaveLength(1);
    expect(refused).toHaveLength(19);
    expect(routeCalls - before).toBe(1);
  });

  it("answers UNIMPLEMENTED for a message type without a route", async () => {
    await expectStatus(
      client.executeCommand(request({ messageType: "billing/charge" })),
      Status.UNIMPLEMENTED,
      "no route for message_type billing/charge",
    );
  });

  it("answers INTERNAL with a generic message when a route throws", async () => {
    await expectStatus(
      client.executeCommand(request({ messageType: "demo.fail" })),
      Status.INTERNAL,
      "internal error",
    );
    expect(gateway.logger.lines.some((line) => line.startsWith("error route failed"))).toBe(true);
  });

  it("aborts the route's signal when the client's deadline passes", async () => {
    now = Date.now();
    await expectStatus(
      client.executeCommand(request({ messageType: "demo.slow" }), {
        deadline: new Date(Date.now() + 200),
      }),
      Status.DEADLINE_EXCEEDED,
    );
  });

  it("counts calls and auth failures in the admin /metrics, and promtool accepts the output", async () => {
    const response = await fetch(`http://${gateway.addresses.adminHttp}/metrics`);
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text).toMatch(/gateway_grpc_requests_total\{method="ExecuteCommand",code="OK"\} \d+/);
    expect(text).toMatch(
      /gateway_grpc_requests_total\{method="ExecuteCommand",code="UNAUTHENTICATED"\} \d+/,
    );
    // One from the reuse test, 19 from the concurrent one.
    expect(text).toMatch(/gateway_auth_failures_total\{reason="replayed"\} 20/);
    expect(text).toMatch(/gateway_auth_failures_total\{reason="stale_timestamp"\} 2/);
    expect(text).toMatch(/gateway_auth_failures_total\{reason="bad_signature"\} 2/);
    expect(text).toMatch(
      /gateway_grpc_request_duration_seconds_bucket\{le="[^"]+",method="ExecuteCommand"\}/,
    );
    // The replay reservation (SET) and the session read (HMGET), timed per command.
    expect(
      metricValue(text, 'gateway_redis_command_duration_seconds_count{command="set"}'),
    ).toBeGreaterThan(0);
    expect(
      metricValue(text, 'gateway_redis_command_duration_seconds_count{command="hmget"}'),
    ).toBeGreaterThan(0);
    expect(text).toContain("process_cpu_user_seconds_total");
    expect(text).not.toContain("nodejs_active_handles_total");
    const promtool = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
    if (promtool.error === undefined) {
      expect(promtool.stdout + promtool.stderr).toBe("");
      expect(promtool.status).toBe(0);
    } else {
      expect.fail("promtool is not installed (Debian package prometheus)");
    }
  });
});

describe("ExecuteCommand with Redis down", () => {
  // Redis is killed while the gateway serves: calls must fail closed with
  // UNAVAILABLE within the command timeout, then recover once Redis is back.
  it("answers UNAVAILABLE promptly, then serves again after Redis restarts", async () => {
    now = Date.now();
    const fresh = newDeviceKey();
    await putSession(admin, {
      deviceSessionId: "ds-outage",
      userId,
      publicKeyText: fresh.publicKeyText,
    });
    // Warm the session cache, so the replay reservation is what meets the outage.
    await client.executeCommand(request({ deviceSessionId: "ds-outage", key: fresh.privateKey }));
    admin.disconnect();
    await redis.kill();

    await expectStatus(
      client.executeCommand(request({ deviceSessionId: "ds-outage", key: fresh.privateKey }), {
        deadline: new Date(Date.now() + 3000),
      }),
      Status.UNAVAILABLE,
      "replay store unavailable",
    );
    await expectStatus(
      client.executeCommand(request({ deviceSessionId: "ds-uncached" }), {
        deadline: new Date(Date.now() + 3000),
      }),
      Status.UNAVAILABLE,
      "session store unavailable",
    );

    await redis.restart();
    admin = redis.client();
    await putSession(admin, {
      deviceSessionId: sessionId,
      userId,
      publicKeyText: device.publicKeyText,
    });
    await expect
      .poll(
        async () => {
          now = Date.now();
          return client.executeCommand(request()).then(
            (response) => response.resultCode,
            (error: ClientError) => Status[error.code],
          );
        },
        { timeout: 15_000, interval: 100 },
      )
      .toBe("ok");
  });

  // A hung Redis (SIGSTOP) keeps its connections open and answers nothing:
  // only the command timeout (1 s) turns the call into UNAVAILABLE. The 5 s
  // deadline is a safety net; without the timeout the call would end
  // DEADLINE_EXCEEDED instead. Probes stay 200: an outage is not a reason
  // to restart or drain the node.
  it("answers UNAVAILABLE while Redis hangs, keeps /healthz and /readyz at 200, counts redis_unavailable, then serves again", async () => {
    now = Date.now();
    const hung = newDeviceKey();
    await putSession(admin, {
      deviceSessionId: "ds-hung",
      userId,
      publicKeyText: hung.publicKeyText,
    });
    const call = () =>
      client.executeCommand(request({ deviceSessionId: "ds-hung", key: hung.privateKey }), {
        deadline: new Date(Date.now() + 5000),
      });

    const adminHttp = gateway.addresses.adminHttp ?? "";
    const redisUnavailable = 'gateway_auth_failures_total{reason="redis_unavailable"}';
    const unavailableBefore = await metric(adminHttp, redisUnavailable);

    redis.pause();
    try {
      await expectStatus(call(), Status.UNAVAILABLE, "session store unavailable");
      for (const path of ["/healthz", "/readyz"]) {
        const response = await fetch(`http://${gateway.addresses.publicHttp}${path}`);
        expect(response.status, path).toBe(200);
      }
      const unavailableNow = await metric(adminHttp, redisUnavailable);
      expect(unavailableNow).toBeGreaterThanOrEqual(1);
      expect(unavailableNow).toBeGreaterThan(unavailableBefore);
    } finally {
      redis.resume();
    }

    await expect
      .poll(
        async () => {
          now = Date.now();
          return call().then(
            (response) => response.resultCode,
            (error: ClientError) => Status[error.code],
          );
        },
        { timeout: 15_000, interval: 100 },
      )
      .toBe("ok");
  });
});

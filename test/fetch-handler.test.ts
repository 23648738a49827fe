/**
 * The fetch handler (contract §14): the §8 public routes and ExecuteCommand
 * over Connect unary, called with `new Request(...)` and no socket — first
 * over in-memory ports, then built from the environment against a real
 * redis-server, then as the worker-style example module.
 */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createStaticRouter } from "../handlers/router.js";
import {
  EdgeGatewayService,
  ExecuteCommandRequestSchema,
  type ExecuteCommandResponse,
  ExecuteCommandResponseSchema,
} from "../proto/gen-es/edgegateway/v1/edge_gateway_pb.js";
import { ConfigError } from "../runtime/config/config.js";
import {
  createFetchHandler,
  createFetchHandlerFromPorts,
  type FetchHandler,
  type FetchHandlerPorts,
} from "../runtime/host/fetch-handler.js";
import {
  importGatewayKey,
  signExecuteCommandRequest,
  verifyExecuteCommandResponse,
} from "../runtime/kit/device-client.js";
import { gatewayEnv, putSession } from "./support/gateway.js";
import { newDeviceKey, vectors } from "./support/keys.js";
import { spawnNode } from "./support/node-process.js";
import {
  createManualClock,
  createMemoryAuthUpstream,
  createMemoryReplayStore,
  createMemorySessionStore,
  vectorDevice,
  vectorSigner,
} from "./support/ports.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";
import { tempDir } from "./support/temp-dir.js";

const EXECUTE_COMMAND_URL = "http://gateway.test/edgegateway.v1.EdgeGatewayService/ExecuteCommand";
const NOW = 1_767_000_000_000;
const gatewayKey = importGatewayKey(vectors.gateway_key.public_key_base64url);

/** A connect-web client whose requests go straight to `handler.fetch`, with no socket. */
function clientOf(handler: FetchHandler, protocol: "connect" | "grpc-web" = "connect") {
  const options = {
    baseUrl: "http://gateway.test",
    useBinaryFormat: true,
    fetch: (input: string | URL | Request, init?: RequestInit) =>
      handler.fetch(new Request(input, init)),
  };
  return createClient(
    EdgeGatewayService,
    protocol === "connect" ? createConnectTransport(options) : createGrpcWebTransport(options),
  );
}

/** A signed request message of `deviceSessionId`, signed by the vectors' device key unless told. */
function signedRequest(
  fields: { deviceSessionId?: string; messageType?: string; timestampMs?: number } = {},
  key = vectorDevice.privateKey,
) {
  const signed = signExecuteCommandRequest(
    {
      deviceSessionId: fields.deviceSessionId ?? "ds-1",
      messageType: fields.messageType ?? "demo.echo",
      requestId: randomUUID(),
      timestampMs: fields.timestampMs ?? NOW,
      payload: Buffer.from("hello"),
    },
    key,
  );
  return { ...signed, timestampMs: BigInt(signed.timestampMs) };
}

async function verify(response: ExecuteCommandResponse, deviceSessionId: string) {
  await verifyExecuteCommandResponse(
    {
      ...response,
      timestampMs: Number(response.timestampMs),
      payload: Buffer.from(response.payload),
      signature: Buffer.from(response.signature),
    },
    deviceSessionId,
    gatewayKey,
  );
}

/** The `error.code` of a §8 envelope answer. */
async function envelopeCode(response: Response): Promise<string> {
  return ((await response.json()) as { error: { code: string } }).error.code;
}

async function expectStatus(call: Promise<unknown>, code: Code, message: string) {
  const error = await call.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error, "the call should fail").toBeInstanceOf(ConnectError);
  expect(Code[(error as ConnectError).code]).toBe(Code[code]);
  expect((error as ConnectError).rawMessage).toBe(message);
}

describe("createFetchHandlerFromPorts", () => {
  function handlerWith(overrides: Partial<FetchHandlerPorts> = {}) {
    const upstream = createMemoryAuthUpstream();
    const ports: FetchHandlerPorts = {
      sessions: createMemorySessionStore([
        {
          deviceSessionId: "ds-1",
          userId: "user-1",
          publicKey: vectorDevice.publicKey,
          status: "active",
        },
      ]),
      replay: createMemoryReplayStore(),
      signer: vectorSigner,
      router: createStaticRouter({
        "demo.echo": async (command) => ({ resultCode: "ok", payload: command.payload }),
      }),
      clock: createManualClock(NOW),
      authUpstream: upstream.upstream,
      ...overrides,
    };
    return { handler: createFetchHandlerFromPorts(ports), calls: upstream.calls };
  }

  it("answers the probes", async () => {
    const { handler } = handlerWith();
    const health = await handler.fetch(new Request("http://gateway.test/healthz"));
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: "ok" });
    const ready = await handler.fetch(new Request("http://gateway.test/readyz"));
    expect(await ready.json()).toEqual({ status: "ready" });
  });

  it("serves the public auth routes with the §8 envelope and check order", async () => {
    const { handler, calls } = handlerWith();
    const send = await handler.fetch(
      new Request("http://gateway.test/api/v1/public/auth/send-email-code", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "a@example.com" }),
      }),
    );
    expect(send.status).toBe(200);
    expect(await send.json()).toEqual({ challenge_id: "ch_01J9Z" });
    expect(calls.map((call) => call.route)).toEqual(["send"]);

    const wrongMethod = await handler.fetch(
      new Request("http://gateway.test/api/v1/public/auth/send-email-code"),
    );
    expect(wrongMethod.status).toBe(405);
    expect(await envelopeCode(wrongMethod)).toBe("method_not_allowed");

    const wrongType = await handler.fetch(
      new Request("http://gateway.test/api/v1/public/auth/send-email-code", {
        method: "POST",
        headers: { "content-type": "text/plain" },
        body: "{}",
      }),
    );
    expect(wrongType.status).toBe(415);
    expect(await envelopeCode(wrongType)).toBe("unsupported_media_type");

    const unknown = await handler.fetch(new Request("http://gateway.test/nope"));
    expect(unknown.status).toBe(404);
    expect(await envelopeCode(unknown)).toBe("not_found");
  });

  it("answers the auth routes 503 service_unavailable without an auth upstream", async () => {
    const { handler } = handlerWith({ authUpstream: undefined });
    const response = await handler.fetch(
      new Request("http://gateway.test/api/v1/public/auth/send-email-code", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "a@example.com" }),
      }),
    );
    expect(response.status).toBe(503);
    expect(await envelopeCode(response)).toBe("service_unavailable");
  });

  it("answers a Connect unary binary request with a signed response", async () => {
    const { handler } = handlerWith();
    const sent = signedRequest();
    const response = await handler.fetch(
      new Request(EXECUTE_COMMAND_URL, {
        method: "POST",
        headers: { "content-type": "application/proto", "connect-protocol-version": "1" },
        body: toBinary(ExecuteCommandRequestSchema, create(ExecuteCommandRequestSchema, sent)),
      }),
    );
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("application/proto");
    const message = fromBinary(
      ExecuteCommandResponseSchema,
      new Uint8Array(await response.arrayBuffer()),
    );
    expect(message.resultCode).toBe("ok");
    expect(message.requestId).toBe(sent.requestId);
    expect(message.timestampMs).toBe(BigInt(NOW));
    await verify(message, "ds-1");
  });

  it("answers a Connect unary JSON request with a signed response", async () => {
    const { handler } = handlerWith();
    const sent = signedRequest();
    const response = await handler.fetch(
      new Request(EXECUTE_COMMAND_URL, {
        method: "POST",
        headers: { "content-type": "application/json", "connect-protocol-version": "1" },
        body: JSON.stringify({
          protocolVersion: 1,
          deviceSessionId: sent.deviceSessionId,
          messageType: sent.messageType,
          requestId: sent.requestId,
          timestampMs: String(sent.timestampMs),
          payload: Buffer.from(sent.payload).toString("base64"),
          signature: Buffer.from(sent.signature).toString("base64"),
        }),
      }),
    );
    expect(response.status).toBe(200);
    const body = (await response.json()) as Record<string, string | number>;
    expect(body).toMatchObject({
      protocolVersion: 1,
      requestId: sent.requestId,
      resultCode: "ok",
      payload: Buffer.from("hello").toString("base64"),
      timestampMs: String(NOW),
      keyId: vectors.gateway_key.key_id,
    });
  });

  it("answers Connect and gRPC-Web clients through the same pipeline, statuses included", async () => {
    const { handler } = handlerWith();
    for (const protocol of ["connect", "grpc-web"] as const) {
      const client = clientOf(handler, protocol);
      const sent = signedRequest();
      await verify(await client.executeCommand(sent), "ds-1");
      await expectStatus(
        client.executeCommand(sent),
        Code.AlreadyExists,
        "request_id already used",
      );
      await expectStatus(
        client.executeCommand(signedRequest({ deviceSessionId: "ds-nobody" })),
        Code.Unauthenticated,
        "device session not found",
      );
      await expectStatus(
        client.executeCommand(signedRequest({ timestampMs: NOW - 30_001 })),
        Code.Unauthenticated,
        "request timestamp outside allowed clock skew",
      );
      await expectStatus(
        client.executeCommand(signedRequest({}, newDeviceKey().privateKey)),
        Code.Unauthenticated,
        "invalid request signature",
      );
      await expectStatus(
        client.executeCommand(signedRequest({ messageType: "billing/charge" })),
        Code.Unimplemented,
        "no route for message_type billing/charge",
      );
    }
  });

  it("answers UNAVAILABLE when the session store fails", async () => {
    const { handler } = handlerWith({
      sessions: {
        get: async () => {
          throw new Error("connection refused");
        },
      },
    });
    await expectStatus(
      clientOf(handler).executeCommand(signedRequest()),
      Code.Unavailable,
      "session store unavailable",
    );
  });

  it("answers CORS preflights only for the origins it is given", async () => {
    const { handler } = handlerWith({ corsAllowedOrigins: ["https://app.example.com"] });
    const preflight = (origin: string) =>
      handler.fetch(
        new Request(EXECUTE_COMMAND_URL, {
          method: "OPTIONS",
          headers: { origin, "access-control-request-method": "POST" },
        }),
      );
    const allowed = await preflight("https://app.example.com");
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get("access-control-allow-origin")).toBe("https://app.example.com");
    const denied = await preflight("https://evil.example.com");
    expect(denied.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("gives no CORS headers at all without allowed origins", async () => {
    const { handler } = handlerWith();
    const response = await handler.fetch(
      new Request("http://gateway.test/healthz", {
        headers: { origin: "https://app.example.com" },
      }),
    );
    expect(
      [...response.headers.keys()].filter((name) => name.startsWith("access-control-")),
    ).toEqual([]);
  });

  it("answers not ready and refuses new calls once closed", async () => {
    const { handler } = handlerWith();
    await handler.close();
    const ready = await handler.fetch(new Request("http://gateway.test/readyz"));
    expect(ready.status).toBe(503);
    expect(await ready.json()).toEqual({ status: "not_ready" });
    await expectStatus(
      clientOf(handler).executeCommand(signedRequest()),
      Code.Unavailable,
      "gateway is shutting down",
    );
  });
});

describe("createFetchHandler", () => {
  let redis: TestRedis;
  let admin: Redis;

  beforeAll(async () => {
    redis = await startRedis();
    admin = redis.client();
  });

  afterAll(async () => {
    admin?.disconnect();
    await redis?.stop();
  });

  it("fails at once naming a variable with a bad value", () => {
    expect(() =>
      createFetchHandler({ env: gatewayEnv(redis, { GATEWAY_CORS_ALLOWED_ORIGINS: "*" }) }),
    ).toThrow(ConfigError);
  });

  it("builds its ports from the environment and serves ExecuteCommand against Redis", async () => {
    const device = newDeviceKey();
    const deviceSessionId = `ds-fetch-${randomUUID()}`;
    await putSession(admin, {
      deviceSessionId,
      userId: "user-1",
      publicKeyText: device.publicKeyText,
    });
    const handler = createFetchHandler({
      env: gatewayEnv(redis),
      routes: { "demo.echo": async (command) => ({ resultCode: "ok", payload: command.payload }) },
    });
    try {
      const client = clientOf(handler);
      const sign = () =>
        signedRequest({ deviceSessionId, timestampMs: Date.now() }, device.privateKey);
      const sent = sign();
      const response = await client.executeCommand(sent);
      expect(response.resultCode).toBe("ok");
      await verify(response, deviceSessionId);
      // The reservation is the node's: the same key and expiry.
      const ttl = await admin.pttl(`gateway:replay:${deviceSessionId}/${sent.requestId}`);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(61_000);

      // No session cache without the node's session-events reader: a revoke applies at once.
      await putSession(admin, {
        deviceSessionId,
        userId: "user-1",
        publicKeyText: device.publicKeyText,
        status: "revoked",
      });
      await expectStatus(
        client.executeCommand(sign()),
        Code.FailedPrecondition,
        "device session is revoked",
      );
    } finally {
      await handler.close();
    }
  });

  it("rejects requests while Redis cannot be reached, and serves once it can", async () => {
    const handler = createFetchHandler({
      env: gatewayEnv(redis, {
        GATEWAY_REDIS_MASTER_ADDR: "127.0.0.1:1",
        GATEWAY_REDIS_PING_TIMEOUT: "200ms",
      }),
      logger: { debug() {}, info() {}, warn() {}, error() {} },
    });
    try {
      await expect(handler.fetch(new Request("http://gateway.test/healthz"))).rejects.toThrow(
        /Redis PING to 127\.0\.0\.1:1 failed/,
      );
    } finally {
      await handler.close();
    }
    await expect(handler.fetch(new Request("http://gateway.test/healthz"))).rejects.toThrow(
      "the fetch handler is closed",
    );
  });
});

describe("docs/examples/fetch-worker.mjs", () => {
  let redis: TestRedis;

  beforeAll(async () => {
    redis = await startRedis();
  });

  afterAll(async () => {
    await redis?.stop();
  });

  // The example imports the package entry (dist/): `npm run build` first.
  it("serves a signed command from its default export's fetch", async () => {
    const device = newDeviceKey();
    const admin = redis.client();
    await putSession(admin, {
      deviceSessionId: "ds-worker",
      userId: "user-1",
      publicKeyText: device.publicKeyText,
    });
    admin.disconnect();
    const script = `
      import { signExecuteCommandRequest } from "edge-gateway";
      const worker = (await import("./docs/examples/fetch-worker.mjs")).default;
      const signed = signExecuteCommandRequest({
        deviceSessionId: "ds-worker", messageType: "demo.echo", requestId: "r-1",
        timestampMs: Date.now(), payload: Buffer.from("from a worker"),
      }, process.env.DEVICE_KEY_PEM);
      const response = await worker.fetch(new Request(
        "http://worker.test/edgegateway.v1.EdgeGatewayService/ExecuteCommand", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ ...signed, payload: signed.payload.toString("base64"),
            signature: signed.signature.toString("base64") }),
        }));
      console.log("answer " + response.status + " " + await response.text());
      process.exit(0);
    `;
    const worker = spawnNode("--input-type=module", ["-e", script], {
      cwd: fileURLToPath(new URL("..", import.meta.url)),
      env: {
        ...gatewayEnv(redis),
        DEVICE_KEY_PEM: device.privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
      },
      waitTimeoutMs: 15_000,
    });
    try {
      const [, status, body] = await worker.waitFor(/answer (\d+) (.*)/);
      expect(status).toBe("200");
      const answer = JSON.parse(body!);
      expect(answer).toMatchObject({
        requestId: "r-1",
        resultCode: "ok",
        payload: Buffer.from("from a worker").toString("base64"),
        keyId: vectors.gateway_key.key_id,
      });
      // Signed by the gateway key the worker loaded, over the §4 bytes.
      await verify(
        {
          ...answer,
          timestampMs: BigInt(answer.timestampMs),
          payload: Buffer.from(answer.payload, "base64"),
          signature: Buffer.from(answer.signature, "base64"),
        } as ExecuteCommandResponse,
        "ds-worker",
      );
    } finally {
      await worker.kill();
    }
  });

  // The README's second runtime: the same module under `deno serve` (the
  // `deno` npm package, a dev dependency), answering over a real socket.
  it("serves a signed command under deno serve, over HTTP", async () => {
    const device = newDeviceKey();
    const admin = redis.client();
    await putSession(admin, {
      deviceSessionId: "ds-deno",
      userId: "user-1",
      publicKeyText: device.publicKeyText,
    });
    admin.disconnect();
    // The package installs its binary on first use when install scripts did not run.
    const deno: string = createRequire(import.meta.url)("deno/install_api.cjs").runInstall();
    const child = spawn(
      deno,
      [
        "serve",
        "--allow-net",
        "--allow-env",
        "--allow-read",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "docs/examples/fetch-worker.mjs",
      ],
      {
        cwd: fileURLToPath(new URL("..", import.meta.url)),
        env: {
          ...gatewayEnv(redis),
          PATH: process.env.PATH ?? "",
          NO_COLOR: "1",
          DENO_DIR: tempDir("deno"),
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const exited = new Promise((resolve) => child.once("exit", resolve));
    try {
      let output = "";
      const listening = new Promise<string>((resolve, reject) => {
        const onData = (chunk: Buffer) => {
          output += chunk.toString();
          const match = output.match(/Listening on (http:\/\/127\.0\.0\.1:\d+)\//);
          if (match) resolve(match[1]!);
        };
        child.stdout.on("data", onData);
        child.stderr.on("data", onData);
        void exited.then(() => reject(new Error(`deno serve exited:\n${output}`)));
      });
      const baseUrl = await listening;
      const client = createClient(
        EdgeGatewayService,
        createConnectTransport({ baseUrl, useBinaryFormat: true }),
      );
      const signed = signExecuteCommandRequest(
        {
          deviceSessionId: "ds-deno",
          messageType: "demo.echo",
          requestId: "r-deno",
          timestampMs: Date.now(),
          payload: Buffer.from("from deno"),
        },
        device.privateKey,
      );
      const response = await client.executeCommand({
        ...signed,
        timestampMs: BigInt(signed.timestampMs),
      });
      expect(response).toMatchObject({ requestId: "r-deno", resultCode: "ok" });
      expect(Buffer.from(response.payload).toString()).toBe("from deno");
      await verify(response, "ds-deno");
    } finally {
      child.kill("SIGKILL");
      await exited;
    }
  }, 60_000);
});

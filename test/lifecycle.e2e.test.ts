/**
 * The gateway process as operators run it: the built bin with environment
 * configuration. Startup failures, startup logs, SIGTERM and a second signal.
 */
import { generateKeyPairSync, randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ClientError, createChannel, createClient } from "nice-grpc";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EdgeGatewayServiceDefinition } from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { signExecuteCommandRequest } from "../runtime/kit/device-client.js";
import { createCleanup } from "./support/cleanup.js";
import {
  type GatewayProcess,
  gatewayEnv,
  spawnGateway,
  startGatewayBin,
  storeSession,
} from "./support/gateway.js";
import { newDeviceKey, vectors } from "./support/keys.js";
import { freePort, startRedis, type TestRedis } from "./support/redis-server.js";
import { tempDir } from "./support/temp-dir.js";

let redis: TestRedis;
const cleanup = createCleanup();
const tmp = tempDir("lifecycle");

function file(name: string, content: string): string {
  const path = join(tmp, name);
  writeFileSync(path, content);
  return path;
}

function run(env: Record<string, string>): GatewayProcess {
  const gateway = spawnGateway(env);
  cleanup.defer(() => gateway.kill());
  return gateway;
}

/**
 * Runs the bin, ready, with `routes` as its routes module and the session of
 * a new device stored; a client on a channel of its own (the caller closes it).
 */
async function startWithRoutes(
  deviceSessionId: string,
  routes: string,
  env: Record<string, string> = {},
) {
  const device = newDeviceKey();
  await storeSession(redis, {
    deviceSessionId,
    userId: "u-1",
    publicKeyText: device.publicKeyText,
  });
  const { bin, grpc } = await startGatewayBin(redis, cleanup, {
    GATEWAY_ROUTES_MODULE: routes,
    ...env,
  });
  const channel = createChannel(grpc);
  return {
    device,
    gateway: bin,
    channel,
    client: createClient(EdgeGatewayServiceDefinition, channel),
  };
}

/** Runs the bin to its exit and returns the code and what it printed. */
async function runToExit(env: Record<string, string>) {
  const gateway = run(env);
  const code = await gateway.exited;
  return { code, output: gateway.output() };
}

beforeAll(async () => {
  redis = await startRedis();
});

afterEach(() => cleanup.run());

afterAll(async () => {
  await redis?.stop();
});

describe("startup configuration", () => {
  it.each([
    [
      "GATEWAY_REDIS_MASTER_ADDR",
      { GATEWAY_REDIS_MASTER_ADDR: "" },
      "GATEWAY_REDIS_MASTER_ADDR: is required",
    ],
    [
      "GATEWAY_REDIS_PASSWORD",
      { GATEWAY_REDIS_PASSWORD: "" },
      "GATEWAY_REDIS_PASSWORD: is required",
    ],
    [
      "GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH",
      { GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH: "" },
      "GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH: is required",
    ],
    [
      "GATEWAY_REDIS_TLS_ENABLED (even empty)",
      { GATEWAY_REDIS_TLS_ENABLED: "" },
      "GATEWAY_REDIS_TLS_ENABLED: is no longer accepted",
    ],
    [
      "GATEWAY_REDIS_USERNAME",
      { GATEWAY_REDIS_USERNAME: "default" },
      "GATEWAY_REDIS_USERNAME: is no longer accepted",
    ],
    [
      "GATEWAY_SHUTDOWN_TIMEOUT",
      { GATEWAY_SHUTDOWN_TIMEOUT: "5" },
      "GATEWAY_SHUTDOWN_TIMEOUT: expected a positive Go duration",
    ],
    [
      "GATEWAY_REDIS_DB",
      { GATEWAY_REDIS_DB: "16" },
      'GATEWAY_REDIS_DB: expected an integer from 0 to 15, got "16"',
    ],
    [
      "GATEWAY_PUBLIC_HTTP_ADDR",
      { GATEWAY_PUBLIC_HTTP_ADDR: "8080" },
      "GATEWAY_PUBLIC_HTTP_ADDR: expected host:port",
    ],
    [
      "GATEWAY_ROUTES_MODULE",
      { GATEWAY_ROUTES_MODULE: "/nonexistent/routes.mjs" },
      "GATEWAY_ROUTES_MODULE: cannot import",
    ],
    ["GATEWAY_LOG_LEVEL", { GATEWAY_LOG_LEVEL: "trace" }, "GATEWAY_LOG_LEVEL"],
  ])("exits non-zero with one line naming %s", async (_name, override, expected) => {
    const { code, output } = await runToExit({ ...gatewayEnv(redis), ...override });
    expect(code).not.toBe(0);
    expect(output).toContain(expected);
    expect(output.trim().split("\n")).toHaveLength(1);
    expect(output).not.toContain(redis.password);
    expect(output).not.toMatch(/listening on/);
  });
});

describe("startup signer key", () => {
  const rsa = generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey.export({
    type: "pkcs8",
    format: "pem",
  });
  const ed = generateKeyPairSync("ed25519");
  const cases: [string, () => string, RegExp][] = [
    [
      "an unreadable file",
      () => join(tmp, "missing.pem"),
      /cannot read signer key file .*missing\.pem \(ENOENT\)/,
    ],
    [
      "garbage",
      () => file("garbage.pem", "not a key at all\n"),
      /is not a PEM-encoded private key/,
    ],
    [
      "a public key",
      () => file("public.pem", ed.publicKey.export({ type: "spki", format: "pem" }) as string),
      /holds a public key/,
    ],
    [
      "an encrypted PEM",
      () =>
        file(
          "encrypted.pem",
          ed.privateKey.export({
            type: "pkcs8",
            format: "pem",
            cipher: "aes-256-cbc",
            passphrase: "pw",
          }) as string,
        ),
      /is encrypted/,
    ],
    [
      "an RSA key",
      () => file("rsa.pem", rsa as string),
      /is a rsa key; an Ed25519 key is required/,
    ],
    [
      "a corrupt PEM body",
      () => file("corrupt.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
      /is not a valid PEM-encoded private key/,
    ],
  ];

  it.each(cases)("refuses %s and exits non-zero", async (_name, path, expected) => {
    const { code, output } = await runToExit(
      gatewayEnv(redis, { GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH: path() }),
    );
    expect(code).toBe(1);
    expect(output).toMatch(expected);
    expect(output).not.toMatch(/listening on/);
    expect(output).not.toContain("PRIVATE KEY-----");
  });
});

describe("startup order", () => {
  // The signer key is checked before Redis is contacted: a bad key is
  // reported as such even when Redis cannot be reached.
  it("reports a bad signer key before it tries Redis", async () => {
    const port = await freePort();
    const { code, output } = await runToExit(
      gatewayEnv(redis, {
        GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH: file("garbage-first.pem", "not a key\n"),
        GATEWAY_REDIS_MASTER_ADDR: `127.0.0.1:${port}`,
        GATEWAY_REDIS_PING_TIMEOUT: "500ms",
      }),
    );
    expect(code).toBe(1);
    expect(output).toMatch(/is not a PEM-encoded private key/);
    expect(output).not.toContain("Redis PING");
    expect(output).not.toMatch(/listening on/);
  });
});

describe("startup with Redis down", () => {
  it("exits non-zero after the bounded PING and opens no listener", async () => {
    const port = await freePort();
    const { code, output } = await runToExit(
      gatewayEnv(redis, {
        GATEWAY_REDIS_MASTER_ADDR: `127.0.0.1:${port}`,
        GATEWAY_REDIS_PING_TIMEOUT: "500ms",
      }),
    );
    expect(code).toBe(1);
    expect(output).toContain(`Redis PING to 127.0.0.1:${port} failed`);
    expect(output).not.toMatch(/listening on/);
    expect(output).not.toContain(redis.password);
  });
});

describe("a healthy start and SIGTERM", () => {
  it("logs what the readiness check reads, never the password", async () => {
    const gateway = run(
      gatewayEnv(redis, {
        GATEWAY_REDIS_KEY_PREFIX: "edge:",
        GATEWAY_REDIS_DB: "3",
        GATEWAY_REDIS_REPLICA_ADDRS: "r1.internal:6379,r2.internal:6379",
      }),
    );
    await gateway.waitFor(/gateway ready/);
    const output = gateway.output();
    expect(output).toContain(
      `Redis connected: mode=single addr=${redis.addr} db=3 key_prefix=edge:`,
    );
    expect(output).toContain("Redis replicas reserved, unused: r1.internal:6379,r2.internal:6379");
    expect(output).toContain("session events stream: gateway:session_events");
    expect(output).toContain("client events stream: gateway:client_events");
    expect(output).toContain(`response signer key_id=${vectors.gateway_key.key_id}`);
    // The growing factor only where the heap limit is over 2 GiB (runtime/host/v8-flags.ts).
    expect(output).toMatch(
      /V8 flags set by the bin: (--heap-growing-percent=100 )?--no-allocation-site-pretenuring\n/,
    );
    expect(output).toMatch(/authenticated gRPC listening on 127\.0\.0\.1:\d+/);
    expect(output).toMatch(/public HTTP listening on 127\.0\.0\.1:\d+/);
    expect(output).toMatch(/admin HTTP listening on 127\.0\.0\.1:\d+/);
    expect(output).not.toContain(redis.password);
    gateway.child.kill("SIGTERM");
    expect(await gateway.exited).toBe(0);
  });

  // A call in flight when SIGTERM arrives completes; then the process exits 0
  // after the ordered steps.
  it("lets an in-flight call finish, logs each shutdown step and exits 0", async () => {
    const routes = file(
      "routes.mjs",
      `export const routes = {
        "demo.wait": async (command, ctx) => {
          ctx.logger.info("demo.wait started");
          await new Promise((resolve) => setTimeout(resolve, 1000));
          return { resultCode: "ok", payload: command.payload };
        },
      };`,
    );
    const { device, gateway, channel, client } = await startWithRoutes("ds-sigterm", routes);
    try {
      const call = client.executeCommand(
        signExecuteCommandRequest(
          {
            deviceSessionId: "ds-sigterm",
            messageType: "demo.wait",
            requestId: randomUUID(),
            timestampMs: Date.now(),
            payload: Buffer.from("in flight"),
          },
          device.privateKey,
        ),
      );
      await gateway.waitFor(/demo\.wait started/);
      gateway.child.kill("SIGTERM");
      const response = await call;
      expect(response.resultCode).toBe("ok");
      expect(Buffer.from(response.payload).toString()).toBe("in flight");
      expect(await gateway.exited).toBe(0);
      const output = gateway.output();
      const steps = [
        "SIGTERM received",
        "shutdown: readiness set to not ready",
        "shutdown: stream readers stopped",
        "shutdown: push hub closed",
        "shutdown: gRPC server stopped",
        "shutdown: HTTP listeners closed",
        "shutdown: Redis connections closed",
        "shutdown: telemetry flushed",
        "shutdown complete",
      ].map((step) => output.indexOf(step));
      expect(steps.every((index) => index >= 0)).toBe(true);
      expect([...steps].sort((a, b) => a - b)).toEqual(steps);
    } finally {
      channel.close();
    }
  });

  // A call that never ends cannot hold the process: once the shutdown budget
  // passes, the gRPC server is forced down and every later step still runs.
  it("forces the gRPC server down after GATEWAY_SHUTDOWN_TIMEOUT, still runs every step and exits 0", async () => {
    const routes = file(
      "routes-never.mjs",
      `export const routes = {
        "demo.never": async (_command, ctx) => {
          ctx.logger.info("demo.never started");
          return new Promise(() => {});
        },
      };`,
    );
    const { device, gateway, channel, client } = await startWithRoutes("ds-forced", routes, {
      GATEWAY_SHUTDOWN_TIMEOUT: "500ms",
    });
    try {
      const call = client
        .executeCommand(
          signExecuteCommandRequest(
            {
              deviceSessionId: "ds-forced",
              messageType: "demo.never",
              requestId: randomUUID(),
              timestampMs: Date.now(),
            },
            device.privateKey,
          ),
        )
        .catch((error: ClientError) => error);
      await gateway.waitFor(/demo\.never started/);
      gateway.child.kill("SIGTERM");
      expect(await gateway.exited).toBe(0);
      const output = gateway.output();
      expect(output).toContain("did not finish within 500 ms; forcing");
      for (const step of [
        "shutdown: readiness set to not ready",
        "shutdown: stream readers stopped",
        "shutdown: push hub closed",
        "shutdown: gRPC server stopped",
        "shutdown: HTTP listeners closed",
        "shutdown: Redis connections closed",
        "shutdown: telemetry flushed",
      ]) {
        expect(output).toContain(step);
      }
      // The forced call fails with whatever the transport reports.
      expect(await call).toBeInstanceOf(ClientError);
    } finally {
      channel.close();
    }
  });

  it("exits at once, non-zero, on a second signal", async () => {
    const routes = file(
      "routes-hang.mjs",
      `export const routes = {
        "demo.hang": async (_command, ctx) => {
          ctx.logger.info("demo.hang started");
          return new Promise(() => {});
        },
      };`,
    );
    const { device, gateway, channel, client } = await startWithRoutes("ds-twice", routes, {
      GATEWAY_SHUTDOWN_TIMEOUT: "60s",
    });
    try {
      const call = client
        .executeCommand(
          signExecuteCommandRequest(
            {
              deviceSessionId: "ds-twice",
              messageType: "demo.hang",
              requestId: randomUUID(),
              timestampMs: Date.now(),
            },
            device.privateKey,
          ),
        )
        .catch((error: ClientError) => error);
      await gateway.waitFor(/demo\.hang started/);
      gateway.child.kill("SIGTERM");
      await gateway.waitFor(/SIGTERM received/);
      gateway.child.kill("SIGINT");
      expect(await gateway.exited).toBe(130);
      expect(gateway.output()).toContain("SIGINT again: exiting at once");
      const error = await call;
      // The process is gone: the call fails with whatever the transport reports.
      expect(error).toBeInstanceOf(ClientError);
    } finally {
      channel.close();
    }
  });
});

/**
 * Dev mode as a developer runs it: the built bin's `dev` command in a fresh
 * directory, with its own redis-server, a seeded demo device and the CLI
 * talking to it; a device signed in by email code through the dev auth
 * upstream (contract §15); Ctrl-C stops everything it started.
 */
import { execFileSync } from "node:child_process";
import { createPrivateKey, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { rawPublicKeyOf } from "../handlers/ed25519.js";
import type { ExecuteCommandResponse } from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { EdgeGatewayService } from "../proto/gen-es/edgegateway/v1/edge_gateway_pb.js";
import { runCli } from "../runtime/cli/cli.js";
import { devUserIdOf } from "../runtime/dev/dev-auth-upstream.js";
import {
  importGatewayKey,
  signExecuteCommandRequest,
  verifyExecuteCommandResponse,
} from "../runtime/kit/device-client.js";
import { createCleanup } from "./support/cleanup.js";
import { gatewayEnv } from "./support/gateway.js";
import { newDeviceKey } from "./support/keys.js";
import { BIN, type NodeProcess, spawnNode } from "./support/node-process.js";
import { grpcClient, SAFETY_MS } from "./support/push.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";

const tmpDirs: string[] = [];
const running: NodeProcess[] = [];
/** Local redis-servers dev mode reported, to end if a test fails before dev mode stops them. */
const redisPids: number[] = [];

function freshDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tmpDirs.push(dir);
  return dir;
}

/** The environment of a dev run on loopback ephemeral ports, with exactly `extra` added (PATH may be one). */
function devEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    GATEWAY_PUBLIC_HTTP_ADDR: "127.0.0.1:0",
    GATEWAY_AUTHENTICATED_GRPC_ADDR: "127.0.0.1:0",
    GATEWAY_ADMIN_HTTP_ADDR: "127.0.0.1:0",
    ...extra,
  };
}

/** Spawns `bin.js dev` in `cwd`; `detached` gives it its own process group, as a terminal does. */
function spawnDev(cwd: string, env: Record<string, string>, detached = false): NodeProcess {
  const dev = spawnNode(BIN, ["dev"], { cwd, env, detached });
  running.push(dev);
  return dev;
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ESRCH") return false;
    throw error;
  }
}

/** Resolves once `pid` is gone (signal 0 answers ESRCH). */
async function untilGone(pid: number): Promise<void> {
  while (isRunning(pid)) await new Promise((wake) => setTimeout(wake, 25));
}

/** `KEY=value` lines of a dotenv-style file. */
function parseEnvFile(path: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const at = line.indexOf("=");
    if (at > 0) env[line.slice(0, at)] = line.slice(at + 1);
  }
  return env;
}

/**
 * Stops a bin as `npm run dev` passes on Ctrl-C (SIGTERM), so that dev mode
 * stops its redis-server; SIGKILL only if it has not exited within the safety net.
 */
async function stopWithSigterm(bin: NodeProcess): Promise<void> {
  if (bin.child.exitCode !== null || bin.child.signalCode !== null) return;
  bin.child.kill("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    bin.exited,
    new Promise((wake) => {
      timer = setTimeout(wake, SAFETY_MS);
    }),
  ]);
  clearTimeout(timer);
  await bin.kill();
}

/** The pid of the local redis-server dev mode reported, kept to end it should dev mode not. */
function reportedRedisPid(dev: NodeProcess): number {
  const [, pid] = dev.output().match(/local redis-server \(pid (\d+)\)/) ?? [];
  expect(pid, "dev mode reports its redis-server").toBeDefined();
  redisPids.push(Number(pid));
  return Number(pid);
}

const cleanup = createCleanup();

afterEach(async () => {
  await cleanup.run();
  for (const dev of running.splice(0)) await stopWithSigterm(dev);
  for (const pid of redisPids.splice(0)) {
    if (isRunning(pid)) {
      process.kill(pid, "SIGKILL");
      await untilGone(pid);
    }
  }
});

afterAll(() => {
  for (const dir of tmpDirs) rmSync(dir, { recursive: true, force: true });
});

describe("dev mode", () => {
  it("serves a ready gateway the CLI can use, and SIGINT stops it and its redis-server", async () => {
    const cwd = freshDir("edge-gateway-dev-");
    const dev = spawnDev(cwd, devEnv());
    const [, redisPid] = await dev.waitFor(/local redis-server \(pid (\d+)\) on 127\.0\.0\.1:\d+/);
    const pid = Number(redisPid);
    redisPids.push(pid);
    expect(isRunning(pid)).toBe(true);

    await dev.waitFor(/gateway ready/);
    await dev.waitFor(/Ctrl-C stops the gateway and everything dev mode started\./);
    const output = dev.output();
    const [, grpc] = output.match(/authenticated gRPC listening on (127\.0\.0\.1:\d+)/) ?? [];
    const [, publicHttp] = output.match(/public HTTP listening on (127\.0\.0\.1:\d+)/) ?? [];
    const [, adminHttp] = output.match(/admin HTTP listening on (127\.0\.0\.1:\d+)/) ?? [];
    expect(grpc).toBeDefined();
    expect(publicHttp).toBeDefined();
    expect(adminHttp).toBeDefined();

    // The "Try:" block points at the bound listeners and the seeded device.
    expect(output).toContain("Dev gateway is running. Try:");
    expect(output).toContain(`curl http://${publicHttp}/healthz`);
    expect(output).toContain(`curl http://${adminHttp}/metrics`);
    expect(output).toContain(
      "npx edge-gateway exec --session dev-device-1 --key .dev/device.pem --type demo.echo --payload hello",
    );

    const health = await fetch(`http://${publicHttp}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: "ok" });

    // The Redis settings go to a private file, never to the terminal.
    const envFile = join(cwd, ".dev", "env");
    expect(statSync(envFile).mode & 0o777).toBe(0o600);
    expect(statSync(join(cwd, ".dev", "device.pem")).mode & 0o777).toBe(0o600);
    expect(statSync(join(cwd, ".dev", "signer.pem")).mode & 0o777).toBe(0o600);
    const cliEnv = parseEnvFile(envFile);
    expect(cliEnv.GATEWAY_AUTHENTICATED_GRPC_ADDR).toBe(grpc);
    const password = cliEnv.GATEWAY_REDIS_PASSWORD ?? "";
    expect(password).not.toBe("");
    expect(output).toContain(`on ${cliEnv.GATEWAY_REDIS_MASTER_ADDR}`);
    expect(output).not.toContain(password);

    // The CLI acts as the seeded device, as the "Try:" block says.
    const stdout: string[] = [];
    const stderr: string[] = [];
    const code = await runCli(
      [
        "exec",
        "--session",
        "dev-device-1",
        "--key",
        join(cwd, ".dev", "device.pem"),
        "--gateway-key-file",
        join(cwd, ".dev", "signer.pem"),
        "--type",
        "demo.echo",
        "--payload",
        "hello",
      ],
      cliEnv,
      { stdout: (line) => stdout.push(line), stderr: (line) => stderr.push(line) },
    );
    expect(stderr).toEqual([]);
    expect(code).toBe(0);
    expect(JSON.parse(stdout.join("\n"))).toMatchObject({
      result_code: "ok",
      payload: "hello",
      signature: "verified",
    });
    const [, keyId] = output.match(/response signer key_id=([0-9a-f]{16})/) ?? [];
    expect(JSON.parse(stdout.join("\n")).key_id).toBe(keyId);

    dev.child.kill("SIGINT");
    expect(await dev.exited).toBe(0);
    expect(dev.output()).toContain("SIGINT received: stopping the dev gateway");
    expect(dev.output()).not.toContain(password);
    await untilGone(pid);
  });

  // What a developer sees first, stdout and stderr together: the console's
  // URL, then the commands to try, then the startup log it held back.
  it("writes the device console's URL as its first line, before its startup log", async () => {
    const cwd = freshDir("edge-gateway-dev-url-");
    const dev = spawnDev(cwd, devEnv());
    await dev.waitFor(/Ctrl-C stops the gateway and everything dev mode started\./);
    await dev.waitFor(/gateway ready/);
    const redisPid = reportedRedisPid(dev);
    const lines = dev.output().split("\n");
    expect(lines[0]).toMatch(/^Device console: http:\/\/127\.0\.0\.1:\d+\/_dev\/$/);
    const consoleUrl = lines[0]!.slice("Device console: ".length);
    const [, publicHttp] = dev.output().match(/public HTTP listening on (127\.0\.0\.1:\d+)/) ?? [];
    expect(consoleUrl).toBe(`http://${publicHttp}/_dev/`);

    const blockEnd = lines.indexOf("Ctrl-C stops the gateway and everything dev mode started.");
    for (const startupLine of [
      /local redis-server \(pid \d+\) on /,
      /Redis connected: /,
      /response signer key_id=/,
      /authenticated gRPC listening on /,
      /public HTTP listening on /,
      /admin HTTP listening on /,
      /gateway ready$/,
    ]) {
      const at = lines.findIndex((line) => startupLine.test(line));
      expect(at, `${startupLine} is written after the URL block`).toBeGreaterThan(blockEnd);
    }

    const page = await fetch(consoleUrl);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    const html = await page.text();
    expect(html).toContain('data-testid="send-code"');
    expect(html).toContain('data-testid="subscribe"');

    dev.child.kill("SIGTERM");
    expect(await dev.exited).toBe(0);
    await untilGone(redisPid);
  });

  // Contract §15: the dev auth upstream's session is an ordinary device
  // session on every transport, each response signed by the dev signer key.
  it("signs a device in by email code, and its session executes over gRPC, gRPC-Web and Connect", async () => {
    const cwd = freshDir("edge-gateway-dev-signin-");
    const dev = spawnDev(cwd, devEnv());
    await dev.waitFor(/gateway ready/);
    const redisPid = reportedRedisPid(dev);
    const output = dev.output();
    const [, grpc] = output.match(/authenticated gRPC listening on (127\.0\.0\.1:\d+)/) ?? [];
    const [, publicHttp] = output.match(/public HTTP listening on (127\.0\.0\.1:\d+)/) ?? [];
    const [, keyId] = output.match(/response signer key_id=([0-9a-f]{16})/) ?? [];
    const baseUrl = `http://${publicHttp}`;
    // The key the responses must verify against, read from the signer file dev mode created.
    const signerPem = readFileSync(join(cwd, ".dev", "signer.pem"), "utf8");
    const gatewayKey = importGatewayKey(rawPublicKeyOf(createPrivateKey(signerPem)));
    expect(gatewayKey.keyId).toBe(keyId);

    const email = "grace@example.com";
    const device = newDeviceKey();
    const post = (path: string, body: unknown) =>
      fetch(`${baseUrl}/api/v1/public/auth/${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const sent = await post("send-email-code", { email });
    expect(sent.status).toBe(200);
    const { challenge_id } = (await sent.json()) as { challenge_id: string };
    const [, code] = await dev.waitFor(/email code for grace@example\.com: (\d{6})\n/);
    const confirmed = await post("confirm-email-code", {
      challenge_id,
      code,
      client_public_key: device.publicKeyText,
    });
    expect(confirmed.status).toBe(200);
    const session = (await confirmed.json()) as { device_session_id: string; user_id: string };
    expect(session.user_id).toBe(devUserIdOf(email));
    const deviceSessionId = session.device_session_id;

    const signed = (transport: string) =>
      signExecuteCommandRequest(
        {
          deviceSessionId,
          messageType: "demo.echo",
          requestId: `${transport}-${randomUUID()}`,
          timestampMs: Date.now(),
          payload: Buffer.from(`hello over ${transport}`),
        },
        device.privateKey,
      );
    const expectSignedEcho = async (
      transport: string,
      sentRequestId: string,
      response: ExecuteCommandResponse,
    ) => {
      expect(response.resultCode, transport).toBe("ok");
      expect(Buffer.from(response.payload).toString(), transport).toBe(`hello over ${transport}`);
      expect(response.requestId, transport).toBe(sentRequestId);
      expect(response.keyId, transport).toBe(keyId);
      await verifyExecuteCommandResponse(response, deviceSessionId, gatewayKey);
    };

    const overGrpc = signed("gRPC");
    await expectSignedEcho(
      "gRPC",
      overGrpc.requestId,
      await grpcClient(grpc!, cleanup).executeCommand(overGrpc, {
        signal: AbortSignal.timeout(SAFETY_MS),
      }),
    );

    const webTransports: [string, Transport][] = [
      ["gRPC-Web", createGrpcWebTransport({ baseUrl, useBinaryFormat: true })],
      ["Connect", createConnectTransport({ baseUrl, useBinaryFormat: true })],
    ];
    for (const [name, transport] of webTransports) {
      const request = signed(name);
      const response = await createClient(EdgeGatewayService, transport).executeCommand(
        { ...request, timestampMs: BigInt(request.timestampMs) },
        { signal: AbortSignal.timeout(SAFETY_MS) },
      );
      // In the shape the kit verifies (numbers and Buffers, as ts-proto decodes them).
      await expectSignedEcho(name, request.requestId, {
        ...response,
        timestampMs: Number(response.timestampMs),
        payload: Buffer.from(response.payload),
        signature: Buffer.from(response.signature),
      });
    }

    await cleanup.run();
    dev.child.kill("SIGTERM");
    expect(await dev.exited).toBe(0);
    await untilGone(redisPid);
  });

  it("exits 1 and says how to install redis-server when it is not on PATH", async () => {
    const cwd = freshDir("edge-gateway-dev-noredis-");
    const bin = freshDir("edge-gateway-dev-path-");
    symlinkSync(process.execPath, join(bin, "node"));
    const dev = spawnDev(cwd, devEnv({ PATH: bin }));
    expect(await dev.exited).toBe(1);
    const output = dev.output();
    expect(output).toContain("redis-server is not installed");
    expect(output).toContain("apt-get install -y redis-server");
    expect(output).toContain("brew install redis");
    expect(output).not.toMatch(/listening on|gateway ready/);
  });

  // Ctrl-C in a terminal signals the whole process group: the redis-server
  // gets SIGINT at the same moment as the gateway, which must still stop cleanly.
  it("exits 0 when Ctrl-C signals its whole process group", async () => {
    const cwd = freshDir("edge-gateway-dev-group-");
    const dev = spawnDev(cwd, devEnv(), true);
    const [, redisPid] = await dev.waitFor(/local redis-server \(pid (\d+)\)/);
    const pid = Number(redisPid);
    redisPids.push(pid);
    await dev.waitFor(/Ctrl-C stops the gateway and everything dev mode started\./);
    process.kill(-dev.child.pid!, "SIGINT");
    expect(await dev.exited).toBe(0);
    await untilGone(pid);
  });

  // `npm run dev` forwards SIGTERM to dev mode only. Dev mode holds here while
  // it loads GATEWAY_ROUTES_MODULE, after its redis-server is up and before the
  // gateway starts; the signal must still stop that redis-server. Its startup
  // log is still held back then, so the redis-server is found as its child,
  // and the signal must also write the held lines.
  it("stops its redis-server and writes its startup log when SIGTERM arrives during startup", async () => {
    const cwd = freshDir("edge-gateway-dev-early-");
    writeFileSync(
      join(cwd, "routes.mjs"),
      `process.stderr.write("routes module loading\\n");
      await new Promise(() => setInterval(() => {}, 1000));
      export const routes = {};`,
    );
    const dev = spawnDev(cwd, devEnv({ GATEWAY_ROUTES_MODULE: "routes.mjs" }));
    await dev.waitFor(/routes module loading/);
    expect(dev.output()).not.toContain("local redis-server");
    const children = execFileSync("pgrep", ["-P", String(dev.child.pid)], { encoding: "utf8" })
      .trim()
      .split("\n")
      .map(Number);
    redisPids.push(...children);
    expect(children).toHaveLength(1);
    const pid = children[0]!;
    dev.child.kill("SIGTERM");
    await dev.exited;
    expect(dev.output()).toContain(`local redis-server (pid ${pid}) on 127.0.0.1:`);
    const deadline = Date.now() + 10_000;
    while (isRunning(pid) && Date.now() < deadline) {
      await new Promise((wake) => setTimeout(wake, 25));
    }
    expect(isRunning(pid), `redis-server pid ${pid} outlived dev mode`).toBe(false);
  });
});

// Contract §15: the dev auth upstream and the console exist only in dev mode.
// The gateway has no setting for either; these variables only look as if
// they might turn them on.
describe("outside dev mode", () => {
  const LOOKALIKES = {
    NODE_ENV: "development",
    GATEWAY_DEV: "1",
    GATEWAY_DEV_MODE: "true",
    GATEWAY_DEV_AUTH_UPSTREAM: "1",
    GATEWAY_AUTH_UPSTREAM: "dev",
    EDGE_GATEWAY_DEV: "1",
  };
  let redis: TestRedis | undefined;

  beforeAll(async () => {
    redis = await startRedis();
  });

  afterAll(async () => {
    await redis?.stop();
  });

  it.each([
    ["edge-gateway serve", ["serve"]],
    ["edge-gateway", []],
  ])(
    "%s answers /_dev/ 404 and the auth routes 503 as with no auth upstream",
    async (_name, args) => {
      const bin = spawnNode(BIN, args, {
        env: gatewayEnv(redis!, LOOKALIKES),
        waitTimeoutMs: SAFETY_MS,
      });
      running.push(bin);
      const [, publicHttp] = await bin.waitFor(/public HTTP listening on (127\.0\.0\.1:\d+)/);
      await bin.waitFor(/gateway ready/);
      const baseUrl = `http://${publicHttp}`;

      for (const path of ["/_dev/", "/_dev/gateway-key", "/_dev/edge-gateway-device.js"]) {
        const response = await fetch(`${baseUrl}${path}`);
        expect(response.status, path).toBe(404);
        expect(await response.json(), path).toEqual({
          error: { code: "not_found", message: "no route for this path" },
        });
      }
      // Dev mode redirects the bare path to the console; here it is unknown too.
      expect((await fetch(`${baseUrl}/_dev`, { redirect: "manual" })).status).toBe(404);

      const device = newDeviceKey();
      for (const [path, body] of [
        ["send-email-code", { email: "ada@example.com" }],
        [
          "confirm-email-code",
          {
            challenge_id: "dev-challenge-1",
            code: "123456",
            client_public_key: device.publicKeyText,
          },
        ],
      ] as const) {
        const response = await fetch(`${baseUrl}/api/v1/public/auth/${path}`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        });
        expect(response.status, path).toBe(503);
        const envelope = (await response.json()) as { error: { code: string } };
        expect(envelope.error.code, path).toBe("service_unavailable");
      }
      expect(bin.output()).not.toContain("email code for");

      bin.child.kill("SIGTERM");
      expect(await bin.exited).toBe(0);
    },
  );
});

/**
 * The `edge-gateway` command line end to end: a device's whole life through
 * the CLI (keygen, session put, exec, subscribe, event publish, session revoke)
 * against a real gateway and a real redis-server, the CLI's failure modes and
 * exit codes, and dispatch through the built bin.
 */
import { spawn } from "node:child_process";
import { createHash, createPrivateKey, createPublicKey } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Routes } from "../handlers/ports.js";
import { type CliIo, runCli } from "../runtime/cli/cli.js";
import { createKeyspace } from "../runtime/redis/keyspace.js";
import { gatewayEnv, startGateway } from "./support/gateway.js";
import { newDeviceKey, vectors } from "./support/keys.js";
import { BIN } from "./support/node-process.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";
import { waitFor } from "./support/wait.js";

const routes: Routes = {
  "demo.echo": async (command) => ({ resultCode: "ok", payload: command.payload }),
};

let redis: TestRedis;
let admin: Redis;
let gateway: Awaited<ReturnType<typeof startGateway>>;
/** The CLI's environment: the same Redis, streams and signer key as the gateway. */
let env: Record<string, string>;
const tmp = mkdtempSync(join(tmpdir(), "edge-gateway-cli-"));

/** An in-memory CliIo that records lines and lets a test wait for output. */
function createIo() {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const waiters = new Set<() => void>();
  const record = (lines: string[]) => (line: string) => {
    lines.push(line);
    for (const wake of waiters) wake();
  };
  const io: CliIo = { stdout: record(stdout), stderr: record(stderr) };
  return {
    io,
    stdout,
    stderr,
    /** Everything written, both streams. */
    text: () => [...stdout, ...stderr].join("\n"),
    /** Resolves once stdout holds `count` lines; rejects if `running` settles first. */
    untilStdoutLines(count: number, running: Promise<number>): Promise<void> {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (stdout.length >= count) {
            waiters.delete(check);
            resolve();
          }
        };
        waiters.add(check);
        check();
        running.then(
          (code) => {
            waiters.delete(check);
            if (stdout.length < count) {
              reject(new Error(`the command exited ${code} first:\n${[...stdout, ...stderr]}`));
            }
          },
          (error: unknown) => {
            waiters.delete(check);
            reject(error);
          },
        );
      });
    },
  };
}

/** Runs the CLI in-process and returns its exit code and output. */
async function cli(argv: string[], cliEnv: Record<string, string> = env) {
  const out = createIo();
  const code = await runCli(argv, cliEnv, out.io);
  return { code, stdout: out.stdout.join("\n"), stderr: out.stderr.join("\n") };
}

/** Runs the built bin to its exit with exactly `binEnv` plus PATH. */
function runBin(args: string[], binEnv: Record<string, string> = {}) {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { PATH: process.env.PATH ?? "", NO_COLOR: "1", ...binEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => {
    stdout += chunk.toString("utf8");
  });
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString("utf8");
  });
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** The `name=value` lines keygen prints. */
function keygenFields(stdout: string): Record<string, string> {
  return Object.fromEntries(
    stdout
      .split("\n")
      .map((line) => /^([a-z_]+)=(.*)$/.exec(line))
      .filter((match) => match !== null)
      .map((match) => [match[1]!, match[2]!]),
  );
}

/** The raw public key (base64url) and key_id of a PEM private key, computed independently. */
function expectedKeyLines(pem: string): { publicKey: string; keyId: string } {
  const key = createPrivateKey(pem);
  expect(key.asymmetricKeyType).toBe("ed25519");
  const publicKey = createPublicKey(key).export({ format: "jwk" }).x!;
  const raw = Buffer.from(publicKey, "base64url");
  expect(raw).toHaveLength(32);
  return { publicKey, keyId: createHash("sha256").update(raw).digest("hex").slice(0, 16) };
}

beforeAll(async () => {
  redis = await startRedis();
  admin = redis.client();
  gateway = await startGateway(redis, { routes });
  env = gatewayEnv(redis);
});

afterAll(async () => {
  await gateway?.stop();
  admin?.disconnect();
  await redis?.stop();
  rmSync(tmp, { recursive: true, force: true });
  if (env) rmSync(dirname(env.GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH!), { recursive: true });
});

// The steps share one device session and run in order, as a developer would
// type them.
describe("a device round trip through the CLI", () => {
  const keyFile = join(tmp, "device.pem");
  let devicePublicKey = "";
  const device = () => [
    "--session",
    "ds-cli",
    "--key",
    keyFile,
    "--addr",
    gateway.addresses.grpc,
    "--gateway-key",
    vectors.gateway_key.public_key_base64url,
  ];
  /** `exec` of demo.echo with the payload "hello", as the device `args` name. */
  const execEchoHello = (args = device()) =>
    cli(["exec", ...args, "--type", "demo.echo", "--payload", "hello"]);

  it("keygen --out writes a 0600 Ed25519 PEM and prints its public key and key_id", async () => {
    const { code, stdout, stderr } = await cli(["keygen", "--out", keyFile]);
    expect(code).toBe(0);
    expect(stderr).toBe("");
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    const pem = readFileSync(keyFile, "utf8");
    const expected = expectedKeyLines(pem);
    const fields = keygenFields(stdout);
    expect(fields).toEqual({
      private_key_pem_path: keyFile,
      public_key: expected.publicKey,
      key_id: expected.keyId,
    });
    expect(stdout).not.toContain("PRIVATE KEY");
    devicePublicKey = fields.public_key!;
  });

  it("keygen --out refuses to overwrite an existing file", async () => {
    const before = statSync(keyFile).mtimeMs;
    const { code, stderr } = await cli(["keygen", "--out", keyFile]);
    expect(code).toBe(1);
    expect(stderr).toMatch(/^error: .*EEXIST/);
    expect(statSync(keyFile).mtimeMs).toBe(before);
  });

  it("session put writes the session hash and a session-events entry", async () => {
    const { code, stdout } = await cli([
      "session",
      "put",
      "--session",
      "ds-cli",
      "--user",
      "u-cli",
      "--public-key",
      devicePublicKey,
    ]);
    expect(code).toBe(0);
    const match = /^session ds-cli active \(entry (\d+-\d+)\)$/.exec(stdout);
    expect(match).not.toBeNull();
    expect(await admin.hgetall("gateway:session:ds-cli")).toEqual({
      user_id: "u-cli",
      client_public_key: devicePublicKey,
      status: "active",
      updated_at_ms: expect.stringMatching(/^\d+$/),
    });
    const entries = await admin.xrange("gateway:session_events", match![1]!, match![1]!);
    expect(entries).toHaveLength(1);
    expect(entries[0]![1]).toEqual([
      "device_session_id",
      "ds-cli",
      "user_id",
      "u-cli",
      "client_public_key",
      devicePublicKey,
      "status",
      "active",
    ]);
  });

  it("session put takes a public key that starts with '-' as the flag's value", async () => {
    let key = newDeviceKey().publicKeyText;
    while (!key.startsWith("-")) key = newDeviceKey().publicKeyText;
    const { code, stdout, stderr } = await cli([
      "session",
      "put",
      "--session",
      "ds-dash",
      "--user",
      "u-dash",
      "--public-key",
      key,
    ]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(stdout).toMatch(/^session ds-dash active \(entry \d+-\d+\)$/);
    expect(await admin.hget("gateway:session:ds-dash", "client_public_key")).toBe(key);
  });

  it("a string flag followed by another flag is still a usage error", async () => {
    const { code, stderr } = await cli(["session", "put", "--session", "--user", "u-x"]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/^error: .*--session/);
  });

  it("exec sends a signed command and prints the verified response", async () => {
    const { code, stdout, stderr } = await execEchoHello();
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual({
      request_id: expect.any(String),
      result_code: "ok",
      payload: "hello",
      payload_hex: Buffer.from("hello").toString("hex"),
      timestamp_ms: expect.any(Number),
      key_id: vectors.gateway_key.key_id,
      signature: "verified",
    });
  });

  it("exec fails when the response is not signed by the given gateway key", async () => {
    const args = device();
    args[args.indexOf("--gateway-key") + 1] = newDeviceKey().publicKeyText;
    const { code, stdout, stderr } = await execEchoHello(args);
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toMatch(/^error: response \S+ has an invalid gateway signature$/);
  });

  it("subscribe receives the bootstrap event, then an event published with the CLI", async () => {
    const out = createIo();
    const subscribing = runCli(["subscribe", ...device(), "--count", "2"], env, out.io);
    // The bootstrap event is sent after the stream is registered, so an event
    // published after it reaches this stream.
    await out.untilStdoutLines(1, subscribing);
    const bootstrap = JSON.parse(out.stdout[0]!);
    expect(bootstrap).toMatchObject({
      event_type: "gateway.server_time",
      request_id: expect.stringMatching(/.+/),
      payload: "",
      signature: "verified",
    });

    const published = await cli([
      "event",
      "publish",
      "--user",
      "u-cli",
      "--type",
      "demo.note",
      "--payload",
      "hi",
    ]);
    expect(published.code).toBe(0);
    const [, eventId] = /^event (\d+-\d+) published$/.exec(published.stdout) ?? [];
    expect(eventId).toBeDefined();

    expect(await subscribing).toBe(0);
    expect(out.stderr).toEqual([]);
    expect(out.stdout).toHaveLength(2);
    expect(JSON.parse(out.stdout[1]!)).toEqual({
      event_id: eventId,
      event_type: "demo.note",
      request_id: "",
      timestamp_ms: expect.any(Number),
      payload: "hi",
      payload_hex: Buffer.from("hi").toString("hex"),
      signature: "verified",
    });
  });

  // The open stream ends once the gateway has applied the revoke, which makes
  // the following exec deterministic (the gateway caches the active session).
  it("session revoke ends the open stream, then exec fails with FAILED_PRECONDITION", async () => {
    const out = createIo();
    const subscribing = runCli(["subscribe", ...device()], env, out.io);
    await out.untilStdoutLines(1, subscribing);

    const revoked = await cli(["session", "revoke", "--session", "ds-cli"]);
    expect(revoked.code).toBe(0);
    expect(revoked.stdout).toMatch(/^session ds-cli revoked \(entry \d+-\d+\)$/);
    expect(await admin.hget("gateway:session:ds-cli", "status")).toBe("revoked");
    expect(await admin.hget("gateway:session:ds-cli", "revoked_at_ms")).toMatch(/^\d+$/);

    expect(await subscribing).toBe(1);
    expect(out.stderr).toEqual(["error: FAILED_PRECONDITION: device session is revoked"]);

    const { code, stdout, stderr } = await execEchoHello();
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toBe("error: FAILED_PRECONDITION: device session is revoked");
  });

  it("session revoke of an unknown session fails and writes nothing", async () => {
    const before = await admin.xlen("gateway:session_events");
    const { code, stderr } = await cli(["session", "revoke", "--session", "ds-nobody"]);
    expect(code).toBe(1);
    expect(stderr).toBe("error: session ds-nobody not found");
    expect(await admin.xlen("gateway:session_events")).toBe(before);
    expect(await admin.exists("gateway:session:ds-nobody")).toBe(0);
  });
});

describe("subscribe --from and --follow", () => {
  // Streams of their own, so restarting this gateway touches no other test.
  const streams = {
    GATEWAY_CLIENT_EVENTS_REDIS_STREAM: "cli-follow:client_events",
    GATEWAY_SESSION_EVENTS_REDIS_STREAM: "cli-follow:session_events",
  };
  const keyFile = join(tmp, "follow.pem");
  const started: Awaited<ReturnType<typeof startGateway>>[] = [];

  afterEach(async () => {
    for (const node of started.splice(0)) await node.stop();
  });

  /**
   * A gateway on streams named after `name` (stopped after the test), once
   * its history router started there, and an active device session of its
   * own: the CLI's environment and device arguments, and a publisher.
   */
  async function ownGatewayAndDevice(name: string) {
    const own = {
      GATEWAY_CLIENT_EVENTS_REDIS_STREAM: `${name}:client_events`,
      GATEWAY_SESSION_EVENTS_REDIS_STREAM: `${name}:session_events`,
    };
    const node = await startGateway(redis, { env: own, routes });
    started.push(node);
    const routerKey = createKeyspace().historyRouterKey(own.GATEWAY_CLIENT_EVENTS_REDIS_STREAM);
    await waitFor(
      `the history router on ${name}`,
      async () => (await admin.exists(routerKey)) === 1,
    );
    const ownEnv = { ...env, ...own };
    const { privateKey, publicKeyText } = newDeviceKey();
    const ownKeyFile = join(tmp, `${name}.pem`);
    writeFileSync(ownKeyFile, privateKey.export({ type: "pkcs8", format: "pem" }) as string, {
      mode: 0o600,
    });
    const put = await cli(
      [
        "session",
        "put",
        "--session",
        `ds-${name}`,
        "--user",
        `u-${name}`,
        "--public-key",
        publicKeyText,
      ],
      ownEnv,
    );
    expect(put.code).toBe(0);
    const device = [
      "--session",
      `ds-${name}`,
      "--key",
      ownKeyFile,
      "--addr",
      node.addresses.grpc,
      "--gateway-key",
      vectors.gateway_key.public_key_base64url,
    ];
    /** Publishes a demo.note to the device's user with the CLI; resolves its event id. */
    const publish = async (payload: string) => {
      const published = await cli(
        ["event", "publish", "--user", `u-${name}`, "--type", "demo.note", "--payload", payload],
        ownEnv,
      );
      expect(published.code).toBe(0);
      return /^event (\d+-\d+) published$/.exec(published.stdout)![1]!;
    };
    return { node, ownEnv, device, publish };
  }

  /** The fields of a printed event a device acts on. */
  const printed = (line: string) => {
    const event = JSON.parse(line) as {
      event_id: string;
      event_type: string;
      payload: string;
      signature: string;
    };
    return {
      event_id: event.event_id,
      event_type: event.event_type,
      payload: event.payload,
      signature: event.signature,
    };
  };

  it("refuses a --from that is not an event id as a usage error naming the flag", async () => {
    const { code, stdout, stderr } = await cli([
      "subscribe",
      "--session",
      "ds-follow",
      "--key",
      keyFile,
      "--from",
      "latest",
    ]);
    expect(code).toBe(2);
    expect(stdout).toBe("");
    expect(stderr).toMatch(/^error: --from expects an event id such as 1764028801000-0\n/);
    expect(stderr).toContain("Usage: edge-gateway");
  });

  // One device through a gateway restart and a revoke, as an operator
  // watching `subscribe --follow` would see it.
  it("--follow resumes after --from, reconnects across a gateway restart and exits 1 on a revoke", async () => {
    const followEnv = { ...env, ...streams };
    const first = await startGateway(redis, { env: streams, routes });
    started.push(first);
    const address = first.addresses.grpc;
    const { privateKey, publicKeyText } = newDeviceKey();
    writeFileSync(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }) as string, {
      mode: 0o600,
    });
    const put = await cli(
      [
        "session",
        "put",
        "--session",
        "ds-follow",
        "--user",
        "u-follow",
        "--public-key",
        publicKeyText,
      ],
      followEnv,
    );
    expect(put.code).toBe(0);
    const device = [
      "--session",
      "ds-follow",
      "--key",
      keyFile,
      "--addr",
      address,
      "--gateway-key",
      vectors.gateway_key.public_key_base64url,
    ];
    const publish = async () => {
      const published = await cli(
        ["event", "publish", "--user", "u-follow", "--type", "demo.note"],
        followEnv,
      );
      expect(published.code).toBe(0);
      return /^event (\d+-\d+) published$/.exec(published.stdout)![1]!;
    };
    const shown = (line: string) => {
      const event = JSON.parse(line) as { event_type: string; event_id: string };
      return `${event.event_type} ${event.event_id}`;
    };

    // An event the device receives live, so the gateway has read it.
    const live = createIo();
    const listening = runCli(["subscribe", ...device, "--count", "2"], followEnv, live.io);
    await live.untilStdoutLines(1, listening);
    const received = await publish();
    expect(await listening).toBe(0);
    expect(shown(live.stdout[1]!)).toBe(`demo.note ${received}`);

    // Nothing was published after it: the stream resumes without a gap under
    // any rule, so the bootstrap carries exactly the id given to --from.
    const out = createIo();
    const following = runCli(
      ["subscribe", ...device, "--from", received, "--follow"],
      followEnv,
      out.io,
    );
    await out.untilStdoutLines(1, following);
    expect(shown(out.stdout[0]!)).toBe(`gateway.server_time ${received}`);
    expect(out.stderr).toEqual([]);

    // An event published while the gateway is away is replayed after a
    // bootstrap equal to the id the device sent: the history kept it.
    await first.stop();
    const missed = await publish();
    started.push(
      await startGateway(redis, {
        env: { ...streams, GATEWAY_AUTHENTICATED_GRPC_ADDR: address },
        routes,
      }),
    );
    await out.untilStdoutLines(3, following);

    const revoked = await cli(["session", "revoke", "--session", "ds-follow"], followEnv);
    expect(revoked.code).toBe(0);
    expect(await following).toBe(1);

    const continuity = out.stderr.filter((line) => line.startsWith("continuity"));
    expect({ stdout: out.stdout.map(shown), continuity }).toEqual({
      stdout: [
        `gateway.server_time ${received}`,
        `gateway.server_time ${received}`,
        `demo.note ${missed}`,
      ],
      continuity: [],
    });
    // Each reconnect resumed after the last event printed; none followed the revoke.
    const reconnects = out.stderr.filter((line) => line.startsWith("stream ended"));
    expect(reconnects[0]).toMatch(
      new RegExp(
        `^stream ended with UNAVAILABLE: gateway is shutting down; reconnecting in \\d+ ms after ${received}$`,
      ),
    );
    for (const line of reconnects) {
      expect(line).toMatch(
        new RegExp(
          `^stream ended with UNAVAILABLE: .*; reconnecting in \\d+ ms after ${received}$`,
        ),
      );
    }
    expect(out.stderr).toEqual([
      ...reconnects,
      ...continuity,
      "error: FAILED_PRECONDITION: device session is revoked",
    ]);
  });

  it("--from without --follow prints the missed events after a bootstrap equal to --from, then live ones, and ends with the stream", async () => {
    const { node, ownEnv, device, publish } = await ownGatewayAndDevice("cli-from");
    const seen = await publish("seen");
    const missed = [await publish("missed-1"), await publish("missed-2")];

    const out = createIo();
    const subscribing = runCli(["subscribe", ...device, "--from", seen], ownEnv, out.io);
    await out.untilStdoutLines(3, subscribing);
    const live = await publish("live");
    await out.untilStdoutLines(4, subscribing);
    // Without --follow the CLI does not reconnect: the stream's end is its end.
    await node.stop();
    expect(await subscribing).toBe(1);

    expect(out.stdout.map(printed)).toEqual([
      { event_id: seen, event_type: "gateway.server_time", payload: "", signature: "verified" },
      { event_id: missed[0], event_type: "demo.note", payload: "missed-1", signature: "verified" },
      { event_id: missed[1], event_type: "demo.note", payload: "missed-2", signature: "verified" },
      { event_id: live, event_type: "demo.note", payload: "live", signature: "verified" },
    ]);
    expect(out.stderr).toEqual(["error: UNAVAILABLE: gateway is shutting down"]);
  });

  it.each([
    ["without --follow", []],
    ["with --follow", ["--follow"]],
  ])(
    "--from an id the gateway never issued prints that continuity was lost, then the events from the bootstrap on (%s)",
    async (_mode, follow) => {
      const name = `cli-lost-${follow.length}`;
      const { ownEnv, device, publish } = await ownGatewayAndDevice(name);
      const never = `${Date.now() + 3_600_000}-0`;

      const out = createIo();
      const subscribing = runCli(
        ["subscribe", ...device, "--from", never, "--count", "2", ...follow],
        ownEnv,
        out.io,
      );
      await out.untilStdoutLines(1, subscribing);
      const live = await publish("live");
      expect(await subscribing).toBe(0);

      const [bootstrap, event] = out.stdout.map(printed);
      expect(bootstrap).toMatchObject({ event_type: "gateway.server_time", signature: "verified" });
      expect(bootstrap!.event_id).not.toBe(never);
      expect(event).toEqual({
        event_id: live,
        event_type: "demo.note",
        payload: "live",
        signature: "verified",
      });
      expect(out.stderr).toEqual([
        `continuity lost after ${never}: resync (the stream continues from ${bootstrap!.event_id})`,
      ]);
    },
  );
});

describe("CLI usage errors", () => {
  it.each([
    ["an unknown command", ["frobnicate"], 'unknown command "frobnicate"'],
    ["no command", [], 'unknown command ""'],
    [
      "exec without --session",
      ["exec", "--key", "device.pem", "--type", "demo.echo"],
      "--session is required",
    ],
    ["session revoke without --session", ["session", "revoke"], "--session is required"],
    ["an unknown option", ["keygen", "--bogus"], "--bogus"],
    ["session with no action", ["session"], "expected: session put | session revoke"],
    ["infra without provision", ["infra", "teardown"], "expected: infra provision"],
  ])("%s exits 2 and prints the usage", async (_name, argv, message) => {
    const { code, stdout, stderr } = await cli(argv);
    expect(code).toBe(2);
    expect(stdout).toBe("");
    expect(stderr).toMatch(/^error: /);
    expect(stderr).toContain(message);
    expect(stderr).toContain("Usage: edge-gateway");
  });

  it("help prints the usage and exits 0", async () => {
    const { code, stdout } = await cli(["help"]);
    expect(code).toBe(0);
    expect(stdout).toContain("Usage: edge-gateway");
  });
});

describe("config check", () => {
  it("accepts a valid environment and prints the signer's key_id", async () => {
    const { code, stdout, stderr } = await cli(["config", "check"]);
    expect(code).toBe(0);
    expect(stderr).toBe("");
    expect(stdout).toContain("configuration is valid");
    expect(stdout).toContain(`redis addr=${redis.addr} db=0 key_prefix=gateway:`);
    expect(stdout).toContain(`response signer key_id=${vectors.gateway_key.key_id}`);
    expect(stdout).not.toContain(redis.password);
  });

  it.each<[string, () => Record<string, string>, RegExp]>([
    [
      "GATEWAY_REDIS_DB=16",
      () => ({ GATEWAY_REDIS_DB: "16" }),
      /^error: GATEWAY_REDIS_DB: expected an integer from 0 to 15, got "16"$/,
    ],
    [
      "the deprecated GATEWAY_REDIS_USERNAME",
      () => ({ GATEWAY_REDIS_USERNAME: "default" }),
      /^error: GATEWAY_REDIS_USERNAME: is no longer accepted/,
    ],
    [
      "the deprecated GATEWAY_REDIS_TLS_ENABLED, even empty",
      () => ({ GATEWAY_REDIS_TLS_ENABLED: "" }),
      /^error: GATEWAY_REDIS_TLS_ENABLED: is no longer accepted/,
    ],
    [
      "an empty GATEWAY_REDIS_PASSWORD",
      () => ({ GATEWAY_REDIS_PASSWORD: "" }),
      /^error: GATEWAY_REDIS_PASSWORD: is required$/,
    ],
    [
      "a missing signer key file",
      () => ({ GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH: join(tmp, "missing.pem") }),
      /^error: cannot read signer key file .*missing\.pem \(ENOENT\)$/,
    ],
    [
      "an unreadable gRPC TLS certificate",
      () => ({
        GATEWAY_GRPC_TLS_CERT_PATH: join(tmp, "missing-cert.pem"),
        GATEWAY_GRPC_TLS_KEY_PATH: join(tmp, "missing-key.pem"),
      }),
      /^error: GATEWAY_GRPC_TLS_CERT_PATH: cannot read .*missing-cert\.pem \(ENOENT\)$/,
    ],
    [
      "a routes module that cannot be imported",
      () => ({ GATEWAY_ROUTES_MODULE: join(tmp, "missing-routes.mjs") }),
      /^error: GATEWAY_ROUTES_MODULE: cannot import /,
    ],
    [
      "the password pasted into another variable",
      () => ({ GATEWAY_REDIS_DB: redis.password }),
      /^error: GATEWAY_REDIS_DB: /,
    ],
  ])(
    "refuses %s with exit 1, naming the problem, never the password",
    async (_name, override, expected) => {
      const { code, stdout, stderr } = await cli(["config", "check"], { ...env, ...override() });
      expect(code).toBe(1);
      expect(stdout).toBe("");
      expect(stderr).toMatch(expected);
      expect(stderr).not.toContain(redis.password);
    },
  );
});

describe("event publish", () => {
  it.each([
    ["--user", ["--user", "u cli", "--type", "demo.note"], "userId"],
    [
      "--session",
      ["--user", "u-cli", "--session", "ds/1", "--type", "demo.note"],
      "deviceSessionId",
    ],
    ["--type", ["--user", "u-cli", "--type", "demo note"], "eventType"],
    [
      "--request-id",
      ["--user", "u-cli", "--type", "demo.note", "--request-id", "r 1"],
      "requestId",
    ],
  ])("with an invalid %s exits 1 and writes nothing", async (_flag, args, field) => {
    const before = await admin.xlen("gateway:client_events");
    const { code, stdout, stderr } = await cli(["event", "publish", ...args]);
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toMatch(new RegExp(`^error: publishClientEvent: ${field} must be`));
    expect(await admin.xlen("gateway:client_events")).toBe(before);
  });

  // `--session "$SESSION"` with an unset variable must not widen the audience
  // from one device session to every device of the user.
  it("with an empty --session fails and writes nothing", async () => {
    const before = await admin.xlen("gateway:client_events");
    const args = ["event", "publish", "--user", "u-cli", "--session", "", "--type", "demo.note"];
    const { code, stdout, stderr } = await cli(args);
    expect([1, 2]).toContain(code);
    expect(stdout).toBe("");
    expect(stderr).toMatch(/session/i);
    expect(await admin.xlen("gateway:client_events")).toBe(before);
  });
});

describe("infra provision through the CLI", () => {
  const streams = {
    GATEWAY_SESSION_EVENTS_REDIS_STREAM: "cli-provision:session_events",
    GATEWAY_CLIENT_EVENTS_REDIS_STREAM: "cli-provision:client_events",
  };

  it("--check fails on missing streams, provisioning creates them, --check then passes", async () => {
    const provisionEnv = { ...env, ...streams };
    const missing = await cli(["infra", "provision", "--check"], provisionEnv);
    expect(missing.code).toBe(1);
    expect(missing.stdout).toContain("(check only: nothing will be changed)");
    expect(missing.stderr).toContain(
      "stream cli-provision:session_events (session events) does not exist",
    );
    expect(missing.stderr).toContain(
      "stream cli-provision:client_events (client events) does not exist",
    );
    expect(await admin.exists(...Object.values(streams))).toBe(0);

    const created = await cli(["infra", "provision"], provisionEnv);
    expect(created.code).toBe(0);
    expect(created.stdout).toContain(
      "stream cli-provision:session_events (session events): created",
    );
    expect(created.stdout).toContain("stream cli-provision:client_events (client events): created");

    const checked = await cli(["infra", "provision", "--check"], provisionEnv);
    expect(checked.code).toBe(0);
    expect(checked.stderr).toBe("");
    expect(checked.stdout).toContain(
      "stream cli-provision:session_events (session events): exists",
    );
    expect(checked.stdout).toContain("stream cli-provision:client_events (client events): exists");
    expect(checked.stdout).toContain("maxmemory-policy: noeviction");
    expect(await admin.type(streams.GATEWAY_SESSION_EVENTS_REDIS_STREAM)).toBe("stream");

    for (const output of [missing, created, checked]) {
      expect(`${output.stdout}\n${output.stderr}`).not.toContain(redis.password);
    }
  });

  it("refuses --check with --trim as a usage error", async () => {
    const { code, stderr } = await cli(["infra", "provision", "--check", "--trim"]);
    expect(code).toBe(2);
    expect(stderr).toContain("--check changes nothing");
  });
});

describe("the built bin dispatches CLI commands", () => {
  it("keygen prints a PEM, its public key and key_id, and exits 0", async () => {
    const { code, stdout, stderr } = await runBin(["keygen"]);
    expect(code).toBe(0);
    expect(stderr).toBe("");
    const pem = /-----BEGIN PRIVATE KEY-----\n[\s\S]+?\n-----END PRIVATE KEY-----/.exec(stdout);
    expect(pem).not.toBeNull();
    const expected = expectedKeyLines(pem![0]);
    expect(keygenFields(stdout)).toEqual({
      public_key: expected.publicKey,
      key_id: expected.keyId,
    });
  });

  it("keygen --out writes the key file with mode 0600", async () => {
    const path = join(tmp, "bin-key.pem");
    const { code, stdout } = await runBin(["keygen", "--out", path]);
    expect(code).toBe(0);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(keygenFields(stdout).key_id).toBe(expectedKeyLines(readFileSync(path, "utf8")).keyId);
  });

  it("config check reads the process environment and exits 0", async () => {
    const { code, stdout } = await runBin(["config", "check"], env);
    expect(code).toBe(0);
    expect(stdout).toContain("configuration is valid");
    expect(stdout).toContain(`response signer key_id=${vectors.gateway_key.key_id}`);
    expect(stdout).not.toContain(redis.password);
  });

  it("an unknown command exits 2 with the usage on stderr", async () => {
    const { code, stdout, stderr } = await runBin(["frobnicate"]);
    expect(code).toBe(2);
    expect(stdout).toBe("");
    expect(stderr).toContain('error: unknown command "frobnicate"');
    expect(stderr).toContain("Usage: edge-gateway");
  });

  it("a failing command exits 1", async () => {
    const { code, stderr } = await runBin(["config", "check"], {
      ...env,
      GATEWAY_REDIS_DB: "16",
    });
    expect(code).toBe(1);
    expect(stderr).toContain("GATEWAY_REDIS_DB");
  });
});

/**
 * The `edge-gateway` command line for operators and device developers:
 * keys, sessions, events, acting as a device, and checking configuration.
 */
import { createPublicKey, generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ClientError, Status } from "nice-grpc";
import { keyIdOf, rawPublicKeyOf } from "../../handlers/ed25519.js";
import { isStreamId } from "../../handlers/identifiers.js";
import type { SubscribeEventsResponse } from "../../proto/gen/edgegateway/v1/edge_gateway.js";
import { type CliIo, PROCESS_IO } from "./io.js";
import { runProvisionCli } from "./provision-command.js";

export type { CliIo };

import { createStaticRouter } from "../../handlers/router.js";
import { formatAddress, loadConfig, loadRedisToolConfig } from "../config/config.js";
import { DEFAULTS } from "../config/defaults.js";
import { loadRoutesModule } from "../config/routes-module.js";
import { loadResponseSigner, parseSignerKeyPem } from "../config/signer.js";
import { loadGrpcTls } from "../grpc/server.js";
import { createDeviceClient } from "../kit/device-client.js";
import { publishClientEvent, publishSessionSnapshot } from "../kit/publishers.js";
import { connectRedis, type RedisClient } from "../redis/connection.js";
import { createKeyspace } from "../redis/keyspace.js";
import { isSessionStatus, SESSION_FIELDS } from "../redis/session-record.js";
import { SILENT_LOGGER } from "../telemetry/logger.js";

/** A usage error: exit code 2 with the message. */
class UsageError extends Error {}

export const USAGE = `Usage: edge-gateway [command]

  (no command) | serve        run the gateway from GATEWAY_* environment variables
  dev                         run a local gateway with a local redis-server and demo session
  keygen [--out FILE]         create an Ed25519 key: PKCS#8 PEM, raw public key, key_id
  session put --session ID --user ID --public-key KEY [--status active|revoked]
  session revoke --session ID
  event publish --user ID --type TYPE [--session ID] [--payload TEXT | --payload-hex HEX]
                [--request-id ID]
  exec --session ID --key FILE --type TYPE [--payload TEXT | --payload-hex HEX]
  subscribe --session ID --key FILE [--count N] [--from EVENT_ID] [--follow]
  config check                validate the environment exactly as startup does
  infra provision [--check] [--trim] [--max-len N]

Redis commands read GATEWAY_REDIS_* and the stream variables. exec and subscribe
act as a device: --addr (default 127.0.0.1:9090 or GATEWAY_AUTHENTICATED_GRPC_ADDR),
--key is the device session's PKCS#8 PEM private key, and the gateway's public key
comes from --gateway-key (base64url raw key) or --gateway-key-file (PEM, private or
public; default GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH). Responses and events
are verified against it.

subscribe prints each event as a JSON line, the bootstrap event first. --from resumes
after that event_id (such as 1764028801000-0); --follow reconnects, with jitter, after
UNAVAILABLE, RESOURCE_EXHAUSTED, CANCELLED (a stream the gateway reset) or a dropped
connection, resuming after the last event it printed. When the gateway cannot resume
without a gap, stderr says "continuity lost after <event_id>: resync (the stream
continues from <event_id>)". A revoke (FAILED_PRECONDITION) or any other status ends
it with exit code 1.`;

/**
 * Runs one CLI command and resolves its exit code (0 success, 1 failure,
 * 2 usage error). Never prints the Redis password.
 *
 * @example
 * process.exitCode = await runCli(["keygen"]);
 */
export async function runCli(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>> = process.env,
  io: CliIo = PROCESS_IO,
): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "keygen":
        return keygen(rest, io);
      case "session":
        return await session(rest, env, io);
      case "event":
        return await event(rest, env, io);
      case "exec":
        return await exec(rest, env, io);
      case "subscribe":
        return await subscribe(rest, env, io);
      case "config":
        return await configCheck(rest, env, io);
      case "infra":
        if (rest[0] !== "provision") throw new UsageError("expected: infra provision");
        return await runProvisionCli(rest.slice(1), env, io);
      case "help":
      case "--help":
      case "-h":
        io.stdout(USAGE);
        return 0;
      default:
        throw new UsageError(`unknown command "${command ?? ""}"`);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr(`error: ${error.message}\n\n${USAGE}`);
      return 2;
    }
    if (error instanceof ClientError) {
      io.stderr(`error: ${Status[error.code]}: ${error.details}`);
      return 1;
    }
    io.stderr(`error: ${(error as Error).message}`);
    return 1;
  }
}

function options<T extends Record<string, { type: "string" | "boolean" }>>(
  args: string[],
  spec: T,
) {
  try {
    return parseArgs({
      args: joinOptionValues(args, spec),
      options: spec,
      strict: true,
      allowPositionals: false,
    }).values as {
      [K in keyof T]?: T[K]["type"] extends "string" ? string : boolean;
    };
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/**
 * Writes `--name value` as `--name=value` for string options. Keys and ids are
 * base64url or free text and may start with `-` (one base64url key in 64 does);
 * `parseArgs` would refuse such a value as ambiguous. Only a known flag after a
 * string option is read as a flag.
 */
function joinOptionValues(args: readonly string[], spec: Record<string, { type: string }>) {
  const isFlag = (arg: string) => arg.startsWith("--") && arg.slice(2).split("=")[0]! in spec;
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const next = args[i + 1];
    const name = arg.startsWith("--") && !arg.includes("=") ? arg.slice(2) : undefined;
    if (
      name !== undefined &&
      spec[name]?.type === "string" &&
      next !== undefined &&
      !isFlag(next)
    ) {
      joined.push(`${arg}=${next}`);
      i++;
    } else {
      joined.push(arg);
    }
  }
  return joined;
}

function required(value: string | undefined, flag: string): string {
  if (value === undefined || value === "") throw new UsageError(`${flag} is required`);
  return value;
}

function payloadOf(values: { payload?: string; "payload-hex"?: string }): Buffer {
  if (values.payload !== undefined && values["payload-hex"] !== undefined) {
    throw new UsageError("give --payload or --payload-hex, not both");
  }
  if (values["payload-hex"] !== undefined) {
    if (!/^(?:[0-9a-fA-F]{2})*$/.test(values["payload-hex"])) {
      throw new UsageError("--payload-hex expects an even number of hex digits");
    }
    return Buffer.from(values["payload-hex"], "hex");
  }
  return Buffer.from(values.payload ?? "", "utf8");
}

/** Prints a new Ed25519 key: PEM (or writes it to --out, mode 0600), public key, key_id. */
function keygen(args: string[], io: CliIo): number {
  const values = options(args, { out: { type: "string" } });
  const { privateKey } = generateKeyPairSync("ed25519");
  const pem = privateKey.export({ type: "pkcs8", format: "pem" }) as string;
  const raw = rawPublicKeyOf(privateKey);
  if (values.out !== undefined) {
    writeFileSync(values.out, pem, { mode: 0o600, flag: "wx" });
    io.stdout(`private_key_pem_path=${values.out}`);
  } else {
    io.stdout(pem.trimEnd());
  }
  io.stdout(`public_key=${raw.toString("base64url")}`);
  io.stdout(`key_id=${keyIdOf(raw)}`);
  return 0;
}

async function withRedis<T>(
  env: Readonly<Record<string, string | undefined>>,
  run: (redis: RedisClient, config: ReturnType<typeof loadRedisToolConfig>) => Promise<T>,
): Promise<T> {
  const config = loadRedisToolConfig(env);
  const redis = await connectRedis(config.redis, SILENT_LOGGER);
  try {
    return await run(redis, config);
  } finally {
    redis.disconnect();
  }
}

async function session(
  args: string[],
  env: Readonly<Record<string, string | undefined>>,
  io: CliIo,
): Promise<number> {
  const [action, ...rest] = args;
  if (action === "put") {
    const values = options(rest, {
      session: { type: "string" },
      user: { type: "string" },
      "public-key": { type: "string" },
      status: { type: "string" },
    });
    const status = values.status ?? "active";
    if (!isSessionStatus(status)) {
      throw new UsageError("--status is active or revoked");
    }
    const snapshot = {
      deviceSessionId: required(values.session, "--session"),
      userId: required(values.user, "--user"),
      clientPublicKey: required(values["public-key"], "--public-key"),
      status,
      ...(status === "revoked" ? { revokedAtMs: Date.now() } : {}),
    } as const;
    const id = await withRedis(env, (redis, config) =>
      publishSessionSnapshot(redis, snapshot, {
        keyPrefix: config.redis.keyPrefix,
        stream: config.sessionEventsStream,
      }),
    );
    io.stdout(`session ${snapshot.deviceSessionId} ${status} (entry ${id})`);
    return 0;
  }
  if (action === "revoke") {
    const values = options(rest, { session: { type: "string" } });
    const deviceSessionId = required(values.session, "--session");
    return withRedis(env, async (redis, config) => {
      // A revoke restates the session's user and key; whatever the hash's other
      // fields hold, the session ends revoked.
      const [userId, clientPublicKey] = await redis.hmget(
        createKeyspace(config.redis.keyPrefix).sessionKey(deviceSessionId),
        SESSION_FIELDS.userId,
        SESSION_FIELDS.clientPublicKey,
      );
      if (userId == null || clientPublicKey == null) {
        io.stderr(`error: session ${deviceSessionId} not found`);
        return 1;
      }
      const id = await publishSessionSnapshot(
        redis,
        {
          deviceSessionId,
          userId,
          clientPublicKey,
          status: "revoked",
          revokedAtMs: Date.now(),
        },
        { keyPrefix: config.redis.keyPrefix, stream: config.sessionEventsStream },
      );
      io.stdout(`session ${deviceSessionId} revoked (entry ${id})`);
      return 0;
    });
  }
  throw new UsageError("expected: session put | session revoke");
}

async function event(
  args: string[],
  env: Readonly<Record<string, string | undefined>>,
  io: CliIo,
): Promise<number> {
  const [action, ...rest] = args;
  if (action !== "publish") throw new UsageError("expected: event publish");
  const values = options(rest, {
    user: { type: "string" },
    session: { type: "string" },
    type: { type: "string" },
    payload: { type: "string" },
    "payload-hex": { type: "string" },
    "request-id": { type: "string" },
  });
  const input = {
    userId: required(values.user, "--user"),
    eventType: required(values.type, "--type"),
    payload: payloadOf(values),
    ...(values.session !== undefined ? { deviceSessionId: values.session } : {}),
    ...(values["request-id"] !== undefined ? { requestId: values["request-id"] } : {}),
  };
  const id = await withRedis(env, (redis, config) =>
    publishClientEvent(redis, input, { stream: config.clientEventsStream }),
  );
  io.stdout(`event ${id} published`);
  return 0;
}

function gatewayPublicKey(
  values: { "gateway-key"?: string; "gateway-key-file"?: string },
  env: Readonly<Record<string, string | undefined>>,
): string {
  if (values["gateway-key"] !== undefined) return values["gateway-key"];
  const path = values["gateway-key-file"] ?? env.GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH;
  if (path === undefined || path === "") {
    throw new UsageError(
      "give --gateway-key or --gateway-key-file to verify the gateway's signatures",
    );
  }
  const pem = readFileSync(path, "utf8");
  const key = pem.includes("PRIVATE KEY") ? parseSignerKeyPem(pem, path) : createPublicKey(pem);
  return rawPublicKeyOf(key).toString("base64url");
}

const DEVICE_OPTIONS = {
  addr: { type: "string" },
  session: { type: "string" },
  key: { type: "string" },
  "gateway-key": { type: "string" },
  "gateway-key-file": { type: "string" },
} as const;

function deviceClient(
  values: {
    addr?: string;
    session?: string;
    key?: string;
    "gateway-key"?: string;
    "gateway-key-file"?: string;
  },
  env: Readonly<Record<string, string | undefined>>,
) {
  const configured = env.GATEWAY_AUTHENTICATED_GRPC_ADDR;
  const address =
    values.addr ??
    (configured && !configured.startsWith(":")
      ? configured
      : `127.0.0.1${configured || DEFAULTS.grpcAddr}`);
  const deviceSessionId = required(values.session, "--session");
  return {
    deviceSessionId,
    client: createDeviceClient({
      address,
      deviceSessionId,
      devicePrivateKey: readFileSync(required(values.key, "--key"), "utf8"),
      gatewayPublicKey: gatewayPublicKey(values, env),
    }),
  };
}

async function exec(
  args: string[],
  env: Readonly<Record<string, string | undefined>>,
  io: CliIo,
): Promise<number> {
  const values = options(args, {
    ...DEVICE_OPTIONS,
    type: { type: "string" },
    payload: { type: "string" },
    "payload-hex": { type: "string" },
  });
  const messageType = required(values.type, "--type");
  const { client } = deviceClient(values, env);
  try {
    const response = await client.execute(messageType, payloadOf(values));
    io.stdout(
      JSON.stringify({
        request_id: response.requestId,
        result_code: response.resultCode,
        payload: Buffer.from(response.payload).toString("utf8"),
        payload_hex: Buffer.from(response.payload).toString("hex"),
        timestamp_ms: response.timestampMs,
        key_id: response.keyId,
        signature: "verified",
      }),
    );
    return 0;
  } finally {
    client.close();
  }
}

/** Prints one verified event as a JSON line. */
function printEvent(io: CliIo, pushed: SubscribeEventsResponse): void {
  io.stdout(
    JSON.stringify({
      event_id: pushed.eventId,
      event_type: pushed.eventType,
      request_id: pushed.requestId,
      timestamp_ms: pushed.timestampMs,
      payload: Buffer.from(pushed.payload).toString("utf8"),
      payload_hex: Buffer.from(pushed.payload).toString("hex"),
      signature: "verified",
    }),
  );
}

function printContinuityLost(io: CliIo, lastEventId: string, position: string): void {
  io.stderr(`continuity lost after ${lastEventId}: resync (the stream continues from ${position})`);
}

function describeStreamEnd(error: unknown): string {
  if (error === undefined) return "without a status";
  if (error instanceof ClientError) return `with ${Status[error.code]}: ${error.details}`;
  return `with ${(error as Error).message}`;
}

async function subscribe(
  args: string[],
  env: Readonly<Record<string, string | undefined>>,
  io: CliIo,
): Promise<number> {
  const values = options(args, {
    ...DEVICE_OPTIONS,
    count: { type: "string" },
    from: { type: "string" },
    follow: { type: "boolean" },
  });
  if (values.count !== undefined && !/^[1-9]\d{0,8}$/.test(values.count)) {
    throw new UsageError("--count expects a positive integer");
  }
  if (values.from !== undefined && !isStreamId(values.from)) {
    throw new UsageError("--from expects an event id such as 1764028801000-0");
  }
  const from = values.from;
  const count = values.count === undefined ? Number.POSITIVE_INFINITY : Number(values.count);
  const { client } = deviceClient(values, env);
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once("SIGINT", onSignal);
  let seen = 0;
  try {
    if (values.follow === true) {
      const items = client.subscribe({
        lastEventId: from,
        signal: abort.signal,
        follow: {
          onReconnect: ({ error, delayMs, lastEventId }) =>
            io.stderr(
              `stream ended ${describeStreamEnd(error)}; reconnecting in ${Math.round(delayMs)} ms${
                lastEventId === "" ? "" : ` after ${lastEventId}`
              }`,
            ),
        },
      });
      for await (const item of items) {
        if (item.kind === "continuity_lost") {
          printContinuityLost(io, item.lastEventId, item.position);
          continue;
        }
        printEvent(io, item.event);
        seen += 1;
        if (seen >= count) break;
      }
      return 0;
    }
    for await (const pushed of client.subscribe({ lastEventId: from, signal: abort.signal })) {
      // The bootstrap tells whether the gateway resumed after --from (contract §12).
      if (seen === 0 && from !== undefined && pushed.eventId !== from) {
        printContinuityLost(io, from, pushed.eventId);
      }
      printEvent(io, pushed);
      seen += 1;
      if (seen >= count) break;
    }
    return 0;
  } catch (error) {
    if (abort.signal.aborted) return 0;
    throw error;
  } finally {
    process.off("SIGINT", onSignal);
    client.close();
  }
}

async function configCheck(
  args: string[],
  env: Readonly<Record<string, string | undefined>>,
  io: CliIo,
): Promise<number> {
  if (args[0] !== "check" || args.length > 1) throw new UsageError("expected: config check");
  // Every check startup makes before it touches Redis.
  const config = loadConfig(env);
  const signer = await loadResponseSigner(config.signerKeyPath);
  if (config.grpcTls !== undefined) await loadGrpcTls(config.grpcTls);
  if (config.routesModule !== undefined) {
    createStaticRouter(await loadRoutesModule(config.routesModule));
  }
  io.stdout(
    [
      "configuration is valid",
      `redis addr=${formatAddress(config.redis.master)} db=${config.redis.db} key_prefix=${config.redis.keyPrefix}`,
      `session events stream: ${config.sessionEventsStream}`,
      `client events stream: ${config.clientEventsStream}`,
      `public HTTP: ${formatAddress(config.publicHttpAddr)}`,
      `authenticated gRPC: ${formatAddress(config.grpcAddr)}${config.grpcTls ? " (TLS)" : ""}`,
      `admin HTTP: ${config.adminHttpAddr ? formatAddress(config.adminHttpAddr) : "disabled"}`,
      `response signer key_id=${signer.keyId}`,
    ].join("\n"),
  );
  return 0;
}

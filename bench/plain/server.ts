/**
 * A deliberately plain ExecuteCommand server: the same contract as the
 * gateway (shape checks, freshness, session lookup with a small cache,
 * signature verify, revoked check, `SET NX PX` replay reservation, the
 * `demo.echo` route, a signed response) on bare `@grpc/grpc-js` and
 * `ioredis`, with no framework, metrics or tracing. It is the baseline of
 * `bench/execute-command-vs-plain.ts`, which runs it in a child process.
 *
 * Configured by environment: `PLAIN_REDIS_ADDR` (`host:port`),
 * `PLAIN_REDIS_PASSWORD`, `PLAIN_SIGNER_KEY_PATH` (PKCS#8 PEM of the Ed25519
 * response key). Prints `plain gRPC listening on host:port` once it serves,
 * and exits on SIGTERM or SIGINT.
 */
import { createPrivateKey, type KeyObject, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type sendUnaryData,
  status,
} from "@grpc/grpc-js";
import { Redis } from "ioredis";
import {
  keyIdOf,
  parseDevicePublicKey,
  rawPublicKeyOf,
  verifySignature,
} from "../../handlers/ed25519.js";
import {
  executeCommandResponseSignedBytes,
  executeCommandSignedBytes,
} from "../../handlers/signing.js";
import {
  ExecuteCommandRequest,
  ExecuteCommandResponse,
} from "../../proto/gen/edgegateway/v1/edge_gateway.js";
import { createKeyspace } from "../../runtime/redis/keyspace.js";

/** The gateway's defaults for the same settings (contract §2). */
const MAX_CLOCK_SKEW_MS = 30_000;
const SESSION_CACHE_TTL_MS = 30_000;
const MAX_PAYLOAD_BYTES = 262_144;
const REPLAY_TTL_MS = 2 * MAX_CLOCK_SKEW_MS + 1000;
const IDENTIFIER = /^[A-Za-z0-9._:-]{1,128}$/;
const TYPE_NAME = /^[A-Za-z0-9._:/-]{1,128}$/;

interface Session {
  readonly userId: string;
  readonly key: KeyObject;
  readonly revoked: boolean;
  readonly expiresAt: number;
}

class CallError extends Error {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
  }
}

function env(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`${name} is not set`);
  return value;
}

const [redisHost, redisPort] = env("PLAIN_REDIS_ADDR").split(":");
const redis = new Redis({
  host: redisHost,
  port: Number(redisPort),
  password: env("PLAIN_REDIS_PASSWORD"),
});
const signerKey = createPrivateKey(readFileSync(env("PLAIN_SIGNER_KEY_PATH"), "utf8"));
const keyId = keyIdOf(rawPublicKeyOf(signerKey));
const keyspace = createKeyspace();
const sessions = new Map<string, Session>();

/** The session from the cache, else from its Redis hash; undefined if there is none usable. */
async function lookupSession(deviceSessionId: string): Promise<Session | undefined> {
  const now = Date.now();
  const cached = sessions.get(deviceSessionId);
  if (cached !== undefined && cached.expiresAt > now) return cached;
  let fields: (string | null)[];
  try {
    fields = await redis.hmget(
      keyspace.sessionKey(deviceSessionId),
      "user_id",
      "client_public_key",
      "status",
    );
  } catch {
    throw new CallError(status.UNAVAILABLE, "session store unavailable");
  }
  const [userId, publicKey, state] = fields;
  if (!userId || !publicKey || (state !== "active" && state !== "revoked")) return undefined;
  const parsed = parseDevicePublicKey(publicKey);
  if (!parsed.ok) return undefined;
  const session = {
    userId,
    key: parsed.key,
    revoked: state === "revoked",
    expiresAt: now + SESSION_CACHE_TTL_MS,
  };
  sessions.set(deviceSessionId, session);
  return session;
}

async function executeCommand(bytes: Buffer): Promise<Buffer> {
  let request: ExecuteCommandRequest;
  try {
    request = ExecuteCommandRequest.decode(bytes);
  } catch {
    throw new CallError(status.INVALID_ARGUMENT, "request does not decode");
  }
  if (
    request.protocolVersion !== 1 ||
    !IDENTIFIER.test(request.deviceSessionId) ||
    !IDENTIFIER.test(request.requestId) ||
    !TYPE_NAME.test(request.messageType) ||
    request.signature.length !== 64 ||
    request.payload.length > MAX_PAYLOAD_BYTES
  ) {
    throw new CallError(status.INVALID_ARGUMENT, "malformed request");
  }
  if (!(Math.abs(Date.now() - request.timestampMs) <= MAX_CLOCK_SKEW_MS)) {
    throw new CallError(status.UNAUTHENTICATED, "request timestamp outside allowed clock skew");
  }
  const session = await lookupSession(request.deviceSessionId);
  if (session === undefined) {
    throw new CallError(status.UNAUTHENTICATED, "device session not found");
  }
  const valid = await verifySignature(
    session.key,
    executeCommandSignedBytes(request),
    request.signature,
  );
  if (!valid) throw new CallError(status.UNAUTHENTICATED, "invalid request signature");
  if (session.revoked) throw new CallError(status.FAILED_PRECONDITION, "device session is revoked");
  let reserved: "OK" | null;
  try {
    reserved = await redis.set(
      keyspace.replayKey(request.deviceSessionId, request.requestId),
      "1",
      "PX",
      REPLAY_TTL_MS,
      "NX",
    );
  } catch {
    throw new CallError(status.UNAVAILABLE, "replay store unavailable");
  }
  if (reserved === null) throw new CallError(status.ALREADY_EXISTS, "request_id already used");
  if (request.messageType !== "demo.echo") {
    throw new CallError(status.UNIMPLEMENTED, `no route for message_type ${request.messageType}`);
  }

  const resultCode = "ok";
  const payload = request.payload;
  const timestampMs = Date.now();
  const signature = sign(
    null,
    executeCommandResponseSignedBytes({
      keyId,
      deviceSessionId: request.deviceSessionId,
      requestId: request.requestId,
      resultCode,
      timestampMs,
      payload,
    }),
    signerKey,
  );
  return Buffer.from(
    ExecuteCommandResponse.encode({
      protocolVersion: 1,
      requestId: request.requestId,
      resultCode,
      payload,
      timestampMs,
      keyId,
      signature,
    }).finish(),
  );
}

const identity = (value: Buffer) => value;
const server = new Server();
server.addService(
  {
    ExecuteCommand: {
      path: "/edgegateway.v1.EdgeGatewayService/ExecuteCommand",
      requestStream: false,
      responseStream: false,
      // Decoding happens in the handler, so a bad message is INVALID_ARGUMENT.
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
    },
  },
  {
    ExecuteCommand(call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) {
      executeCommand(call.request).then(
        (response) => callback(null, response),
        (error: unknown) =>
          callback(
            error instanceof CallError
              ? { code: error.code, details: error.message }
              : { code: status.INTERNAL, details: "internal error" },
          ),
      );
    },
  },
);

server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, port) => {
  if (error) {
    console.error(error);
    process.exit(1);
  }
  console.log(`plain gRPC listening on 127.0.0.1:${port}`);
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => {
    server.forceShutdown();
    redis.disconnect();
    process.exit(0);
  });
}

/**
 * The ExecuteCommand handler with in-memory ports: every row of contract §5 in
 * order, routing, route failures and the signed response (§4).
 */
import { sign } from "node:crypto";
import { describe, expect, it } from "vitest";
import { parseDevicePublicKey, verifySignature } from "../handlers/ed25519.js";
import { ERROR_TABLE, GatewayError } from "../handlers/errors.js";
import {
  type CallContext,
  createExecuteCommandHandler,
  type ExecuteCommandInput,
  type ExecuteCommandOutput,
} from "../handlers/execute-command.js";
import type {
  Command,
  DeviceSession,
  ReplayStore,
  RouteContext,
  RouteHandler,
  SessionStore,
} from "../handlers/ports.js";
import { createStaticRouter } from "../handlers/router.js";
import {
  executeCommandResponseSignedBytes,
  executeCommandSignedBytes,
} from "../handlers/signing.js";
import { vectors } from "./support/keys.js";
import { captureLogger } from "./support/logger.js";
import {
  createManualClock,
  createMemoryReplayStore,
  createMemorySessionStore,
  gatewayPrivateKey,
  vectorDevice,
  vectorSigner,
} from "./support/ports.js";
import { rejectionOf } from "./support/rejection.js";

interface VectorCase {
  readonly name: string;
  readonly fields: Readonly<Record<string, string | number>>;
  readonly signature_hex: string;
}

function vectorCase(name: string): VectorCase {
  const found = vectors.cases.find((vector) => vector.name === name);
  if (found === undefined) throw new Error(`vector ${name} is missing`);
  return found;
}

function field(vector: VectorCase, name: string): string {
  const value = vector.fields[name];
  if (typeof value !== "string") throw new Error(`${vector.name}.${name} is not a string`);
  return value;
}

function timestampOf(vector: VectorCase): number {
  const value = vector.fields.timestamp_ms;
  if (typeof value !== "number") throw new Error(`${vector.name}.timestamp_ms is not a number`);
  return value;
}

const devicePrivateKey = vectorDevice.privateKey;
const devicePublicKey = vectorDevice.publicKey;

const parsedGatewayKey = parseDevicePublicKey(vectors.gateway_key.public_key_base64url);
if (!parsedGatewayKey.ok) throw new Error("gateway public key must parse");
const gatewayPublicKey = parsedGatewayKey.key;

const NOW = 1_764_028_800_000;
const SKEW_MS = 30_000;
const MAX_PAYLOAD_BYTES = 64;
const SESSION_ID = "ds_01JD8Y6T1VQ8E5A9";
const USER_ID = "user-42";
const MESSAGE_TYPE = "profile.get";

interface HarnessOptions {
  readonly status?: DeviceSession["status"];
  readonly sessions?: SessionStore;
  readonly replay?: ReplayStore;
  readonly routes?: Readonly<Record<string, RouteHandler>>;
  readonly now?: number;
}

/** The handler wired to in-memory ports, with what each port saw. */
function harness(options: HarnessOptions = {}) {
  const sessionStore = createMemorySessionStore([
    {
      deviceSessionId: SESSION_ID,
      userId: USER_ID,
      publicKey: devicePublicKey,
      status: options.status ?? "active",
    },
  ]);
  const replayStore = createMemoryReplayStore();
  const routes: Readonly<Record<string, RouteHandler>> = options.routes ?? {
    [MESSAGE_TYPE]: async () => ({ resultCode: "ok", payload: Buffer.from("{}") }),
  };
  const handle = createExecuteCommandHandler({
    sessions: options.sessions ?? sessionStore,
    replay: options.replay ?? replayStore,
    clock: createManualClock(options.now ?? NOW),
    maxClockSkewMs: SKEW_MS,
    signer: vectorSigner,
    router: createStaticRouter(routes),
    maxPayloadBytes: MAX_PAYLOAD_BYTES,
  });
  const { logger, lines: logLines } = captureLogger();
  const controller = new AbortController();
  const ctx: CallContext = {
    signal: controller.signal,
    deadline: undefined,
    logger,
  };
  return {
    reservations: replayStore.reservations,
    logLines,
    ctx,
    call: (request: ExecuteCommandInput, callCtx: CallContext = ctx) => handle(request, callCtx),
  };
}

/** A request signed by the device key; `signature` overrides the real one. */
function request(overrides: Partial<ExecuteCommandInput> = {}): ExecuteCommandInput {
  const fields = {
    protocolVersion: 1,
    deviceSessionId: SESSION_ID,
    messageType: MESSAGE_TYPE,
    requestId: "req-0001",
    timestampMs: NOW,
    payload: Buffer.from('{"text":"hello"}'),
    ...overrides,
  };
  const signature =
    overrides.signature ?? sign(null, executeCommandSignedBytes(fields), devicePrivateKey);
  return { ...fields, signature };
}

/** What a client sees of a failure: the code, its gRPC status, the message and the metric label. */
interface Outcome {
  readonly code: string;
  readonly status: string;
  readonly message: string;
  readonly authFailure: string | undefined;
}

async function outcomeOf(call: Promise<unknown>): Promise<Outcome> {
  const error = await rejectionOf(call);
  return {
    code: error.code,
    status: ERROR_TABLE[error.code].grpc,
    message: error.message,
    authFailure: error.details?.authFailure,
  };
}

function invalidArgument(message: string): Outcome {
  return {
    code: "invalid_argument",
    status: "INVALID_ARGUMENT",
    message,
    authFailure: "invalid_argument",
  };
}

const IDENTIFIER_RULE = "must be 1-128 characters of [A-Za-z0-9._:-]";
const TYPE_RULE = "must be 1-128 characters of [A-Za-z0-9._:/-]";
const STALE: Outcome = {
  code: "unauthenticated",
  status: "UNAUTHENTICATED",
  message: "request timestamp outside allowed clock skew",
  authFailure: "stale_timestamp",
};
const UNKNOWN_SESSION: Outcome = {
  code: "unauthenticated",
  status: "UNAUTHENTICATED",
  message: "device session not found",
  authFailure: "unknown_session",
};
const BAD_SIGNATURE: Outcome = {
  code: "unauthenticated",
  status: "UNAUTHENTICATED",
  message: "invalid request signature",
  authFailure: "bad_signature",
};
const REVOKED: Outcome = {
  code: "failed_precondition",
  status: "FAILED_PRECONDITION",
  message: "device session is revoked",
  authFailure: "revoked",
};
const REPLAYED: Outcome = {
  code: "already_exists",
  status: "ALREADY_EXISTS",
  message: "request_id already used",
  authFailure: "replayed",
};

function flipped(signature: Uint8Array): Buffer {
  const copy = Buffer.from(signature);
  copy[10] = (copy[10] ?? 0) ^ 0x01;
  return copy;
}

async function verifiesAsGatewayResponse(
  response: ExecuteCommandOutput,
  deviceSessionId: string,
): Promise<boolean> {
  const bytes = executeCommandResponseSignedBytes({
    keyId: response.keyId,
    deviceSessionId,
    requestId: response.requestId,
    resultCode: response.resultCode,
    timestampMs: response.timestampMs,
    payload: response.payload,
  });
  return verifySignature(gatewayPublicKey, bytes, response.signature);
}

describe("ExecuteCommand handler", () => {
  it("answers a valid, signed command with the route's result", async () => {
    const { call } = harness();
    const response = await call(request());
    expect(response.resultCode).toBe("ok");
    expect(response.payload.toString()).toBe("{}");
    expect(response.requestId).toBe("req-0001");
  });

  describe("shape checks (INVALID_ARGUMENT)", () => {
    it.each([0, 2])("refuses protocol_version %i", async (protocolVersion) => {
      const { call } = harness();
      expect(await outcomeOf(call(request({ protocolVersion })))).toEqual(
        invalidArgument("protocol_version must be 1"),
      );
    });

    it.each([
      ["empty", ""],
      ["129 characters", "d".repeat(129)],
      ["a slash", "ds/1"],
      ["a space", "ds 1"],
      ["a non-ASCII letter", "dś1"],
    ])("refuses a device_session_id that is %s", async (_, deviceSessionId) => {
      const { call } = harness();
      expect(await outcomeOf(call(request({ deviceSessionId })))).toEqual(
        invalidArgument(`device_session_id ${IDENTIFIER_RULE}`),
      );
    });

    it.each([
      ["empty", ""],
      ["129 characters", "r".repeat(129)],
      ["a slash", "req/1"],
      ["a space", "req 1"],
    ])("refuses a request_id that is %s", async (_, requestId) => {
      const { call } = harness();
      expect(await outcomeOf(call(request({ requestId })))).toEqual(
        invalidArgument(`request_id ${IDENTIFIER_RULE}`),
      );
    });

    it.each([
      ["empty", ""],
      ["129 characters", "m".repeat(129)],
      ["a space", "profile get"],
      ["a question mark", "profile.get?"],
    ])("refuses a message_type that is %s", async (_, messageType) => {
      const { call } = harness();
      expect(await outcomeOf(call(request({ messageType })))).toEqual(
        invalidArgument(`message_type ${TYPE_RULE}`),
      );
    });

    it("accepts identifiers of exactly 128 characters using every allowed character class", async () => {
      const deviceSessionId = `Az09._:-${"d".repeat(120)}`;
      const requestId = `Az09._:-${"r".repeat(120)}`;
      const messageType = `Az09._:/-${"m".repeat(119)}`;
      const { call } = harness({
        sessions: createMemorySessionStore([
          { deviceSessionId, userId: USER_ID, publicKey: devicePublicKey, status: "active" },
        ]),
        routes: { [messageType]: async () => ({ resultCode: "ok" }) },
      });
      const response = await call(request({ deviceSessionId, requestId, messageType }));
      expect(response.resultCode).toBe("ok");
    });

    // `/` is what keeps replay keys unambiguous, so it is allowed in
    // message_type but not in identifiers.
    it("accepts a message_type containing a slash", async () => {
      const { call } = harness({
        routes: { "billing/invoice.get": async () => ({ resultCode: "ok" }) },
      });
      const response = await call(request({ messageType: "billing/invoice.get" }));
      expect(response.resultCode).toBe("ok");
    });

    it.each([0, 63, 65])("refuses a %i-byte signature", async (size) => {
      const { call } = harness();
      expect(await outcomeOf(call(request({ signature: Buffer.alloc(size, 1) })))).toEqual(
        invalidArgument("signature must be 64 bytes"),
      );
    });

    it("refuses a payload one byte over the maximum", async () => {
      const { call } = harness();
      const payload = Buffer.alloc(MAX_PAYLOAD_BYTES + 1, 0x61);
      expect(await outcomeOf(call(request({ payload })))).toEqual(
        invalidArgument(`payload exceeds ${MAX_PAYLOAD_BYTES} bytes`),
      );
    });

    it("accepts a payload of exactly the maximum", async () => {
      const { call } = harness();
      const response = await call(request({ payload: Buffer.alloc(MAX_PAYLOAD_BYTES, 0x61) }));
      expect(response.resultCode).toBe("ok");
    });
  });

  describe("freshness", () => {
    it.each([
      ["skew in the past", NOW - SKEW_MS],
      ["skew in the future", NOW + SKEW_MS],
    ])("accepts a timestamp exactly the allowed %s", async (_, timestampMs) => {
      const { call } = harness();
      const response = await call(request({ timestampMs }));
      expect(response.resultCode).toBe("ok");
    });

    it.each([
      ["skew + 1 ms in the past", NOW - SKEW_MS - 1],
      ["skew + 1 ms in the future", NOW + SKEW_MS + 1],
    ])("refuses a timestamp %s", async (_, timestampMs) => {
      const { call } = harness();
      expect(await outcomeOf(call(request({ timestampMs })))).toEqual(STALE);
    });
  });

  describe("session lookup", () => {
    it("refuses an unknown device session", async () => {
      const { call } = harness();
      expect(await outcomeOf(call(request({ deviceSessionId: "ds-unknown" })))).toEqual(
        UNKNOWN_SESSION,
      );
    });

    // Fails closed, and the store's own error text stays inside the gateway.
    it("answers UNAVAILABLE when the session store fails", async () => {
      const { call } = harness({
        sessions: {
          get: () => Promise.reject(new Error("connect ECONNREFUSED 10.1.2.3:6379")),
        },
      });
      const outcome = await outcomeOf(call(request()));
      expect(outcome).toEqual({
        code: "unavailable",
        status: "UNAVAILABLE",
        message: "session store unavailable",
        authFailure: "redis_unavailable",
      });
      expect(outcome.message).not.toContain("ECONNREFUSED");
    });

    it("answers UNAVAILABLE when the session store throws synchronously", async () => {
      const { call } = harness({
        sessions: {
          get: () => {
            throw new Error("client is closed");
          },
        },
      });
      expect((await outcomeOf(call(request()))).status).toBe("UNAVAILABLE");
    });
  });

  describe("signature", () => {
    it("refuses a signature with one flipped bit", async () => {
      const { call } = harness();
      const good = request();
      expect(await outcomeOf(call({ ...good, signature: flipped(good.signature) }))).toEqual(
        BAD_SIGNATURE,
      );
    });

    it("refuses a signature by another key", async () => {
      const { call } = harness();
      const fields = request();
      const signature = sign(null, executeCommandSignedBytes(fields), gatewayPrivateKey);
      expect(await outcomeOf(call({ ...fields, signature }))).toEqual(BAD_SIGNATURE);
    });

    // Every signed field is covered: a request signed for one payload cannot
    // carry another.
    it("refuses a signature made over a different payload", async () => {
      const { call } = harness();
      const signed = request();
      expect(
        await outcomeOf(call({ ...signed, payload: Buffer.from('{"text":"hellp"}') })),
      ).toEqual(BAD_SIGNATURE);
    });
  });

  describe("session status", () => {
    it("refuses a revoked session", async () => {
      const { call } = harness({ status: "revoked" });
      expect(await outcomeOf(call(request()))).toEqual(REVOKED);
    });

    // The signature is checked before the status, so an unauthenticated
    // caller cannot learn that a session id exists and was revoked.
    it("answers a bad signature on a revoked session as a bad signature", async () => {
      const { call } = harness({ status: "revoked" });
      const good = request();
      expect(await outcomeOf(call({ ...good, signature: flipped(good.signature) }))).toEqual(
        BAD_SIGNATURE,
      );
    });
  });

  describe("replay reservation", () => {
    it("reserves the request id under its device session", async () => {
      const { call, reservations } = harness();
      await call(request({ requestId: "req-7" }));
      expect(reservations).toEqual([`${SESSION_ID}/req-7`]);
    });

    it("refuses a request_id already used", async () => {
      const { call } = harness();
      const replayed = request();
      await call(replayed);
      expect(await outcomeOf(call(replayed))).toEqual(REPLAYED);
    });

    it("answers UNAVAILABLE, never running the route, when the replay store fails", async () => {
      const routed: Command[] = [];
      const { call } = harness({
        replay: { reserve: () => Promise.reject(new Error("READONLY You can't write")) },
        routes: {
          [MESSAGE_TYPE]: async (command) => {
            routed.push(command);
            return { resultCode: "ok" };
          },
        },
      });
      expect(await outcomeOf(call(request()))).toEqual({
        code: "unavailable",
        status: "UNAVAILABLE",
        message: "replay store unavailable",
        authFailure: "redis_unavailable",
      });
      expect(routed).toEqual([]);
    });

    // A request refused earlier must not burn its request_id: the device
    // may fix the problem and retry with the same id.
    it.each([
      ["a shape error", { options: {}, request: () => request({ protocolVersion: 2 }) }],
      [
        "a stale timestamp",
        { options: {}, request: () => request({ timestampMs: NOW - SKEW_MS - 1 }) },
      ],
      [
        "an unknown session",
        { options: {}, request: () => request({ deviceSessionId: "ds-unknown" }) },
      ],
      [
        "a bad signature",
        {
          options: {},
          request: () => {
            const good = request();
            return { ...good, signature: flipped(good.signature) };
          },
        },
      ],
      ["a revoked session", { options: { status: "revoked" as const }, request: () => request() }],
      [
        "a failing session store",
        {
          options: { sessions: { get: () => Promise.reject(new Error("down")) } },
          request: () => request(),
        },
      ],
    ])("leaves the replay store untouched after %s", async (_, scenario) => {
      const { call, reservations } = harness(scenario.options);
      await rejectionOf(call(scenario.request()));
      expect(reservations).toEqual([]);
    });
  });

  describe("routing", () => {
    it("answers UNIMPLEMENTED for a message_type without a route", async () => {
      const { call } = harness();
      expect(await outcomeOf(call(request({ messageType: "x.y" })))).toEqual({
        code: "unimplemented",
        status: "UNIMPLEMENTED",
        message: "no route for message_type x.y",
        authFailure: undefined,
      });
    });

    it("gives the route the authenticated command and the call's AbortSignal", async () => {
      const seen: { command: Command; ctx: RouteContext }[] = [];
      const { call, ctx } = harness({
        routes: {
          [MESSAGE_TYPE]: async (command, routeCtx) => {
            seen.push({ command, ctx: routeCtx });
            return { resultCode: "ok" };
          },
        },
      });
      const sent = request({ requestId: "req-route", payload: Buffer.from([0, 1, 2, 255]) });
      await call(sent);
      expect(seen).toHaveLength(1);
      const [{ command, ctx: routeCtx }] = seen as [(typeof seen)[number]];
      expect({ ...command, payload: Buffer.from(command.payload).toString("hex") }).toEqual({
        userId: USER_ID,
        deviceSessionId: SESSION_ID,
        messageType: MESSAGE_TYPE,
        requestId: "req-route",
        payload: "000102ff",
      });
      expect(routeCtx.signal).toBeInstanceOf(AbortSignal);
      expect(routeCtx.signal).toBe(ctx.signal);
      expect(routeCtx.deadline).toBe(ctx.deadline);
    });

    // Internals never reach a client: the route's error text is logged, and
    // the client sees only the generic message.
    it("answers INTERNAL with a generic message when a route throws a plain Error", async () => {
      const secret = "SELECT * FROM users failed on db-7.internal:5432";
      const { call, logLines } = harness({
        routes: {
          [MESSAGE_TYPE]: async () => {
            throw new Error(secret);
          },
        },
      });
      const outcome = await outcomeOf(call(request()));
      expect(outcome).toEqual({
        code: "internal",
        status: "INTERNAL",
        message: "internal error",
        authFailure: undefined,
      });
      expect(outcome.message).not.toContain("db-7");
      const logged = logLines.filter((line) => line.level === "error");
      expect(logged.some((line) => line.args.some((arg) => String(arg).includes(secret)))).toBe(
        true,
      );
    });

    it("passes a route's GatewayError through unchanged", async () => {
      const thrown = new GatewayError("unavailable", "inventory service unavailable");
      const { call } = harness({
        routes: {
          [MESSAGE_TYPE]: async () => {
            throw thrown;
          },
        },
      });
      const error = await rejectionOf(call(request()));
      expect(error).toBe(thrown);
      expect(ERROR_TABLE[error.code].grpc).toBe("UNAVAILABLE");
      expect(error.message).toBe("inventory service unavailable");
    });

    it("answers DEADLINE_EXCEEDED when a route fails after the call's deadline passed", async () => {
      const { call, ctx } = harness({
        routes: {
          [MESSAGE_TYPE]: async () => {
            throw new Error("socket hang up");
          },
        },
      });
      const error = await rejectionOf(call(request(), { ...ctx, deadline: 0 }));
      expect({ code: error.code, status: ERROR_TABLE[error.code].grpc }).toEqual({
        code: "deadline_exceeded",
        status: "DEADLINE_EXCEEDED",
      });
    });

    it("answers INTERNAL when a route returns no result_code", async () => {
      const { call } = harness({
        routes: { [MESSAGE_TYPE]: async () => ({}) as unknown as { resultCode: string } },
      });
      expect(await outcomeOf(call(request()))).toMatchObject({
        status: "INTERNAL",
        message: "internal error",
      });
    });
  });

  describe("signed response (contract §4)", () => {
    it("signs the response with the gateway key at the gateway clock's time", async () => {
      const gatewayNow = NOW + 1_234;
      const { call } = harness({
        now: gatewayNow,
        routes: {
          [MESSAGE_TYPE]: async () => ({ resultCode: "not_found", payload: Buffer.from("nope") }),
        },
      });
      const response = await call(request({ requestId: "req-signed" }));
      expect({ ...response, payload: response.payload.toString(), signature: undefined }).toEqual({
        protocolVersion: 1,
        requestId: "req-signed",
        resultCode: "not_found",
        payload: "nope",
        timestampMs: gatewayNow,
        keyId: vectors.gateway_key.key_id,
        signature: undefined,
      });
      expect(response.signature).toHaveLength(64);
      expect(await verifiesAsGatewayResponse(response, SESSION_ID)).toBe(true);
      // The device session is part of the signed bytes, though not in the response.
      expect(await verifiesAsGatewayResponse(response, "ds-other")).toBe(false);
    });

    it("signs an empty payload when the route returns none", async () => {
      const { call } = harness({ routes: { [MESSAGE_TYPE]: async () => ({ resultCode: "ok" }) } });
      const response = await call(request());
      expect(response.payload).toHaveLength(0);
      expect(await verifiesAsGatewayResponse(response, SESSION_ID)).toBe(true);
    });

    // End to end against the shared vectors: the vector's request, signed by
    // the device, yields exactly the vector's response signature.
    it("reproduces the execute_command_response vector from the execute_command_request vector", async () => {
      const requestVector = vectorCase("execute_command_request");
      const responseVector = vectorCase("execute_command_response");
      const { call } = harness({
        now: timestampOf(responseVector),
        routes: {
          [field(requestVector, "message_type")]: async () => ({
            resultCode: field(responseVector, "result_code"),
            payload: Buffer.from(field(responseVector, "payload_hex"), "hex"),
          }),
        },
      });
      const response = await call({
        protocolVersion: 1,
        deviceSessionId: field(requestVector, "device_session_id"),
        messageType: field(requestVector, "message_type"),
        requestId: field(requestVector, "request_id"),
        timestampMs: timestampOf(requestVector),
        payload: Buffer.from(field(requestVector, "payload_hex"), "hex"),
        signature: Buffer.from(requestVector.signature_hex, "hex"),
      });
      expect(response.keyId).toBe(field(responseVector, "key_id"));
      expect(response.requestId).toBe(field(responseVector, "request_id"));
      expect(response.timestampMs).toBe(timestampOf(responseVector));
      expect(response.signature.toString("hex")).toBe(responseVector.signature_hex);
    });
  });
});

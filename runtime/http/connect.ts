/**
 * `edgegateway.v1.EdgeGatewayService` over the Connect protocol and gRPC-Web
 * (binary and JSON codecs) for the public listener and the fetch handler
 * (contract §14). Each method runs what the gRPC listener runs (the
 * ExecuteCommand handler, the push session of SubscribeEvents); this module
 * only translates messages and maps outcomes through the one error table.
 */
import { type DescMessage, fromBinary, fromJsonString } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createConnectRouter,
  createContextKey,
  createContextValues,
  type HandlerContext,
} from "@connectrpc/connect";
import {
  createAsyncIterable,
  type UniversalHandler,
  universalServerResponseToFetch,
} from "@connectrpc/connect/protocol";
import {
  GatewayError,
  grpcAnswerOf,
  isGatewayError,
  OUTCOMES,
  outcomeError,
  toGatewayError,
} from "../../handlers/errors.js";
import { type createExecuteCommandHandler, invalid } from "../../handlers/execute-command.js";
import type { Logger } from "../../handlers/ports.js";
import type { SignedEvent } from "../../handlers/subscribe-events.js";
import {
  EdgeGatewayService,
  type ExecuteCommandRequest,
  type ExecuteCommandResponse,
  type SubscribeEventsRequest,
  type SubscribeEventsResponse,
} from "../../proto/gen-es/edgegateway/v1/edge_gateway_pb.js";
import { traceHeadersOf } from "../grpc/tracing.js";
import { type PushSessionDeps, runPushSession } from "../push/push-session.js";
import type { Metrics } from "../telemetry/metrics.js";
import { BodyTooLargeError, readBoundedBody } from "./bounded-body.js";
import { HttpPushTransport } from "./http-push-transport.js";

/** The ExecuteCommand handler of `handlers/execute-command.ts`. */
export type ExecuteCommandHandler = ReturnType<typeof createExecuteCommandHandler>;

/** The handlers served over Connect and gRPC-Web; a method not given answers `unimplemented`. */
export interface ConnectMethods {
  /** ExecuteCommand (unary): the handler the gRPC listener calls. */
  readonly executeCommand: ExecuteCommandHandler;
  /**
   * SubscribeEvents (server streaming): the dependencies of the push session
   * the gRPC listener runs (`runPushSession`), the same ones; absent, the
   * method answers `unimplemented`.
   */
  readonly subscribeEvents?: PushSessionDeps;
}

/** Options of {@link createConnectRoutes}. */
export interface ConnectRoutesOptions {
  /** `GATEWAY_MAX_COMMAND_PAYLOAD_BYTES`: request messages may be at most this + 4 KiB. */
  readonly maxCommandPayloadBytes: number;
  /** Where unexpected failures are logged. */
  readonly logger: Logger;
  /** Counts failed authentication steps in `gateway_auth_failures_total`, as the gRPC listener does. */
  readonly metrics?: Pick<Metrics, "authFailures">;
  /** True once shutdown began: new calls answer `UNAVAILABLE`, `gateway is shutting down`. */
  readonly isShuttingDown?: () => boolean;
}

/** One procedure served at `/edgegateway.v1.EdgeGatewayService/<Method>`. */
export interface ConnectRoute {
  /** The request path, e.g. `/edgegateway.v1.EdgeGatewayService/ExecuteCommand`. */
  readonly path: string;
  /**
   * Answers a request of any method and content type to {@link path} as the
   * Connect and gRPC-Web protocols say, their own `405` and `415` included
   * (those are answered without reading the body).
   */
  handle(request: Request): Promise<Response>;
}

/** Extra bytes a request message may have beyond the command payload, as on the gRPC listener. */
const MESSAGE_OVERHEAD_BYTES = 4096;

/** Length of a Connect streaming or gRPC-Web envelope prefix: one flags byte, a 32-bit length. */
const ENVELOPE_PREFIX_BYTES = 5;

/**
 * The outcome decided before a call runs (a body too large or not decodable),
 * answered by the request gate in the protocol's own error format.
 */
const REJECTION = createContextKey<GatewayError | undefined>(undefined, {
  description: "edge-gateway.rejection",
});

/** The HTTP transport of a server-streaming call, from the request to its method. */
const PUSH_TRANSPORT = createContextKey<HttpPushTransport | undefined>(undefined, {
  description: "edge-gateway.push-transport",
});

/**
 * The routes of `edgegateway.v1.EdgeGatewayService`, one per method. A
 * request message (the body of a Connect unary call, the enveloped message of
 * a gRPC-Web or Connect streaming call) is read up to the payload limit +
 * 4 KiB in binary and twice that in JSON (base64 makes bytes a third longer);
 * past it the call answers `RESOURCE_EXHAUSTED`. A message that does not
 * decode answers `INVALID_ARGUMENT`, `request message could not be decoded`,
 * as on the gRPC listener. Compressed requests are refused (no compression
 * is offered), so the limit holds for what is decoded. SubscribeEvents
 * streams as over gRPC: its events wait for the response to accept the
 * previous one, and the hub ends it with the same statuses.
 */
export function createConnectRoutes(
  methods: ConnectMethods,
  options: ConnectRoutesOptions,
): readonly ConnectRoute[] {
  const binaryLimit = options.maxCommandPayloadBytes + MESSAGE_OVERHEAD_BYTES;
  const limits = { binary: binaryLimit, json: 2 * binaryLimit };
  const router = createConnectRouter({
    // HTTP/2 gRPC has its own listener; the public one speaks HTTP/1.1.
    grpc: false,
    grpcWeb: true,
    connect: true,
    // A backstop only: bodies are bounded before the router reads them.
    readMaxBytes: limits.json,
    requestGate: (context) => {
      if (options.isShuttingDown?.()) {
        throw toConnectError(outcomeError(OUTCOMES.shuttingDown), context, options);
      }
      const rejection = context.values.get(REJECTION);
      if (rejection !== undefined) throw toConnectError(rejection, context, options);
    },
  });
  router.service(EdgeGatewayService, {
    executeCommand: async (request, context) => {
      try {
        return toExecuteCommandResponse(
          await methods.executeCommand(toExecuteCommandInput(request), {
            signal: context.signal,
            deadline: deadlineOf(context),
            logger: options.logger,
            traceHeaders: traceHeadersOf(),
          }),
        );
      } catch (error) {
        throw toConnectError(error, context, options);
      }
    },
    ...(methods.subscribeEvents === undefined
      ? {}
      : { subscribeEvents: subscribeEventsMethod(methods.subscribeEvents, options) }),
  });
  return router.handlers.map((handler) => ({
    path: handler.requestPath,
    handle: (request) => handleCall(handler, request, limits),
  }));
}

/** The codec and framing a request's `Content-Type` selects, or `undefined` when no protocol takes it. */
function framingOf(
  contentType: string | null,
): { readonly codec: "binary" | "json"; readonly enveloped: boolean } | undefined {
  const mediaType = contentType?.split(";", 1)[0]?.trim().toLowerCase();
  switch (mediaType) {
    case "application/proto":
      return { codec: "binary", enveloped: false };
    case "application/json":
      return { codec: "json", enveloped: false };
    case "application/connect+proto":
    case "application/grpc-web":
    case "application/grpc-web+proto":
      return { codec: "binary", enveloped: true };
    case "application/connect+json":
    case "application/grpc-web+json":
      return { codec: "json", enveloped: true };
    default:
      return undefined;
  }
}

/**
 * Runs one call: reads the bounded body, checks that its message decodes,
 * and hands the bytes read to the router with any rejection for its gate.
 */
async function handleCall(
  handler: UniversalHandler,
  request: Request,
  limits: { readonly binary: number; readonly json: number },
): Promise<Response> {
  const framing = framingOf(request.headers.get("content-type"));
  if (request.method !== "POST" || framing === undefined) {
    // The router answers these itself (405, 415) without reading a body.
    return universalServerResponseToFetch(
      await handler({
        httpVersion: "1.1",
        method: request.method,
        url: request.url,
        header: request.headers,
        body: createAsyncIterable([]),
        signal: request.signal,
      }),
    );
  }
  const messageLimit = framing.codec === "json" ? limits.json : limits.binary;
  let body: Uint8Array = new Uint8Array();
  let rejection: GatewayError | undefined;
  try {
    // Left unread past the limit: cancelling would destroy the socket before
    // the answer is written. The answer closes the connection instead.
    body = await readBoundedBody(request, {
      maxBytes: messageLimit + (framing.enveloped ? ENVELOPE_PREFIX_BYTES : 0),
      onTooLarge: "leave",
    });
    rejection = undecodable(handler.method.input, framing, body);
  } catch (error) {
    rejection =
      error instanceof BodyTooLargeError
        ? new GatewayError("resource_exhausted", `request message exceeds ${messageLimit} bytes`)
        : invalid("request body was not received completely");
  }
  const contextValues = createContextValues().set(REJECTION, rejection);
  const streaming = handler.method.methodKind === "server_streaming";
  const transport = streaming ? new HttpPushTransport(request.signal) : undefined;
  contextValues.set(PUSH_TRANSPORT, transport);
  const answer = universalServerResponseToFetch(
    await handler({
      httpVersion: "1.1",
      method: request.method,
      url: request.url,
      header: request.headers,
      body: createAsyncIterable(rejection === undefined ? [body] : []),
      signal: request.signal,
      contextValues,
    }),
  );
  const response = transport === undefined ? answer : transport.respond(answer);
  if (rejection?.code === "resource_exhausted") response.headers.set("connection", "close");
  return response;
}

/**
 * The rejection of a body whose request message does not decode, or
 * `undefined` when it does (or when its framing is for the router to refuse:
 * a compressed or malformed envelope).
 */
function undecodable(
  schema: DescMessage,
  framing: { readonly codec: "binary" | "json"; readonly enveloped: boolean },
  body: Uint8Array,
): GatewayError | undefined {
  let message = body;
  if (framing.enveloped) {
    if (body.byteLength < ENVELOPE_PREFIX_BYTES || body[0] !== 0) return undefined;
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    const length = view.getUint32(1);
    if (body.byteLength !== ENVELOPE_PREFIX_BYTES + length) return undefined;
    message = body.subarray(ENVELOPE_PREFIX_BYTES);
  }
  try {
    if (framing.codec === "binary") fromBinary(schema, message);
    else {
      fromJsonString(schema, new TextDecoder("utf-8", { fatal: true }).decode(message), {
        ignoreUnknownFields: true,
      });
    }
    return undefined;
  } catch {
    return invalid("request message could not be decoded");
  }
}

/**
 * SubscribeEvents: one push session over the call's HTTP transport, as the
 * gRPC method runs it; its errors leave through the one error table.
 */
function subscribeEventsMethod(
  deps: PushSessionDeps,
  options: Pick<ConnectRoutesOptions, "logger" | "metrics">,
) {
  return async function* subscribeEvents(
    request: SubscribeEventsRequest,
    context: HandlerContext,
  ): AsyncGenerator<Omit<SubscribeEventsResponse, "$typeName">, void, undefined> {
    const transport = context.values.get(PUSH_TRANSPORT);
    try {
      if (transport === undefined) throw new Error("SubscribeEvents called without its transport");
      const session = runPushSession(
        deps,
        toSubscribeEventsInput(request),
        context.signal,
        transport,
      );
      for await (const event of transport.deliver(session)) yield toSubscribeEventsResponse(event);
      // The session returns quietly once the call's signal aborted: its timeout
      // passing must still end the call DEADLINE_EXCEEDED, not OK.
      context.signal.throwIfAborted();
    } catch (error) {
      throw toConnectError(error, context, options);
    }
  };
}

/** The call's absolute deadline in Unix ms from its protocol timeout, or `undefined` without one. */
function deadlineOf(context: HandlerContext): number | undefined {
  const timeoutMs = context.timeoutMs();
  return timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
}

/**
 * A request's `timestamp_ms`. An `int64` the gateway cannot hold exactly is a
 * message it cannot decode, as on the gRPC listener.
 */
function timestampOf(value: bigint): number {
  const timestampMs = Number(value);
  if (!Number.isSafeInteger(timestampMs)) throw invalid("request message could not be decoded");
  return timestampMs;
}

/** The handler's input. */
function toExecuteCommandInput(request: ExecuteCommandRequest) {
  return { ...request, timestampMs: timestampOf(request.timestampMs) };
}

/** The push session's input. */
function toSubscribeEventsInput(request: SubscribeEventsRequest) {
  return { ...request, timestampMs: timestampOf(request.timestampMs) };
}

/** The response message of a pushed event. */
function toSubscribeEventsResponse(event: SignedEvent): Omit<SubscribeEventsResponse, "$typeName"> {
  return { ...event, timestampMs: BigInt(event.timestampMs) };
}

/** The response message of the handler's output. */
function toExecuteCommandResponse(
  output: Awaited<ReturnType<ExecuteCommandHandler>>,
): Omit<ExecuteCommandResponse, "$typeName"> {
  return { ...output, timestampMs: BigInt(output.timestampMs) };
}

/**
 * The ConnectError a client sees for anything thrown: a GatewayError with its
 * gRPC status (Connect's codes are the same numbers) and message from the
 * error table, counted when an authentication step failed; a cancelled call
 * `CANCELLED`; anything else `INTERNAL` with the generic message, logged.
 */
function toConnectError(
  error: unknown,
  context: HandlerContext,
  options: Pick<ConnectRoutesOptions, "logger" | "metrics">,
): ConnectError {
  if (error instanceof ConnectError) return error;
  if (isGatewayError(error) && error.details?.authFailure !== undefined) {
    options.metrics?.authFailures.inc({ reason: error.details.authFailure });
  }
  if (!isGatewayError(error)) {
    if (context.signal.aborted) return new ConnectError("call cancelled", Code.Canceled);
    options.logger.error("unexpected error in Connect call", error);
  }
  const { code, message } = grpcAnswerOf(toGatewayError(error));
  return new ConnectError(message, code as number as Code);
}

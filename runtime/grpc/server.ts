/**
 * The authenticated gRPC listener: nice-grpc on grpc-js, with the gateway's
 * middleware (shutdown gate, undecodable requests, error table, metrics).
 */
import { readFile } from "node:fs/promises";
import { createSecureContext } from "node:tls";
import { ServerCredentials, ServerInterceptingCall, type ServerInterceptor } from "@grpc/grpc-js";
import {
  type CallContext,
  createServer,
  type Server,
  ServerError,
  type ServerMiddleware,
  Status,
} from "nice-grpc";
import {
  grpcAnswerOf,
  isGatewayError,
  OUTCOMES,
  outcomeError,
  toGatewayError,
} from "../../handlers/errors.js";
import { invalid } from "../../handlers/execute-command.js";
import type { Logger } from "../../handlers/ports.js";
import type { SignedEvent } from "../../handlers/subscribe-events.js";
import { EdgeGatewayServiceDefinition } from "../../proto/gen/edgegateway/v1/edge_gateway.js";
import { ConfigError } from "../config/config.js";
import type { Metrics } from "../telemetry/metrics.js";
import { eventFrame } from "./grpc-frames.js";
import { addSessionHook, addStreamLane, type StreamLane } from "./http2-lane.js";
import { type KeepaliveOptions, KeepaliveWheel } from "./keepalive.js";

const UNDECODABLE = Symbol("edge-gateway.undecodable");

/** Metadata key carrying the call's absolute deadline (Unix ms) from grpc-js to handlers. */
export const DEADLINE_METADATA_KEY = "x-edge-gateway-deadline-ms";

/**
 * EdgeGatewayServiceDefinition with request decoders that never throw: bytes
 * that do not decode become a marker the middleware answers with
 * INVALID_ARGUMENT (grpc-js would answer INTERNAL).
 */
export const SafeEdgeGatewayServiceDefinition = {
  ...EdgeGatewayServiceDefinition,
  methods: Object.fromEntries(
    Object.entries(EdgeGatewayServiceDefinition.methods).map(([name, method]) => [
      name,
      {
        ...method,
        ...(name === "subscribeEvents" ? { responseType: encodedOnce(method.responseType) } : {}),
        requestType: {
          ...method.requestType,
          decode: (input: Uint8Array, length?: number) => {
            try {
              return method.requestType.decode(input, length);
            } catch {
              return { [UNDECODABLE]: true };
            }
          },
        },
      },
    ]),
  ),
} as unknown as typeof EdgeGatewayServiceDefinition;

/**
 * SubscribeEvents' response type with each event encoded once (`eventFrame`):
 * without `fromPartial`, nice-grpc serializes with `encode(value).finish()`
 * alone, and the bytes are those of the event's shared frame.
 */
function encodedOnce<T extends object>(type: T): T {
  return {
    ...type,
    fromPartial: undefined,
    encode: (event: SignedEvent) => ({ finish: () => eventFrame(event).subarray(5) }),
  };
}

/** True for a request {@link SafeEdgeGatewayServiceDefinition} could not decode. */
export function isUndecodable(request: unknown): boolean {
  return typeof request === "object" && request !== null && UNDECODABLE in request;
}

/** The absolute deadline of a call in Unix ms, or `undefined` when the client set none. */
export function deadlineOf(context: CallContext): number | undefined {
  const value = context.metadata.get(DEADLINE_METADATA_KEY);
  const ms = typeof value === "string" ? Number(value) : Number.NaN;
  return Number.isFinite(ms) ? ms : undefined;
}

/**
 * A grpc-js interceptor that passes the call's deadline to handlers through
 * metadata (nice-grpc's context does not carry it); a client-sent value of
 * the same key is discarded.
 */
export const deadlineInterceptor: ServerInterceptor = (_method, call) =>
  new ServerInterceptingCall(call, {
    start(next) {
      next({
        onReceiveMetadata(metadata, nextMetadata) {
          metadata.remove(DEADLINE_METADATA_KEY);
          const deadline = call.getDeadline();
          const ms = deadline instanceof Date ? deadline.getTime() : deadline;
          if (Number.isFinite(ms)) metadata.set(DEADLINE_METADATA_KEY, String(ms));
          nextMetadata(metadata);
        },
      });
    },
  });

/**
 * Maps anything thrown by a handler to the ServerError the client sees: a
 * GatewayError through the error table (kept as `cause`, so a middleware can
 * still read its auth-failure reason), anything else `INTERNAL` with the
 * generic message, logged.
 */
export function toServerError(error: unknown, logger: Logger): ServerError {
  if (error instanceof ServerError) return error;
  if (!isGatewayError(error)) logger.error("unexpected error in gRPC call", error);
  const gatewayError = toGatewayError(error);
  const { code, message } = grpcAnswerOf(gatewayError);
  const serverError = new ServerError(code, message);
  serverError.cause = gatewayError;
  return serverError;
}

/** What the gateway middleware needs. */
export interface GatewayMiddlewareOptions {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly isShuttingDown: () => boolean;
}

/**
 * The gateway's server middleware: refuses calls during shutdown, answers
 * undecodable requests with INVALID_ARGUMENT, maps errors through the error
 * table, and records `gateway_grpc_*` and `gateway_auth_failures_total`.
 */
export function createGatewayMiddleware(options: GatewayMiddlewareOptions): ServerMiddleware {
  const { logger, metrics } = options;
  return async function* gatewayMiddleware(call, context) {
    const method = call.method.path.slice(call.method.path.lastIndexOf("/") + 1);
    const stopTimer = metrics.grpcDuration.startTimer({ method });
    let code: string = "OK";
    try {
      if (options.isShuttingDown()) {
        throw outcomeError(OUTCOMES.shuttingDown);
      }
      if (!call.requestStream && isUndecodable(call.request)) {
        throw invalid("request message could not be decoded");
      }
      return yield* call.next(call.request, context);
    } catch (error) {
      const cause = error instanceof ServerError ? error.cause : error;
      if (isGatewayError(cause) && cause.details?.authFailure !== undefined) {
        metrics.authFailures.inc({ reason: cause.details.authFailure });
      }
      const serverError =
        context.signal.aborted && !isGatewayError(error) && !(error instanceof ServerError)
          ? new ServerError(Status.CANCELLED, "call cancelled")
          : toServerError(error, logger);
      code = Status[serverError.code] ?? "UNKNOWN";
      throw serverError;
    } finally {
      metrics.grpcRequests.inc({ method, code });
      stopTimer();
    }
  };
}

/** Options of the gRPC listener. */
export interface GrpcServerOptions {
  /** Largest accepted command payload; the transport refuses messages over this + 4 KiB. */
  readonly maxCommandPayloadBytes: number;
  /** Extra grpc-js interceptors, run after the deadline interceptor. */
  readonly interceptors?: readonly ServerInterceptor[];
  /**
   * Serves some calls straight on their HTTP/2 stream, before grpc-js
   * (`createDirectUnaryLane`); ignored when grpc-js cannot take a lane
   * (`streamLanesSupported`).
   */
  readonly lane?: StreamLane;
  /** HTTP/2 keepalive; by default a PING every 30 s answered within 10 s (contract §7). */
  readonly keepalive?: KeepaliveOptions;
}

/** Contract §7: an HTTP/2 PING every 30 s; a client that does not answer within 10 s is dropped. */
export const KEEPALIVE: KeepaliveOptions = { intervalMs: 30_000, timeoutMs: 10_000 };

/** Creates the nice-grpc server with transport limits and HTTP/2 keepalive. */
export function createGrpcServer(options: GrpcServerOptions): Server {
  const grpcOptions: Record<string, unknown> = {
    "grpc.max_receive_message_length": maxReceiveMessageBytes(options.maxCommandPayloadBytes),
    // Nothing here serves channelz; grpc-js would keep a record per connection and call.
    "grpc.enable_channelz": 0,
    interceptors: [deadlineInterceptor, ...(options.interceptors ?? [])],
  };
  const keepalive = options.keepalive ?? KEEPALIVE;
  const wheel = new KeepaliveWheel(keepalive);
  if (!addSessionHook(grpcOptions, (session) => wheel.add(session))) {
    // This grpc-js cannot take the hook: it pings itself, on two timers per connection.
    grpcOptions["grpc.keepalive_time_ms"] = keepalive.intervalMs;
    grpcOptions["grpc.keepalive_timeout_ms"] = keepalive.timeoutMs;
  }
  if (options.lane !== undefined) addStreamLane(grpcOptions, options.lane);
  return createServer(grpcOptions as Parameters<typeof createServer>[0]);
}

/** The largest request message the listener accepts: the largest payload plus 4 KiB. */
export function maxReceiveMessageBytes(maxCommandPayloadBytes: number): number {
  return maxCommandPayloadBytes + 4096;
}

/** Reads the gRPC TLS files into server credentials; a failure names the variable. */
export async function loadGrpcTls(paths: { certPath: string; keyPath: string }) {
  const read = async (variable: string, path: string) => {
    try {
      return await readFile(path);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? "unreadable";
      throw new ConfigError(variable, `cannot read ${path} (${code})`);
    }
  };
  const tls = {
    cert: await read("GATEWAY_GRPC_TLS_CERT_PATH", paths.certPath),
    key: await read("GATEWAY_GRPC_TLS_KEY_PATH", paths.keyPath),
  };
  // grpc-js only checks the PEM when it binds; check it before anything starts.
  try {
    createSecureContext(tls);
  } catch (error) {
    throw new ConfigError(
      "GATEWAY_GRPC_TLS_CERT_PATH",
      `certificate and key are not a usable PEM pair (${(error as Error).message})`,
    );
  }
  return ServerCredentials.createSsl(null, [{ cert_chain: tls.cert, private_key: tls.key }], false);
}

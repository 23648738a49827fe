/**
 * Unary methods served straight on Node's HTTP/2 stream, in front of grpc-js
 * (`runtime/grpc/http2-lane.ts`): a call costs no grpc-js call object,
 * metadata or interceptor chain, no nice-grpc CallContext, and no
 * AbortController unless the method reads its signal. It keeps what clients
 * see of grpc-js (headers, trailers, status messages, deadline, message size
 * limit) and the gateway middleware's behaviour (shutdown gate, undecodable
 * requests, error table, metrics, the CANCELLED answer).
 *
 * While a tracer provider is registered, and for requests this lane does not
 * take as they are (compressed, not `application/grpc`, a malformed
 * `grpc-timeout`), grpc-js serves the call through nice-grpc, where the
 * tracing middleware makes its span: the method must also be mounted there,
 * through the gated manifest entry.
 */
import { constants, type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import { status } from "@grpc/grpc-js";
import { ServerError, Status } from "nice-grpc";
import { isGatewayError, OUTCOMES, outcomeError } from "../../handlers/errors.js";
import { invalid } from "../../handlers/execute-command.js";
import type { Logger, RouteContext } from "../../handlers/ports.js";
import type { Metrics } from "../telemetry/metrics.js";
import type { StreamLane } from "./http2-lane.js";
import { isUndecodable, toServerError } from "./server.js";
import { traceHeadersOnce, tracerProviderRegistered } from "./tracing.js";

/** A unary method served by {@link createDirectUnaryLane}. */
export interface DirectUnaryMethod {
  /** The method's HTTP/2 path, `/package.Service/Method`. */
  readonly path: string;
  /** The request message; bytes that do not decode give a value `isUndecodable` marks. */
  readonly decode: (bytes: Uint8Array) => unknown;
  /** The response message's bytes. */
  readonly encode: (response: never) => Uint8Array;
  /** Answers one request; what it throws is answered through the error table. */
  readonly handle: (request: never, ctx: RouteContext) => Promise<unknown>;
}

/** What {@link createDirectUnaryLane} needs besides its methods. */
export interface DirectUnaryOptions {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly isShuttingDown: () => boolean;
  /** grpc-js's `grpc.max_receive_message_length`: larger requests are refused as grpc-js does. */
  readonly maxReceiveMessageBytes: number;
}

/** A method with what every call of it shares. */
interface Served extends DirectUnaryOptions {
  readonly path: string;
  readonly decode: (bytes: Uint8Array) => unknown;
  readonly encode: (response: unknown) => Uint8Array;
  readonly handle: (request: unknown, ctx: RouteContext) => Promise<unknown>;
  /** The labels of its `gateway_grpc_request_duration_seconds`. */
  readonly durationLabels: { readonly method: string };
  /** The labels of its `gateway_grpc_requests_total`, by status name, made as each is first needed. */
  readonly requestLabels: Map<string, { readonly method: string; readonly code: string }>;
}

/** grpc-js's `grpc-timeout` pattern and units (server-interceptors.ts). */
const TIMEOUT_PATTERN = /(\d{1,8})\s*([HMSmun])/;
const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = {
  H: 3_600_000,
  M: 60_000,
  S: 1000,
  m: 1,
  u: 0.001,
  n: 0.000001,
};

/** The response headers grpc-js sends before a message. */
const RESPONSE_HEADERS = {
  [constants.HTTP2_HEADER_STATUS]: constants.HTTP_STATUS_OK,
  [constants.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc+proto",
  "grpc-accept-encoding": "identity,deflate,gzip",
  "grpc-encoding": "identity",
};
const OK_TRAILERS = { "grpc-status": String(status.OK), "grpc-message": "OK" };

/**
 * A lane (`addStreamLane`) that serves `methods` itself; other calls, every
 * call while a tracer provider is registered, and requests it does not take
 * as they are go to grpc-js untouched.
 */
export function createDirectUnaryLane(
  methods: readonly DirectUnaryMethod[],
  options: DirectUnaryOptions,
): StreamLane {
  const served = new Map<string, Served>(
    methods.map((method) => [
      method.path,
      {
        ...options,
        path: method.path,
        decode: method.decode,
        encode: method.encode as Served["encode"],
        handle: method.handle as Served["handle"],
        durationLabels: { method: method.path.slice(method.path.lastIndexOf("/") + 1) },
        requestLabels: new Map(),
      },
    ]),
  );
  return (stream, headers) => {
    const method = served.get(headers[constants.HTTP2_HEADER_PATH] as string);
    if (method === undefined || tracerProviderRegistered()) return false;
    const timeoutMs = takenAsIs(headers);
    if (timeoutMs === false) return false;
    new DirectUnaryCall(method, stream, timeoutMs).start();
    return true;
  };
}

/**
 * The call's timeout in ms (`undefined`: none) when the lane can serve the
 * request as grpc-js would; false to leave it to grpc-js, which answers a
 * wrong content type, decompresses, and refuses a malformed timeout.
 */
function takenAsIs(headers: IncomingHttpHeaders): number | undefined | false {
  const contentType = headers[constants.HTTP2_HEADER_CONTENT_TYPE];
  if (typeof contentType !== "string" || !contentType.startsWith("application/grpc")) return false;
  const encoding = headers["grpc-encoding"];
  if (encoding !== undefined && encoding !== "identity") return false;
  const timeout = headers["grpc-timeout"];
  if (timeout === undefined) return undefined;
  const match = TIMEOUT_PATTERN.exec(String(timeout));
  if (match === null) return false;
  return (Number(match[1]) * TIMEOUT_UNIT_MS[match[2]!]!) | 0;
}

/** The route context of a direct call: the signal is made only when asked for. */
class DirectCallContext implements RouteContext {
  private controller: AbortController | undefined;
  private readonly traceHeadersOnce = traceHeadersOnce();

  constructor(
    private readonly call: DirectUnaryCall,
    readonly deadline: number | undefined,
    readonly logger: Logger,
  ) {}

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.call.cancelled) this.controller.abort();
    }
    return this.controller.signal;
  }

  get traceHeaders(): Readonly<Record<string, string>> {
    return this.traceHeadersOnce();
  }

  /** The call ended before its answer: aborts the signal if one was made. */
  cancel(): void {
    this.controller?.abort();
  }
}

/**
 * One call of a served method on its HTTP/2 stream: reads one length-prefixed
 * message, runs the method, answers with the message and `grpc-status` 0, or
 * with a trailers-only status.
 */
class DirectUnaryCall {
  /** The client cancelled, the deadline passed or the stream closed before the answer. */
  cancelled = false;
  private answered = false;
  private chunks: Buffer[] = [];
  private received = 0;
  private request: unknown;
  private hasRequest = false;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private ctx: DirectCallContext | undefined;
  private readonly deadline: number | undefined;

  constructor(
    private readonly served: Served,
    private readonly stream: ServerHttp2Stream,
    private readonly timeoutMs: number | undefined,
  ) {
    this.deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
  }

  start(): void {
    const { stream } = this;
    // Errors end in 'close', handled there; the listener keeps them from throwing.
    stream.on("error", noop);
    stream.once("close", () => this.onClose());
    stream.on("data", (chunk: Buffer) => this.onData(chunk));
    stream.once("end", () => this.onEnd());
    if (this.timeoutMs !== undefined) {
      this.deadlineTimer = setTimeout(() => {
        this.answer(status.DEADLINE_EXCEEDED, "Deadline exceeded");
        this.cancel();
      }, this.timeoutMs);
    }
  }

  /** Collects the request; the same answers as grpc-js's decoder and unary handling. */
  private onData(chunk: Buffer): void {
    if (this.answered) return;
    this.chunks.push(chunk);
    this.received += chunk.length;
    while (this.received >= 5) {
      const buffered = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      this.chunks = [buffered];
      const length = buffered.readUInt32BE(1);
      const max = this.served.maxReceiveMessageBytes;
      if (length > max) {
        this.answer(
          status.RESOURCE_EXHAUSTED,
          `Received message larger than max (${length} vs ${max})`,
        );
        return;
      }
      if (this.received < 5 + length) return;
      if (this.hasRequest) {
        this.answer(
          status.UNIMPLEMENTED,
          `Received a second request message for server streaming method ${this.served.path}`,
        );
        return;
      }
      this.hasRequest = true;
      this.request = this.served.decode(buffered.subarray(5, 5 + length));
      this.chunks = [buffered.subarray(5 + length)];
      this.received -= 5 + length;
    }
  }

  private onEnd(): void {
    if (this.answered) return;
    this.chunks = [];
    if (!this.hasRequest) {
      this.answer(
        status.UNIMPLEMENTED,
        `Received no request message for server streaming method ${this.served.path}`,
      );
      return;
    }
    void this.run();
  }

  private onClose(): void {
    clearTimeout(this.deadlineTimer);
    if (!this.answered) this.cancel();
  }

  private cancel(): void {
    this.cancelled = true;
    this.ctx?.cancel();
  }

  /** The gateway middleware's steps around the method, then the answer. */
  private async run(): Promise<void> {
    const { metrics, durationLabels, requestLabels } = this.served;
    const start = performance.now();
    let code = "OK";
    let response: unknown;
    let failure: ServerError | undefined;
    try {
      if (this.served.isShuttingDown()) throw outcomeError(OUTCOMES.shuttingDown);
      if (isUndecodable(this.request)) throw invalid("request message could not be decoded");
      this.ctx = new DirectCallContext(this, this.deadline, this.served.logger);
      response = await this.served.handle(this.request, this.ctx);
    } catch (error) {
      const cause = error instanceof ServerError ? error.cause : error;
      if (isGatewayError(cause) && cause.details?.authFailure !== undefined) {
        metrics.authFailures.inc({ reason: cause.details.authFailure });
      }
      failure =
        this.cancelled && !isGatewayError(error) && !(error instanceof ServerError)
          ? new ServerError(Status.CANCELLED, "call cancelled")
          : toServerError(error, this.served.logger);
      code = Status[failure.code] ?? "UNKNOWN";
    } finally {
      // Label objects made once per method and status, not once per call.
      let labels = requestLabels.get(code);
      if (labels === undefined) {
        labels = { method: durationLabels.method, code };
        requestLabels.set(code, labels);
      }
      metrics.grpcRequests.inc(labels);
      metrics.grpcDuration.observe(durationLabels, (performance.now() - start) / 1000);
    }
    if (failure !== undefined) this.answer(failure.code, failure.details);
    else this.reply(response);
  }

  /** Sends the response message, then `grpc-status` 0 in the trailers. */
  private reply(response: unknown): void {
    if (!this.open()) return;
    let bytes: Uint8Array;
    try {
      bytes = this.served.encode(response);
    } catch (error) {
      this.served.logger.error("unexpected error in gRPC call", error);
      this.answer(status.INTERNAL, "Error serializing response");
      return;
    }
    this.answered = true;
    clearTimeout(this.deadlineTimer);
    const frame = Buffer.allocUnsafe(5 + bytes.length);
    frame[0] = 0;
    frame.writeUInt32BE(bytes.length, 1);
    frame.set(bytes, 5);
    const { stream } = this;
    stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
    stream.once("wantTrailers", () => stream.sendTrailers(OK_TRAILERS));
    stream.end(frame);
  }

  /** A trailers-only answer, as grpc-js sends a status before any message. */
  private answer(code: status, details: string): void {
    if (!this.open()) return;
    this.answered = true;
    clearTimeout(this.deadlineTimer);
    this.stream.respond(
      {
        "grpc-status": String(code),
        "grpc-message": encodeURI(details),
        [constants.HTTP2_HEADER_STATUS]: constants.HTTP_STATUS_OK,
        [constants.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc+proto",
      },
      { endStream: true },
    );
    // Whatever the client still sends is read and dropped.
    this.stream.resume();
  }

  /** True while the call can still be answered. */
  private open(): boolean {
    return (
      !this.answered && !this.stream.destroyed && !this.stream.closed && !this.stream.headersSent
    );
  }
}

function noop(): void {}

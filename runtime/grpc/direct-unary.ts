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
import { constants, type ServerHttp2Stream } from "node:http2";
import { status } from "@grpc/grpc-js";
import type { Logger, RouteContext } from "../../handlers/ports.js";
import type { StreamLane } from "./http2-lane.js";
import { LaneCall, type LaneMethod, type LaneOptions, takenAsIs } from "./lane-call.js";
import { traceHeadersOnce, tracerProviderRegistered } from "./tracing.js";

/** A unary method served by {@link createDirectUnaryLane}. */
export interface DirectUnaryMethod {
  /** The method's HTTP/2 path, `/package.Service/Method`. */
  readonly path: string;
  /** The request message; bytes that do not decode give a value `isUndecodable` marks. */
  readonly decode: (bytes: Uint8Array) => unknown;
  /** The response message as one gRPC frame (`frameOf`, `frameWith`). */
  readonly frame: (response: never) => Buffer;
  /** Answers one request; what it throws is answered through the error table. */
  readonly handle: (request: never, ctx: RouteContext) => Promise<unknown>;
}

/** A method with what every call of it shares. */
interface Served extends LaneMethod {
  readonly path: string;
  readonly decode: (bytes: Uint8Array) => unknown;
  readonly frame: (response: unknown) => Buffer;
  readonly handle: (request: unknown, ctx: RouteContext) => Promise<unknown>;
}

/**
 * A lane (`addStreamLane`) that serves `methods` itself; other calls, every
 * call while a tracer provider is registered, and requests it does not take
 * as they are go to grpc-js untouched.
 */
export function createDirectUnaryLane(
  methods: readonly DirectUnaryMethod[],
  options: LaneOptions,
): StreamLane {
  const served = new Map<string, Served>(
    methods.map((method) => [
      method.path,
      {
        ...options,
        path: method.path,
        decode: method.decode,
        frame: method.frame as Served["frame"],
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
 * One call of a served method on its HTTP/2 stream: runs the method on the
 * request message, answers with the response message and `grpc-status` 0, or
 * with a trailers-only status.
 */
class DirectUnaryCall extends LaneCall {
  private ctx: DirectCallContext | undefined;

  constructor(
    private readonly served: Served,
    stream: ServerHttp2Stream,
    timeoutMs: number | undefined,
  ) {
    super({
      stream,
      path: served.path,
      maxReceiveMessageBytes: served.maxReceiveMessageBytes,
      timeoutMs,
    });
  }

  protected run(request: Buffer): void {
    void this.answer(this.served.decode(request));
  }

  protected onCancel(): void {
    this.ctx?.cancel();
  }

  /** The gateway middleware's steps around the method, then the answer. */
  private async answer(request: unknown): Promise<void> {
    let response: unknown;
    const failure = await this.gated(this.served, request, async (valid) => {
      this.ctx = new DirectCallContext(this, this.deadline, this.served.logger);
      response = await this.served.handle(valid, this.ctx);
    });
    if (failure !== undefined) this.sendStatus(failure.code, failure.details);
    else this.reply(response);
  }

  /** Sends the response message, then `grpc-status` 0 in the trailers. */
  private reply(response: unknown): void {
    let frame: Buffer;
    try {
      frame = this.served.frame(response);
    } catch (error) {
      this.served.logger.error("unexpected error in gRPC call", error);
      this.sendStatus(status.INTERNAL, "Error serializing response");
      return;
    }
    this.sendStatus(status.OK, "OK", frame);
  }
}

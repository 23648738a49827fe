/**
 * Unary methods served straight on grpc-js: a server interceptor answers the
 * call itself, so a call costs no nice-grpc CallContext, no AbortController
 * unless the method reads its signal, no metadata copy and no grpc-js
 * request stream. It keeps the gateway middleware's behaviour (shutdown
 * gate, undecodable requests, error table, metrics, the CANCELLED answer).
 *
 * While a tracer provider is registered, calls take nice-grpc's path, where
 * the tracing middleware makes their spans: the method must also be mounted
 * there, through the gated manifest entry.
 */
import {
  type Metadata,
  type ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  status,
} from "@grpc/grpc-js";
import { ServerError, Status } from "nice-grpc";
import { isGatewayError, OUTCOMES, outcomeError } from "../../handlers/errors.js";
import { invalid } from "../../handlers/execute-command.js";
import type { Logger, RouteContext } from "../../handlers/ports.js";
import type { Metrics } from "../telemetry/metrics.js";
import { isUndecodable, toServerError } from "./server.js";
import { traceHeadersOnce, tracerProviderRegistered } from "./tracing.js";

/** A unary method served by {@link createDirectUnaryInterceptor}. */
export interface DirectUnaryMethod {
  /** The method's HTTP/2 path, `/package.Service/Method`. */
  readonly path: string;
  /** Answers one request; what it throws is answered through the error table. */
  readonly handle: (request: never, ctx: RouteContext) => Promise<unknown>;
}

/** What {@link createDirectUnaryInterceptor} needs besides its methods. */
export interface DirectUnaryOptions {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly isShuttingDown: () => boolean;
}

type Listener = Parameters<ServerInterceptingCallInterface["start"]>[0];

/** A method with what every call of it shares. */
interface Served extends DirectUnaryOptions {
  readonly path: string;
  /** The labels of its `gateway_grpc_request_duration_seconds`. */
  readonly durationLabels: { readonly method: string };
  /** The labels of its `gateway_grpc_requests_total`, by status name, made as each is first needed. */
  readonly requestLabels: Map<string, { readonly method: string; readonly code: string }>;
  readonly handle: (request: unknown, ctx: RouteContext) => Promise<unknown>;
}

/**
 * A grpc-js server interceptor that serves `methods` itself; other calls,
 * and every call while a tracer provider is registered, pass through
 * untouched. Give it to `createGrpcServer` as `direct`: it answers the call
 * it is given, so no other interceptor may wrap the calls it serves.
 */
export function createDirectUnaryInterceptor(
  methods: readonly DirectUnaryMethod[],
  options: DirectUnaryOptions,
): ServerInterceptor {
  const served = new Map<string, Served>(
    methods.map((method) => [
      method.path,
      {
        ...options,
        path: method.path,
        durationLabels: { method: method.path.slice(method.path.lastIndexOf("/") + 1) },
        requestLabels: new Map(),
        handle: method.handle as Served["handle"],
      },
    ]),
  );
  // grpc-js chains interceptors through the call interface only; its
  // ServerInterceptor type names the class.
  return (descriptor, call) => {
    const method = served.get(descriptor.path);
    if (method === undefined || tracerProviderRegistered()) return call as ServerInterceptingCall;
    return new DirectUnaryCall(method, call) as unknown as ServerInterceptingCall;
  };
}

/** The route context of a direct call: the signal is made only when asked for. */
class DirectCallContext implements RouteContext {
  readonly deadline: number | undefined;
  readonly logger: Logger;
  private controller: AbortController | undefined;
  private readonly traceHeadersOnce = traceHeadersOnce();

  constructor(private readonly call: DirectUnaryCall) {
    const deadline = call.getDeadline();
    const ms = deadline instanceof Date ? deadline.getTime() : deadline;
    this.deadline = Number.isFinite(ms) ? ms : undefined;
    this.logger = call.served.logger;
  }

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
 * One call of a served method, as grpc-js's unary handling sees it. The
 * listener grpc-js passes to `start` is never called: this call reads the
 * request and answers on the inner call itself.
 */
class DirectUnaryCall implements ServerInterceptingCallInterface, Listener {
  /** The client cancelled, the deadline passed or the server was forced down before the answer. */
  cancelled = false;
  private request: unknown;
  private received = false;
  private answered = false;
  private ctx: DirectCallContext | undefined;

  constructor(
    readonly served: Served,
    private readonly next: ServerInterceptingCallInterface,
  ) {}

  start(_listener: Listener): void {
    this.next.start(this);
  }

  onReceiveMetadata(): void {
    this.next.startRead();
  }

  onReceiveMessage(message: unknown): void {
    // The same answers as grpc-js's own unary handling.
    if (this.received) {
      this.answer(
        status.UNIMPLEMENTED,
        `Received a second request message for server streaming method ${this.served.path}`,
      );
      return;
    }
    this.received = true;
    this.request = message;
    this.next.startRead();
  }

  onReceiveHalfClose(): void {
    if (!this.received) {
      this.answer(
        status.UNIMPLEMENTED,
        `Received no request message for server streaming method ${this.served.path}`,
      );
      return;
    }
    void this.run();
  }

  onCancel(): void {
    if (this.answered) return;
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
      this.ctx = new DirectCallContext(this);
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
    if (failure !== undefined) {
      this.answer(failure.code, failure.details);
      return;
    }
    this.answered = true;
    this.next.sendMessage(response, () =>
      this.next.sendStatus({ code: status.OK, details: "OK", metadata: null }),
    );
  }

  private answer(code: status, details: string): void {
    this.answered = true;
    this.next.sendStatus({ code, details, metadata: null });
  }

  sendMetadata(metadata: Metadata): void {
    this.next.sendMetadata(metadata);
  }
  sendMessage(message: unknown, callback: () => void): void {
    this.next.sendMessage(message, callback);
  }
  sendStatus(...args: Parameters<ServerInterceptingCallInterface["sendStatus"]>): void {
    this.next.sendStatus(...args);
  }
  startRead(): void {
    this.next.startRead();
  }
  getPeer(): string {
    return this.next.getPeer();
  }
  getDeadline(): ReturnType<ServerInterceptingCallInterface["getDeadline"]> {
    return this.next.getDeadline();
  }
  getHost(): string {
    return this.next.getHost();
  }
  getAuthContext(): ReturnType<ServerInterceptingCallInterface["getAuthContext"]> {
    return this.next.getAuthContext();
  }
  getConnectionInfo(): ReturnType<ServerInterceptingCallInterface["getConnectionInfo"]> {
    return this.next.getConnectionInfo();
  }
  getMetricsRecorder(): ReturnType<ServerInterceptingCallInterface["getMetricsRecorder"]> {
    return this.next.getMetricsRecorder();
  }
}

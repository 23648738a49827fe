/**
 * Request spans: a nice-grpc server middleware that makes one SERVER span per
 * call, the same for public HTTP requests, and the trace headers a handler
 * passes on to downstream routes. The caller's W3C `traceparent`/`tracestate`
 * (gRPC metadata or HTTP headers) becomes the parent.
 */
import {
  type Attributes,
  type Context,
  context as contextApi,
  ProxyTracerProvider,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { type Metadata, ServerError, type ServerMiddleware, Status } from "nice-grpc";

const TRACER_NAME = "edge-gateway";

/** Options of {@link createGrpcTracingMiddleware} and {@link withHttpSpan}. */
export interface TracingOptions {
  /** Tracer of the spans; default the global tracer provider's `edge-gateway` tracer. */
  readonly tracer?: Tracer;
}

/**
 * The status codes that make a SERVER span an error (OpenTelemetry's RPC
 * conventions): the others are the caller's fault, not the server's.
 */
const SERVER_ERROR_CODES: ReadonlySet<Status> = new Set([
  Status.UNKNOWN,
  Status.DEADLINE_EXCEEDED,
  Status.UNIMPLEMENTED,
  Status.INTERNAL,
  Status.UNAVAILABLE,
  Status.DATA_LOSS,
]);

const metadataGetter: TextMapGetter<Metadata> = {
  keys: (metadata) => [...metadata].map(([key]) => key),
  get: (metadata, key) => {
    const value = metadata.get(key);
    return typeof value === "string" ? value : undefined;
  },
};

const headersGetter: TextMapGetter<Headers> = {
  keys: (headers) => [...headers.keys()],
  get: (headers, key) => headers.get(key) ?? undefined,
};

/**
 * A nice-grpc server middleware that wraps each call in a SERVER span named
 * `package.Service/Method` with `rpc.system`, `rpc.service`, `rpc.method` and,
 * once the call ends (response, error, stream end or cancel),
 * `rpc.grpc.status_code`. The span is the active span while the
 * implementation and inner middleware run, so {@link traceHeadersOf} and
 * Redis command spans see it. While no tracer provider is registered (no
 * SDK started, no tracer given) calls pass straight through: every span
 * would be a no-op.
 */
export function createGrpcTracingMiddleware(options: TracingOptions = {}): ServerMiddleware {
  return (call, callContext) => {
    if (options.tracer === undefined && !tracerProviderRegistered()) {
      return call.next(call.request, callContext);
    }
    const tracer = options.tracer ?? trace.getTracer(TRACER_NAME);
    const { service, method } = splitPath(call.method.path);
    const parent = propagation.extract(ROOT_CONTEXT, callContext.metadata, metadataGetter);
    const span = tracer.startSpan(
      `${service}/${method}`,
      {
        kind: SpanKind.SERVER,
        attributes: { "rpc.system": "grpc", "rpc.service": service, "rpc.method": method },
      },
      parent,
    );
    const active = trace.setSpan(parent, span);

    async function* traced() {
      let code = Status.OK;
      try {
        if (call.responseStream) {
          yield* call.next(call.request, callContext);
          return;
        }
        return yield* call.next(call.request, callContext);
      } catch (error) {
        code = statusOf(error);
        if (!(error instanceof ServerError) && !isAbortError(error)) {
          span.recordException(error instanceof Error ? error : String(error));
        }
        throw error;
      } finally {
        span.setAttribute("rpc.grpc.status_code", code);
        if (SERVER_ERROR_CODES.has(code)) {
          span.setStatus({ code: SpanStatusCode.ERROR, message: Status[code] });
        }
        span.end();
      }
    }
    return bindGenerator(active, traced());
  };
}

/**
 * The W3C trace headers (`traceparent`, and `tracestate` when there is one)
 * of `context` — by default the active context, inside a call the call's
 * server span — to pass to a downstream route. Empty when there is no trace.
 */
export function traceHeadersOf(context: Context = contextApi.active()): Record<string, string> {
  const headers: Record<string, string> = {};
  propagation.inject(context, headers);
  return headers;
}

/**
 * {@link traceHeadersOf} the context active now, injected on the first call
 * of the returned function and kept: most routes never read them.
 */
export function traceHeadersOnce(): () => Readonly<Record<string, string>> {
  const context = contextApi.active();
  let headers: Record<string, string> | undefined;
  return () => {
    headers ??= traceHeadersOf(context);
    return headers;
  };
}

/** The request a {@link withHttpSpan} span describes. */
export interface HttpSpanRequest {
  /** The matched route template, e.g. `/api/v1/public/auth/send-email-code`. */
  readonly route: string;
  /** The request method. */
  readonly method: string;
  /** The request headers, whose `traceparent`/`tracestate` become the parent. */
  readonly headers: Headers;
}

/**
 * Runs `handle` inside a SERVER span named `METHOD route` with
 * `http.request.method`, `http.route` and, when `handle` returns a
 * `Response` or throws an error with a numeric `status` (as h3's `HTTPError`
 * does), `http.response.status_code`; 5xx marks the span an error.
 *
 * @example
 * app.post(route, (event) =>
 *   withHttpSpan({ route, method: event.req.method, headers: event.req.headers }, () =>
 *     handle(event),
 *   ),
 * );
 */
export async function withHttpSpan<Result>(
  request: HttpSpanRequest,
  handle: () => Result | Promise<Result>,
  options: TracingOptions = {},
): Promise<Result> {
  const tracer = options.tracer ?? trace.getTracer(TRACER_NAME);
  const method = request.method.toUpperCase();
  const parent = propagation.extract(ROOT_CONTEXT, request.headers, headersGetter);
  const attributes: Attributes = { "http.request.method": method, "http.route": request.route };
  const span = tracer.startSpan(
    `${method} ${request.route}`,
    { kind: SpanKind.SERVER, attributes },
    parent,
  );
  try {
    const result = await contextApi.with(trace.setSpan(parent, span), handle);
    if (result instanceof Response) recordHttpStatus(span, result.status);
    return result;
  } catch (error) {
    const status = (error as { status?: unknown } | null)?.status;
    if (typeof status === "number") recordHttpStatus(span, status);
    else {
      span.recordException(error instanceof Error ? error : String(error));
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
    throw error;
  } finally {
    span.end();
  }
}

function recordHttpStatus(span: Span, status: number): void {
  span.setAttribute("http.response.status_code", status);
  if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
}

/**
 * True once an SDK has registered a global tracer provider. Checked per call,
 * so an SDK started after the server still gets its spans; while none is
 * registered the check allocates nothing.
 */
export function tracerProviderRegistered(): boolean {
  const provider = trace.getTracerProvider();
  return (
    !(provider instanceof ProxyTracerProvider) ||
    provider.getDelegateTracer(TRACER_NAME) !== undefined
  );
}

/** `/package.Service/Method` → its service and method names. */
function splitPath(path: string): { service: string; method: string } {
  const slash = path.lastIndexOf("/");
  return { service: path.slice(1, slash), method: path.slice(slash + 1) };
}

function statusOf(error: unknown): Status {
  if (error instanceof ServerError) return error.code;
  if (isAbortError(error)) return Status.CANCELLED;
  return Status.UNKNOWN;
}

function isAbortError(error: unknown): boolean {
  return (error as { name?: unknown } | null)?.name === "AbortError";
}

/**
 * Makes each step of `generator` run in `context`: an async generator's body
 * runs in the context of whoever resumes it, and nice-grpc resumes it from
 * its own.
 */
function bindGenerator<T, TReturn, TNext>(
  context: Context,
  generator: AsyncGenerator<T, TReturn, TNext>,
): AsyncGenerator<T, TReturn, TNext> {
  const bound: AsyncGenerator<T, TReturn, TNext> = {
    next: (...args) => contextApi.with(context, () => generator.next(...args)),
    return: (value) => contextApi.with(context, () => generator.return(value)),
    throw: (error) => contextApi.with(context, () => generator.throw(error)),
    [Symbol.asyncIterator]: () => bound,
  };
  return bound;
}

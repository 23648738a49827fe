/**
 * The public HTTP listener's h3 app (contract §8, §14): health and readiness
 * probes and the public auth routes, mounted from one manifest through
 * `toH3Handler`; beside them `edgegateway.v1.EdgeGatewayService` over Connect
 * and gRPC-Web, and CORS for the allowed browser origins.
 */
import { type EventHandler, H3, type H3Event, type NodeHandler, toNodeHandler } from "h3";
import {
  GatewayError,
  httpAnswerOf,
  INTERNAL_MESSAGE,
  isGatewayError,
  toGatewayError,
} from "../../handlers/errors.js";
import type { AuthUpstream, Logger } from "../../handlers/ports.js";
import {
  CONFIRM_EMAIL_CODE_PATH,
  confirmEmailCode,
  type PublicAuthContext,
  type PublicAuthDeps,
  SEND_EMAIL_CODE_PATH,
  sendEmailCode,
} from "../../handlers/public-auth.js";
import { withHttpSpan } from "../grpc/tracing.js";
import type { Metrics } from "../telemetry/metrics.js";
import { BodyTooLargeError, readBoundedBody } from "./bounded-body.js";
import type { ConnectMethods, ConnectRoute, ConnectRoutesOptions } from "./connect.js";
import { createCorsPolicy } from "./cors.js";

/** Largest accepted request body, in bytes; a larger one is `413 payload_too_large`. */
export const MAX_PUBLIC_BODY_BYTES = 16 * 1024;

/** The `route` label of responses to paths no route matches (keeps label cardinality bounded). */
export const UNMATCHED_ROUTE = "unmatched";

/** Options of {@link createPublicHttpApp}. */
export interface PublicHttpOptions {
  /** The auth upstream; `undefined` answers the auth routes `503 service_unavailable`. */
  readonly authUpstream: AuthUpstream | undefined;
  /** Whether `/readyz` answers ready. */
  readonly isReady: () => boolean;
  /** How the node talks to Redis (`GATEWAY_REDIS_CLUSTER`); `/readyz` adds `redis_mode: "cluster"` for a cluster. */
  readonly redisMode?: "single" | "cluster";
  /** Where unexpected errors and upstream failures are logged. */
  readonly logger: Logger;
  /**
   * Counts every response in `gateway_http_requests_total{route,status}` and
   * failed authentication steps of Connect and gRPC-Web calls in
   * `gateway_auth_failures_total`.
   */
  readonly metrics?: Pick<Metrics, "httpRequests" | "authFailures">;
  /**
   * The methods served over Connect and gRPC-Web at
   * `/edgegateway.v1.EdgeGatewayService/<Method>`, with their limits; without
   * it those paths are unknown (`404`).
   */
  readonly connect?: { readonly methods: ConnectMethods } & Pick<
    ConnectRoutesOptions,
    "maxCommandPayloadBytes" | "isShuttingDown"
  >;
  /** Browser origins answered with CORS headers (`GATEWAY_CORS_ALLOWED_ORIGINS`); none by default. */
  readonly corsAllowedOrigins?: readonly string[];
}

/** A JSON object answered to the client. */
type JsonObject = object;

/** A probe: `GET` (and `HEAD`), no body, answered from the app's own state. */
export interface ProbeRoute {
  readonly kind: "probe";
  readonly route: string;
  readonly method: "GET";
  /** The status and body to answer. */
  readonly handler: (state: Pick<PublicHttpOptions, "isReady" | "redisMode">) => {
    readonly status: number;
    readonly body: JsonObject;
  };
}

/** An auth route: a JSON body in, forwarded to the auth upstream, `200` with a JSON object out. */
export interface AuthRoute {
  readonly kind: "auth";
  readonly route: string;
  readonly method: "POST";
  /** A public auth handler from `handlers/public-auth.ts`. */
  readonly handler: (
    body: unknown,
    deps: PublicAuthDeps,
    ctx: PublicAuthContext,
  ) => Promise<JsonObject>;
}

/** One entry of the public listener's manifest. */
export type PublicHttpRoute = ProbeRoute | AuthRoute;

/** Every route the public listener serves. */
export const PUBLIC_HTTP_ROUTES: readonly PublicHttpRoute[] = [
  {
    kind: "probe",
    route: "/healthz",
    method: "GET",
    handler: () => ({ status: 200, body: { status: "ok" } }),
  },
  {
    kind: "probe",
    route: "/readyz",
    method: "GET",
    handler: ({ isReady, redisMode }) => {
      // §8's body exactly in single mode; a cluster node says so (§13).
      const mode = redisMode === "cluster" ? { redis_mode: redisMode } : {};
      return isReady()
        ? { status: 200, body: { status: "ready", ...mode } }
        : { status: 503, body: { status: "not_ready", ...mode } };
    },
  },
  { kind: "auth", route: SEND_EMAIL_CODE_PATH, method: "POST", handler: sendEmailCode },
  { kind: "auth", route: CONFIRM_EMAIL_CODE_PATH, method: "POST", handler: confirmEmailCode },
];

/**
 * Creates the public listener's app. Checks run in the order of contract §8,
 * the first failing one answering: unknown path `404` → wrong method `405`
 * (with `Allow`) → no auth upstream `503` → `Content-Type` not
 * `application/json` `415` → body over 16 KiB `413` → body not JSON or invalid
 * `400` → forwarded. Every error uses the envelope
 * `{"error":{"code","message"}}`; anything unexpected is logged and answered
 * `500 internal_error` with a generic message. `GET` routes also answer `HEAD`.
 *
 * @example
 * import { createServer } from "node:http";
 * const app = createPublicHttpApp({ authUpstream, isReady: () => host.ready, logger });
 * createServer(toNodeListener(app)).listen(8080);
 */
export function createPublicHttpApp(options: PublicHttpOptions): H3 {
  const { logger, metrics } = options;
  const app = new H3({
    // Paths are never decoded here; a malformed escape simply matches no route (404).
    allowMalformedURL: true,
    silent: true,
    onError: (error) => {
      // Only failures outside the route handlers arrive here; they catch their own.
      logger.error("public http: unexpected error", error.cause ?? error);
      return toErrorResponse(new GatewayError("internal", INTERNAL_MESSAGE));
    },
    onResponse: (response, event) => {
      metrics?.httpRequests.inc({ route: routeLabel(event), status: String(response.status) });
    },
  });

  const cors = createCorsPolicy(options.corsAllowedOrigins ?? []);
  app.use(async (event, next) => {
    const preflight = cors.preflight(event.req);
    if (preflight !== undefined) return preflight;
    const response = await next();
    return response instanceof Response ? cors.apply(event.req, response) : response;
  });

  const allowed = new Map<string, string[]>();
  for (const route of PUBLIC_HTTP_ROUTES) {
    const inner = toH3Handler(route, options);
    const handler: EventHandler = (event) =>
      withHttpSpan(
        { route: route.route, method: event.req.method, headers: event.req.headers },
        async () => (await inner(event)) as Response,
      );
    app.on(route.method, route.route, handler);
    const methods = allowed.get(route.route) ?? [];
    methods.push(route.method);
    if (route.method === "GET") {
      app.on("HEAD", route.route, handler);
      methods.push("HEAD");
    }
    allowed.set(route.route, methods);
  }
  if (options.connect !== undefined) {
    const { methods, ...limits } = options.connect;
    const routes = lazyConnectRoutes(methods, { ...limits, logger, metrics });
    for (const path of CONNECT_PATHS) {
      // Every method reaches the procedure: the protocols answer their own 405 and 415.
      app.all(path, (event) =>
        withHttpSpan(
          { route: path, method: event.req.method, headers: event.req.headers },
          async () => (await routes()).get(path)!(event.req),
        ),
      );
    }
  }
  // Method-less routes match only when no route of the request's method does.
  for (const [route, methods] of allowed) app.all(route, methodNotAllowed(methods.join(", ")));
  app.all("/**", () => toErrorResponse(new GatewayError("not_found", "no route for this path")));
  return app;
}

/** The paths of `edgegateway.v1.EdgeGatewayService`'s methods over Connect and gRPC-Web. */
export const CONNECT_PATHS = [
  "/edgegateway.v1.EdgeGatewayService/ExecuteCommand",
  "/edgegateway.v1.EdgeGatewayService/SubscribeEvents",
] as const;

/**
 * The Connect routes by path, made on first use. Connect, protobuf-es and
 * the generated descriptors are loaded only then: a node no browser calls
 * does not carry them (about 3 MiB of live heap, which V8 lets grow several
 * times over before a full collection under load).
 */
function lazyConnectRoutes(
  methods: ConnectMethods,
  options: ConnectRoutesOptions,
): () => Promise<ReadonlyMap<string, ConnectRoute["handle"]>> {
  let loading: Promise<ReadonlyMap<string, ConnectRoute["handle"]>> | undefined;
  return () => {
    loading ??= import("./connect.js").then(({ createConnectRoutes }) => {
      const routes = new Map(
        createConnectRoutes(methods, options).map((route) => [route.path, route.handle]),
      );
      const missing = CONNECT_PATHS.filter((path) => !routes.has(path));
      if (missing.length > 0 || routes.size !== CONNECT_PATHS.length) {
        throw new Error(`Connect routes ${[...routes.keys()]} differ from ${CONNECT_PATHS}`);
      }
      return routes;
    });
    return loading;
  };
}

/** A `node:http` request listener serving `app` (h3's `toNodeHandler`). */
export function toNodeListener(app: H3): NodeHandler {
  return toNodeHandler(app);
}

/**
 * Adapts one manifest entry to an h3 handler: for auth routes it runs the §8
 * checks from the adapter onwards, reads the bounded JSON body and calls the
 * handler with the request's abort signal.
 */
export function toH3Handler(route: PublicHttpRoute, options: PublicHttpOptions): EventHandler {
  if (route.kind === "probe") {
    return () => {
      const answer = route.handler(options);
      return jsonResponse(answer.status, answer.body);
    };
  }
  return async (event) => {
    try {
      const authUpstream = options.authUpstream;
      if (authUpstream === undefined) {
        throw new GatewayError("unavailable", "auth upstream is not configured");
      }
      const body = await readJsonBody(event.req);
      const answer = await route.handler(
        body,
        { authUpstream, logger: options.logger },
        { signal: event.req.signal },
      );
      return jsonResponse(200, answer);
    } catch (error) {
      return toErrorResponse(error, options);
    }
  };
}

/** The 405 answer for a known path, naming the allowed methods. */
function methodNotAllowed(allow: string): EventHandler {
  return () => {
    const response = toErrorResponse(
      new GatewayError("method_not_allowed", `method not allowed; use ${allow}`),
    );
    response.headers.set("allow", allow);
    return response;
  };
}

/** The manifest route that answered, or `unmatched`. */
function routeLabel(event: H3Event): string {
  const route = event.context.matchedRoute?.route;
  return route === undefined || route === "/**" ? UNMATCHED_ROUTE : route;
}

/** True for `application/json`, with or without parameters such as `charset`. */
function isJsonMediaType(contentType: string | null): boolean {
  if (contentType === null) return false;
  const mediaType = contentType.split(";", 1)[0]!.trim().toLowerCase();
  return mediaType === "application/json";
}

/**
 * Checks the media type, then reads at most {@link MAX_PUBLIC_BODY_BYTES} of
 * the body (counting the bytes that arrive, whatever `Content-Length` says)
 * and parses it as UTF-8 JSON.
 */
async function readJsonBody(request: Request): Promise<unknown> {
  if (!isJsonMediaType(request.headers.get("content-type"))) {
    throw new GatewayError("unsupported_media_type", "Content-Type must be application/json");
  }
  let bytes: Buffer;
  try {
    // Left unread past the limit: cancelling would destroy the socket before
    // the 413 is written. The answer closes the connection instead.
    bytes = await readBoundedBody(request, {
      maxBytes: MAX_PUBLIC_BODY_BYTES,
      onTooLarge: "leave",
    });
  } catch (error) {
    if (error instanceof BodyTooLargeError) {
      throw new GatewayError(
        "payload_too_large",
        `request body must be at most ${MAX_PUBLIC_BODY_BYTES} bytes`,
      );
    }
    // The client went away mid-body: an expected failure, not an internal one.
    throw new GatewayError("invalid_argument", "request body was not received completely");
  }
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return JSON.parse(text);
  } catch {
    throw new GatewayError("invalid_argument", "request body must be valid UTF-8 JSON");
  }
}

/** A JSON answer that is never cached. */
function jsonResponse(status: number, body: unknown): Response {
  const text = JSON.stringify(body);
  return new Response(text, {
    status,
    headers: {
      "content-type": "application/json; charset=utf-8",
      "content-length": String(Buffer.byteLength(text)),
      "cache-control": "no-store",
    },
  });
}

/**
 * The envelope answer for anything thrown: a GatewayError's status and code
 * (an upstream's relayed ones when it carries them), or `500 internal_error`
 * with the generic message for anything else, which is logged.
 */
function toErrorResponse(error: unknown, context?: { readonly logger: Logger }): Response {
  if (!isGatewayError(error)) {
    context?.logger.error("public http: unexpected error", error);
    return toErrorResponse(toGatewayError(error));
  }
  const { status, envelope } = httpAnswerOf(error);
  if (status >= 500) {
    context?.logger.warn(`public http: ${status} ${envelope.error.code}: ${error.message}`);
  }
  const response = jsonResponse(status, envelope);
  // The rest of an oversized body stays unread: close the connection after the answer.
  if (error.code === "payload_too_large") response.headers.set("connection", "close");
  return response;
}

/**
 * CORS for the public listener (contract §14): browser apps on the origins in
 * `GATEWAY_CORS_ALLOWED_ORIGINS` may call the Connect and gRPC-Web routes and
 * the §8 routes; any other origin, and every origin when the list is empty,
 * gets no CORS headers at all.
 */
/** Methods a browser may use across origins: the §8 routes and the Connect protocols. */
export const CORS_ALLOWED_METHODS = ["GET", "HEAD", "POST"] as const;

/**
 * Request headers a browser may send: those of the Connect and gRPC-Web
 * protocols (`content-type`, `connect-protocol-version`, `connect-timeout-ms`,
 * `grpc-timeout`, `x-grpc-web`, `x-user-agent`, …) and the W3C trace context.
 */
export const CORS_ALLOWED_HEADERS: readonly string[] = [
  // `cors.allowedHeaders` of @connectrpc/connect, lower-cased (a test keeps them equal);
  // written out so that the listener does not load Connect before a browser calls.
  "content-type",
  "connect-protocol-version",
  "connect-timeout-ms",
  "connect-content-encoding",
  "connect-accept-encoding",
  "content-encoding",
  "accept-encoding",
  "grpc-message-type",
  "x-grpc-web",
  "x-user-agent",
  "grpc-timeout",
  "traceparent",
  "tracestate",
];

/** Response headers a browser's script may read: the gRPC-Web status trailers-in-headers and encodings. */
export const CORS_EXPOSED_HEADERS: readonly string[] = [
  // `cors.exposedHeaders` of @connectrpc/connect, lower-cased (a test keeps them equal).
  "grpc-status",
  "grpc-message",
  "grpc-status-details-bin",
  "content-encoding",
  "connect-content-encoding",
];

/** How long a browser may cache a preflight answer, in seconds. */
export const CORS_MAX_AGE_SECONDS = 7200;

/** The CORS policy of one listener. */
export interface CorsPolicy {
  /**
   * The answer to a preflight (`OPTIONS` with `Origin` and
   * `Access-Control-Request-Method`) from an allowed origin: `204` with the
   * allowed methods and headers. `undefined` for any other request, which is
   * then routed as usual.
   */
  preflight(request: Request): Response | undefined;
  /**
   * Adds `Access-Control-Allow-Origin` and `Access-Control-Expose-Headers` to
   * `response` when `request` comes from an allowed origin, and `Vary: Origin`
   * whenever the policy allows any origin (the answer depends on it).
   */
  apply(request: Request, response: Response): Response;
}

/** Creates the policy for `allowedOrigins` (serialised origins such as `https://app.example.com`). */
export function createCorsPolicy(allowedOrigins: readonly string[]): CorsPolicy {
  const allowed = new Set(allowedOrigins);
  const originOf = (request: Request): string | undefined => {
    const origin = request.headers.get("origin");
    return origin !== null && allowed.has(origin) ? origin : undefined;
  };
  return {
    preflight(request) {
      if (request.method !== "OPTIONS") return undefined;
      if (!request.headers.has("access-control-request-method")) return undefined;
      const origin = originOf(request);
      if (origin === undefined) return undefined;
      return new Response(null, {
        status: 204,
        headers: {
          "access-control-allow-origin": origin,
          "access-control-allow-methods": CORS_ALLOWED_METHODS.join(", "),
          "access-control-allow-headers": CORS_ALLOWED_HEADERS.join(", "),
          "access-control-max-age": String(CORS_MAX_AGE_SECONDS),
          vary: "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        },
      });
    },
    apply(request, response) {
      if (allowed.size === 0) return response;
      response.headers.append("vary", "Origin");
      const origin = originOf(request);
      if (origin !== undefined) {
        response.headers.set("access-control-allow-origin", origin);
        response.headers.set("access-control-expose-headers", CORS_EXPOSED_HEADERS.join(", "));
      }
      return response;
    },
  };
}

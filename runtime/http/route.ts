/**
 * A route factory that forwards a command to a downstream HTTP service, for
 * `routes` objects and `GATEWAY_ROUTES_MODULE` modules.
 */
import { GatewayError, isGatewayError } from "../../handlers/errors.js";
import type { RouteHandler } from "../../handlers/ports.js";
import { BodyTooLargeError, readBoundedBody } from "./bounded-body.js";

/** Options of {@link createHttpRoute}. */
export interface HttpRouteOptions {
  /** The downstream URL the command is POSTed to. */
  readonly url: string;
  /** Upper bound of one forward, in ms, within the call's own deadline. Defaults to 5000. */
  readonly timeoutMs?: number;
  /** Largest downstream response body kept, in bytes. Defaults to 1 MiB. */
  readonly maxResponseBytes?: number;
  /** Extra request headers (a service token, say). */
  readonly headers?: Readonly<Record<string, string>>;
  /** `fetch` implementation; the global one by default. */
  readonly fetch?: typeof fetch;
}

/** Header names the forward uses. */
export const HttpRouteHeaders = {
  userId: "x-edge-user-id",
  deviceSessionId: "x-edge-device-session-id",
  requestId: "x-edge-request-id",
  messageType: "x-edge-message-type",
  resultCode: "x-edge-result-code",
} as const;

const RESULT_CODE = /^[A-Za-z0-9._:-]{1,64}$/;

/**
 * Creates a route that POSTs the command payload (`application/octet-stream`)
 * to `url` with the user, device session, request id and message type as
 * `x-edge-*` headers and the W3C trace context (`traceparent`, `tracestate`).
 *
 * The downstream answers with the result payload as its body and the result
 * code in `x-edge-result-code` (default `ok` for 2xx, `rejected` for 4xx).
 * 5xx and transport failures answer `UNAVAILABLE`; a timeout or a passed
 * deadline `DEADLINE_EXCEEDED`.
 *
 * @example
 * export const routes = {
 *   "profile.get": createHttpRoute({ url: "http://profile.internal:8080/commands/profile.get" }),
 * };
 */
export function createHttpRoute(options: HttpRouteOptions): RouteHandler {
  const timeoutMs = options.timeoutMs ?? 5000;
  const maxResponseBytes = options.maxResponseBytes ?? 1024 * 1024;
  const doFetch = options.fetch ?? fetch;
  new URL(options.url);

  return async (command, ctx) => {
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = AbortSignal.any([ctx.signal, timeout]);
    let response: Response;
    try {
      response = await doFetch(options.url, {
        method: "POST",
        body: command.payload,
        signal,
        redirect: "manual",
        headers: {
          ...options.headers,
          ...ctx.traceHeaders,
          "content-type": "application/octet-stream",
          [HttpRouteHeaders.userId]: command.userId,
          [HttpRouteHeaders.deviceSessionId]: command.deviceSessionId,
          [HttpRouteHeaders.requestId]: command.requestId,
          [HttpRouteHeaders.messageType]: command.messageType,
        },
      });
    } catch (error) {
      throw failure(error, timeout, ctx.deadline);
    }

    const rejected = response.status >= 400 && response.status < 500;
    if (!response.ok && !rejected) {
      await response.body?.cancel();
      if (response.status === 504) {
        throw new GatewayError("deadline_exceeded", "downstream timed out");
      }
      throw new GatewayError("unavailable", "downstream unavailable");
    }

    let payload: Uint8Array;
    try {
      payload = await readBoundedBody(response, { maxBytes: maxResponseBytes });
    } catch (error) {
      if (error instanceof BodyTooLargeError) {
        throw new GatewayError("unavailable", "downstream response too large");
      }
      throw failure(error, timeout, ctx.deadline);
    }
    const header = response.headers.get(HttpRouteHeaders.resultCode);
    const resultCode =
      header !== null && RESULT_CODE.test(header) ? header : response.ok ? "ok" : "rejected";
    return { resultCode, payload };
  };
}

function failure(error: unknown, timeout: AbortSignal, deadline: number | undefined): GatewayError {
  if (isGatewayError(error)) return error;
  if (timeout.aborted || (deadline !== undefined && Date.now() >= deadline)) {
    return new GatewayError("deadline_exceeded", "downstream timed out");
  }
  return new GatewayError("unavailable", "downstream unavailable");
}

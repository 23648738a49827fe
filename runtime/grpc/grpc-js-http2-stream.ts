/**
 * The one place the gateway reads @grpc/grpc-js internals: the HTTP/2 stream
 * under a server call, so that a push stream whose client never takes its
 * terminal status can be reset (contract §7).
 *
 * Written against @grpc/grpc-js 1.14.7, which offers no public way to reset
 * one call: a server call's public surface (`ServerInterceptingCallInterface`)
 * can only `sendStatus`, and the status queues behind the data a stalled
 * client is not reading; `Server.forceShutdown` resets every call at once.
 * So this walks two private fields: each `ServerInterceptingCall` keeps the
 * call it wraps in `nextCall`, and the innermost `BaseServerInterceptingCall`
 * keeps Node's `ServerHttp2Stream` in `stream`. test/grpc-js-http2-stream.test.ts
 * fails when a grpc-js release moves them.
 */
import type { ServerInterceptingCallInterface } from "@grpc/grpc-js";

/** The part of Node's `ServerHttp2Stream` used to reset a call. */
export interface ResettableHttp2Stream {
  readonly closed: boolean;
  /** Sends RST_STREAM with `code` (Node's `Http2Stream.close`). */
  close(code: number): void;
}

/** How many wrapping calls are walked at most: one per interceptor, with room to spare. */
const MAX_DEPTH = 16;

/**
 * The HTTP/2 stream carrying a grpc-js server call, as seen by an interceptor
 * anywhere in the server's list; `undefined` when grpc-js no longer keeps it
 * where 1.14 does (the call then cannot be reset, only ended by its status).
 */
export function http2StreamOf(
  call: ServerInterceptingCallInterface,
): ResettableHttp2Stream | undefined {
  let current: unknown = call;
  for (let depth = 0; depth < MAX_DEPTH; depth++) {
    if (typeof current !== "object" || current === null) return undefined;
    const stream = (current as { stream?: Partial<ResettableHttp2Stream> }).stream;
    if (typeof stream?.close === "function" && typeof stream.closed === "boolean") {
      return stream as ResettableHttp2Stream;
    }
    current = (current as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

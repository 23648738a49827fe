/**
 * The second place the gateway reads @grpc/grpc-js internals: a lane in front
 * of grpc-js's HTTP/2 stream handler, so that the gateway can serve some calls
 * straight on Node's `ServerHttp2Stream` and leave every other call to grpc-js
 * on the same listener and connections.
 *
 * A grpc-js server builds a call (metadata, decoder, deadline, interceptor
 * chain) for every HTTP/2 stream before any interceptor runs; measured with
 * `bench/execute-command-vs-plain.ts`, that was the largest cost of an
 * ExecuteCommand call after Ed25519. grpc-js has no public way to see a stream
 * first, so this wraps `Server.prototype.createHttp2Server` (grpc-js 1.14.7),
 * which makes each listener's `http2.Http2Server` and adds grpc-js's one
 * `stream` listener to it. For a server built with options registered here,
 * that listener is replaced by one that offers each stream to the lane first.
 * nice-grpc hands its options object to `new grpc.Server(options)` and grpc-js
 * keeps it as `options`, so the options object names the server.
 * The same wrapper also hands each HTTP/2 connection to a session hook
 * (`addSessionHook`), which the gRPC listener's keepalive uses
 * (`runtime/grpc/keepalive.ts`). test/http2-lane.test.ts fails when a grpc-js
 * release moves either.
 */
import type { IncomingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from "node:http2";
import { Server } from "@grpc/grpc-js";

/**
 * Serves the stream and returns true, or returns false without touching it
 * and grpc-js serves it. Runs before grpc-js has looked at the stream.
 */
export type StreamLane = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => boolean;

type StreamListener = (
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  ...rest: unknown[]
) => void;

/** The grpc-js server internals the lane relies on. */
interface GrpcJsServerInternals {
  readonly options?: object;
  onStreamOpened?(stream: ServerHttp2Stream): void;
}

interface Http2ServerLike {
  listeners(event: "stream"): StreamListener[];
  removeAllListeners(event: "stream"): void;
  on(event: "stream", listener: StreamListener): void;
  on(event: "session", listener: (session: ServerHttp2Session) => void): void;
}

/** What a grpc-js server built with given options gets on each listener's HTTP/2 server. */
interface Http2ServerHooks {
  lane?: StreamLane;
  /** Called with each HTTP/2 connection as it is established. */
  session?: (session: ServerHttp2Session) => void;
}

const hooks = new WeakMap<object, Http2ServerHooks>();
let patched: boolean | undefined;

/** Wraps grpc-js's `createHttp2Server` once per process; false when grpc-js has none. */
function patchGrpcJs(): boolean {
  if (patched !== undefined) return patched;
  const prototype = Server.prototype as unknown as {
    createHttp2Server?: (this: GrpcJsServerInternals, ...args: unknown[]) => Http2ServerLike;
  };
  const createHttp2Server = prototype.createHttp2Server;
  if (typeof createHttp2Server !== "function") {
    patched = false;
    return false;
  }
  prototype.createHttp2Server = function (this: GrpcJsServerInternals, ...args: unknown[]) {
    const http2Server = createHttp2Server.apply(this, args);
    const hooked = this.options === undefined ? undefined : hooks.get(this.options);
    if (hooked?.session !== undefined) http2Server.on("session", hooked.session);
    if (hooked?.lane !== undefined) putLaneFirst(http2Server, hooked.lane, this);
    return http2Server;
  };
  patched = true;
  return true;
}

/** Replaces grpc-js's one `stream` listener with one that offers each stream to `lane` first. */
function putLaneFirst(
  http2Server: Http2ServerLike,
  lane: StreamLane,
  grpcServer: GrpcJsServerInternals,
): void {
  const grpcListeners = http2Server.listeners("stream");
  if (grpcListeners.length !== 1) return;
  const [grpcJs] = grpcListeners as [StreamListener];
  http2Server.removeAllListeners("stream");
  http2Server.on("stream", (stream, headers, ...rest) => {
    if (!lane(stream, headers)) {
      grpcJs.call(http2Server, stream, headers, ...rest);
      return;
    }
    // What grpc-js does for each stream it serves: count it against the
    // connection's idle timeout (`grpc.max_connection_idle_ms`).
    grpcServer.onStreamOpened?.(stream);
  });
}

/** The hooks registered for `grpcOptions`, made on first use. */
function hooksOf(grpcOptions: object): Http2ServerHooks {
  let found = hooks.get(grpcOptions);
  if (found === undefined) {
    found = {};
    hooks.set(grpcOptions, found);
  }
  return found;
}

/**
 * Offers every HTTP/2 stream of the grpc-js server built with `grpcOptions`
 * (the object given to nice-grpc's `createServer` or to `new grpc.Server`) to
 * `lane` before grpc-js. Call before the server binds. Returns false when
 * this grpc-js release cannot take a lane: grpc-js then serves every call.
 */
export function addStreamLane(grpcOptions: object, lane: StreamLane): boolean {
  if (!streamLanesSupported()) return false;
  hooksOf(grpcOptions).lane = lane;
  return true;
}

/**
 * Calls `onSession` with each HTTP/2 connection of the grpc-js server built
 * with `grpcOptions` as it is established. Call before the server binds.
 * Returns false when this grpc-js release cannot take the hook.
 */
export function addSessionHook(
  grpcOptions: object,
  onSession: (session: ServerHttp2Session) => void,
): boolean {
  if (!streamLanesSupported()) return false;
  hooksOf(grpcOptions).session = onSession;
  return true;
}

/** Whether this grpc-js release can take a lane (`addStreamLane`). */
export function streamLanesSupported(): boolean {
  return patchGrpcJs();
}

/** A lane that offers each stream to `lanes` in turn: the first that serves it wins. */
export function combineLanes(lanes: readonly StreamLane[]): StreamLane {
  return (stream, headers) => {
    for (const lane of lanes) if (lane(stream, headers)) return true;
    return false;
  };
}

/**
 * The SubscribeEvents server stream (contract §7) and the grpc-js interceptor
 * it needs to respect HTTP/2 flow control while staying abortable.
 *
 * nice-grpc writes each yielded event and, once grpc-js reports the write
 * buffer full, parks the generator until the transport drains; only a client
 * cancel ends that wait. A hub that must end a stalled client's stream
 * (overflow, revoke, shutdown) cannot reach a generator parked there. So the
 * generator never lets nice-grpc park: `pushStreamInterceptor` counts the
 * writes the HTTP/2 stream has not accepted, and the generator waits for them
 * itself, racing that wait against the hub's end signal and the client's
 * cancel. Events the transport has not accepted stay in the hub's bounded
 * queue, where they overflow. The interceptor also gives the hub a way to reset
 * a stream whose client never takes its terminal status.
 *
 * The interceptor hands each call's transport to the method through the
 * call's metadata: nice-grpc builds the method's `CallContext` from grpc-js's
 * metadata, the only thing an interceptor can pass on (as strings).
 */
import { constants as http2Constants } from "node:http2";
import {
  ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
} from "@grpc/grpc-js";
import type { CallContext } from "nice-grpc";
import type { SignedEvent, SubscribeEventsInput } from "../../handlers/subscribe-events.js";
import { EdgeGatewayServiceDefinition } from "../../proto/gen/edgegateway/v1/edge_gateway.js";
import { type PushSessionDeps, type PushTransport, runPushSession } from "../push/push-session.js";
import { http2StreamOf, type ResettableHttp2Stream } from "./grpc-js-http2-stream.js";
import { toServerError } from "./server.js";

/** The HTTP/2 path of SubscribeEvents, the only method `pushStreamInterceptor` acts on. */
export const SUBSCRIBE_EVENTS_PATH = `/${EdgeGatewayServiceDefinition.fullName}/${EdgeGatewayServiceDefinition.methods.subscribeEvents.name}`;

/**
 * The transport side of one SubscribeEvents call over an HTTP/2 stream, whether
 * grpc-js or the lane (`runtime/grpc/push-lane.ts`) serves it: counts the
 * messages the stream has not accepted yet, so the push session takes the next
 * event only once flow control let the last ones through.
 */
export class GrpcPushTransport implements PushTransport {
  private unaccepted = 0;
  private wake: (() => void) | undefined;
  private isClosed = false;
  private markClosed!: () => void;
  /** Settles once the call is over: status sent, stream reset or client gone. */
  readonly closed = new Promise<void>((resolve) => {
    this.markClosed = resolve;
  });

  constructor(private readonly http2Stream: ResettableHttp2Stream | undefined) {}

  /** A message was handed to the HTTP/2 stream. */
  writeStarted(): void {
    this.unaccepted++;
  }

  /** The HTTP/2 stream accepted a message (flow control let it through). */
  writeAccepted(): void {
    this.unaccepted--;
    if (this.unaccepted === 0) this.wake?.();
  }

  /** The call is over (grpc-js reported it, or the stream closed). */
  close(): void {
    this.isClosed = true;
    this.markClosed();
    this.wake?.();
  }

  /**
   * `undefined` once every message written so far was accepted, the call is
   * over, or one of `signals` aborted; else a promise that resolves then. The
   * signals must be the ones given to {@link watch}: listeners are
   * registered once per call, not once per event.
   */
  whenAccepted(signals: readonly AbortSignal[]): Promise<void> | undefined {
    const done = () =>
      this.unaccepted === 0 || this.isClosed || signals.some((signal) => signal.aborted);
    if (done()) return undefined;
    return new Promise((resolve) => {
      this.wake = () => {
        if (!done()) return;
        this.wake = undefined;
        resolve();
      };
    });
  }

  /** Wakes a pending {@link whenAccepted} when any of `signals` aborts; returns the unwatch. */
  watch(signals: readonly AbortSignal[]): () => void {
    const onAbort = () => this.wake?.();
    for (const signal of signals) signal.addEventListener("abort", onAbort, { once: true });
    return () => {
      for (const signal of signals) signal.removeEventListener("abort", onAbort);
    };
  }

  /** Sends RST_STREAM (CANCEL): the client sees the call cancelled and the call is freed. */
  reset(): void {
    if (this.isClosed || this.http2Stream === undefined || this.http2Stream.closed) return;
    this.http2Stream.close(http2Constants.NGHTTP2_CANCEL);
  }
}

/** Metadata key naming a SubscribeEvents call's transport, from the interceptor to the method. */
const TRANSPORT_METADATA_KEY = "x-edge-gateway-push-transport";

/** Transports of calls whose method has not claimed them yet, by the id in their metadata. */
const unclaimed = new Map<string, GrpcPushTransport>();
let lastTransportId = 0;

/** A SubscribeEvents call seen from the transport: counts unaccepted writes, notices the end. */
class PushStreamCall extends ServerInterceptingCall {
  private readonly transport: GrpcPushTransport;

  constructor(next: ServerInterceptingCallInterface) {
    const transport = new GrpcPushTransport(http2StreamOf(next));
    const id = String(++lastTransportId);
    super(next, {
      start: (startNext) =>
        startNext({
          onReceiveMetadata: (metadata, forward) => {
            // Only this interceptor names a transport; a client-sent value is dropped.
            metadata.remove(TRANSPORT_METADATA_KEY);
            metadata.set(TRANSPORT_METADATA_KEY, id);
            unclaimed.set(id, transport);
            forward(metadata);
          },
          // grpc-js reports every call's end here, whether or not the method ran.
          onCancel: () => {
            unclaimed.delete(id);
            transport.close();
          },
        }),
    });
    this.transport = transport;
  }

  override sendMessage(message: unknown, callback: () => void): void {
    this.transport.writeStarted();
    super.sendMessage(message, () => {
      this.transport.writeAccepted();
      callback();
    });
  }
}

/**
 * The transport `pushStreamInterceptor` made for this call: `"none"` when the
 * interceptor is not installed, `"over"` when the call ended before the method
 * claimed it.
 */
function claimTransport(ctx: CallContext): GrpcPushTransport | "none" | "over" {
  const id = ctx.metadata.get(TRANSPORT_METADATA_KEY);
  if (id === undefined) return "none";
  const transport = unclaimed.get(id);
  unclaimed.delete(id);
  return transport ?? "over";
}

/**
 * The grpc-js server interceptor SubscribeEvents needs, in the server's
 * `interceptors` option (anywhere in the list; other methods pass through).
 * Middleware must hand the call's metadata on to the method (as nice-grpc
 * middleware does with `context`): the method finds its transport through it.
 *
 * @example
 * const server = createGrpcServer({ maxCommandPayloadBytes, interceptors: [pushStreamInterceptor] });
 */
export const pushStreamInterceptor: ServerInterceptor = (method, call) =>
  // Other calls pass unwrapped. grpc-js chains interceptors through the call
  // interface only; its ServerInterceptor type names the class.
  method.path === SUBSCRIBE_EVENTS_PATH
    ? new PushStreamCall(call)
    : (call as ServerInterceptingCall);

/** What the SubscribeEvents method needs: a push session's dependencies. */
export type SubscribeEventsMethodDeps = PushSessionDeps;

/**
 * Creates the SubscribeEvents implementation for nice-grpc
 * (`EdgeGatewayServiceImplementation.subscribeEvents`): one push session
 * (`runPushSession`: authenticate, register, re-check, bootstrap, replay, live)
 * over this call's transport. Errors leave as nice-grpc `ServerError`s. Needs
 * `pushStreamInterceptor` on the server to stay abortable while a client does
 * not read.
 *
 * @example
 * // The push session deps as runtime/host/assemble.ts builds them when every
 * // node reads the ingress: `clientEvents` is the client-events StreamReader,
 * // whose cursor is read as each stream registers.
 * const pushSession = {
 *   authenticate: createSubscribeEventsAuthenticator({ sessions, replay, clock, maxClockSkewMs }),
 *   sessions, hub, signer, clock, logger, resume,
 *   delivery: { cursor: () => clientEvents.cursor() },
 * };
 * const subscribeEvents = createSubscribeEventsMethod(pushSession);
 * // The manifest (runtime/grpc/methods.ts) makes it, and the lane that serves
 * // it while no tracer provider is registered; runtime/host/components.ts mounts both.
 * const server = createGrpcServer({ maxCommandPayloadBytes, interceptors: [pushStreamInterceptor] });
 * const gated = server.with(createGatewayMiddleware({ logger, metrics, isShuttingDown }));
 * for (const service of gatewayServices({ executeCommand, pushSession, health, logger })) {
 *   (service.gated ? gated : server).add(service.definition, service.implementation);
 * }
 */
export function createSubscribeEventsMethod(deps: SubscribeEventsMethodDeps) {
  const { logger } = deps;
  let warnedNoInterceptor = false;

  return async function* subscribeEvents(
    request: SubscribeEventsInput,
    ctx: CallContext,
  ): AsyncGenerator<SignedEvent, void, undefined> {
    const claimed = claimTransport(ctx);
    if (claimed === "none" && !warnedNoInterceptor) {
      warnedNoInterceptor = true;
      logger.warn(
        "pushStreamInterceptor is not installed: a stream whose client stopped reading ends only when it drains or cancels",
      );
    }
    // A call already over has its signal aborted: it ends without a transport.
    const transport = typeof claimed === "object" ? claimed : undefined;
    try {
      yield* runPushSession(deps, request, ctx.signal, transport);
    } catch (error) {
      throw toServerError(error, logger);
    }
  };
}

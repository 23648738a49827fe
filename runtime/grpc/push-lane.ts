/**
 * SubscribeEvents (contract §7) served straight on its HTTP/2 stream, in front
 * of grpc-js (`runtime/grpc/http2-lane.ts`): a connected device costs no
 * grpc-js call object or metadata, no nice-grpc CallContext, AbortController
 * or interceptor chain, and a delivered event no per-stream serialization:
 * every stream of a user writes the event's one frame (`eventFrame`).
 * Clients see what grpc-js and nice-grpc send: the same headers, messages,
 * statuses and messages of statuses, and the gateway middleware's behaviour
 * (shutdown gate, undecodable requests, error table, metrics).
 *
 * While a tracer provider is registered, and for requests the lane does not
 * take as they are (`takenAsIs`), grpc-js serves the call through nice-grpc
 * (`createSubscribeEventsMethod`), where the tracing middleware makes its span.
 */
import { constants, type ServerHttp2Stream } from "node:http2";
import { status } from "@grpc/grpc-js";
import type { SubscribeEventsInput } from "../../handlers/subscribe-events.js";
import { type PushSessionDeps, runPushSession } from "../push/push-session.js";
import { eventFrame } from "./grpc-frames.js";
import type { StreamLane } from "./http2-lane.js";
import { LaneCall, type LaneMethod, type LaneOptions, takenAsIs } from "./lane-call.js";
import { SafeEdgeGatewayServiceDefinition } from "./server.js";
import { GrpcPushTransport, SUBSCRIBE_EVENTS_PATH } from "./subscribe-events.js";
import { tracerProviderRegistered } from "./tracing.js";

/** What every SubscribeEvents call on the lane shares. */
interface Served extends LaneMethod {
  readonly deps: PushSessionDeps;
}
const { decode } = SafeEdgeGatewayServiceDefinition.methods.subscribeEvents.requestType;

/**
 * A lane (`addStreamLane`) that serves SubscribeEvents with push sessions
 * (`runPushSession`) over `deps`; other calls, every call while a tracer
 * provider is registered, and requests it does not take as they are go to
 * grpc-js untouched.
 */
export function createPushLane(deps: PushSessionDeps, options: LaneOptions): StreamLane {
  const served: Served = {
    ...options,
    deps,
    durationLabels: { method: "SubscribeEvents" },
    requestLabels: new Map(),
  };
  return (stream, headers) => {
    if (headers[constants.HTTP2_HEADER_PATH] !== SUBSCRIBE_EVENTS_PATH) return false;
    if (tracerProviderRegistered()) return false;
    const timeoutMs = takenAsIs(headers);
    if (timeoutMs === false) return false;
    new PushLaneCall(served, stream, timeoutMs).start();
    return true;
  };
}

/**
 * One SubscribeEvents call on its HTTP/2 stream: the push session's events as
 * they come, then its ending as the status nice-grpc would send.
 */
class PushLaneCall extends LaneCall {
  private readonly transport: GrpcPushTransport;
  /** One write callback per call, not one per event. */
  private readonly written: (error?: Error | null) => void;

  constructor(
    private readonly served: Served,
    stream: ServerHttp2Stream,
    timeoutMs: number | undefined,
  ) {
    super({
      stream,
      path: SUBSCRIBE_EVENTS_PATH,
      maxReceiveMessageBytes: served.maxReceiveMessageBytes,
      timeoutMs,
    });
    const transport = new GrpcPushTransport(stream);
    this.transport = transport;
    this.written = (error) => {
      // A failed write ends in the stream's 'close', which ends the call.
      if (error == null) transport.writeAccepted();
    };
  }

  protected run(request: Buffer): void {
    void this.serve(decode(request));
  }

  // The session ends once the stream closes (`onClose`); nothing else to stop.
  protected onCancel(): void {}

  protected override onClose(): void {
    this.transport.close();
  }

  /** The gateway middleware's steps around the push session, then the status. */
  private async serve(request: unknown): Promise<void> {
    const failure = await this.gated(this.served, request, async (valid) => {
      // No call signal: a lane call ends when its stream closes, which the
      // session sees through its transport's `closed`.
      const events = runPushSession(
        this.served.deps,
        valid as SubscribeEventsInput,
        undefined,
        this.transport,
      );
      for await (const event of events) {
        if (this.write(eventFrame(event), this.written)) this.transport.writeStarted();
      }
    });
    if (failure === undefined) this.sendStatus(status.OK, "OK");
    else this.sendStatus(failure.code, failure.details);
  }
}

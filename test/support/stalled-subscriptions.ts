/**
 * SubscribeEvents clients that stop reading, so HTTP/2 flow control holds the
 * gateway's writes: one pauses a grpc-js stream after the bootstrap event, one
 * never opens its stream window.
 */
import * as http2 from "node:http2";
import * as grpc from "@grpc/grpc-js";
import {
  SubscribeEventsRequest,
  SubscribeEventsResponse,
} from "../../proto/gen/edgegateway/v1/edge_gateway.js";
import { SUBSCRIBE_EVENTS_PATH } from "../../runtime/grpc/subscribe-events.js";
import type { Cleanup } from "./cleanup.js";
import { grpcFrame, grpcRequestHeaders } from "./grpc-wire.js";

/** A gRPC status as it arrived: its numeric code and its message. */
export interface GrpcStatus {
  readonly code: number;
  readonly details: string;
}

const RawClient = grpc.makeGenericClientConstructor({}, "EdgeGatewayService");

/**
 * A plain grpc-js subscription that stops reading right after the bootstrap
 * event, on a connection of its own: HTTP/2 flow control then stops the
 * gateway's writes once the client's window is full (a paused stream also
 * holds its connection's window).
 */
export function pausedSubscription(
  address: string,
  request: SubscribeEventsRequest,
  cleanup: Cleanup,
) {
  const client = new RawClient(address, grpc.credentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
  });
  const call = client.makeServerStreamRequest(
    SUBSCRIBE_EVENTS_PATH,
    (message: SubscribeEventsRequest) =>
      Buffer.from(SubscribeEventsRequest.encode(message).finish()),
    (bytes: Buffer) => SubscribeEventsResponse.decode(bytes),
    request,
  );
  cleanup.defer(() => {
    call.cancel();
    client.close();
  });
  const events: SubscribeEventsResponse[] = [];
  let bootstrapped: (event: SubscribeEventsResponse) => void = () => {};
  const bootstrap = new Promise<SubscribeEventsResponse>((resolve) => {
    bootstrapped = resolve;
  });
  call.on("data", (event: SubscribeEventsResponse) => {
    events.push(event);
    if (events.length === 1) {
      call.pause();
      bootstrapped(event);
    }
  });
  call.on("error", () => {
    // The status event carries it.
  });
  const status = new Promise<GrpcStatus>((resolve) =>
    call.on("status", (value: grpc.StatusObject) =>
      resolve({ code: value.code, details: value.details }),
    ),
  );
  return { bootstrap, events, status, resume: () => call.resume() };
}

/** gRPC messages (5-byte prefix: compressed flag, big-endian length) decoded as events. */
function decodeMessages(data: Buffer): SubscribeEventsResponse[] {
  const events: SubscribeEventsResponse[] = [];
  for (let offset = 0; offset + 5 <= data.length; ) {
    const length = data.readUInt32BE(offset + 1);
    events.push(SubscribeEventsResponse.decode(data.subarray(offset + 5, offset + 5 + length)));
    offset += 5 + length;
  }
  return events;
}

/**
 * A subscription over a bare HTTP/2 connection whose stream window starts at
 * zero: the gateway cannot send it one DATA byte (not even the bootstrap
 * event) until `resume()` opens the window, so its transport stays blocked and
 * every published event waits in the stream's queue.
 */
export function blockedSubscription(
  address: string,
  request: SubscribeEventsRequest,
  cleanup: Cleanup,
) {
  const session = http2.connect(`http://${address}`, { settings: { initialWindowSize: 0 } });
  session.on("error", () => {});
  cleanup.defer(() => session.destroy());
  const stream = session.request(
    grpcRequestHeaders(SUBSCRIBE_EVENTS_PATH, { "content-type": "application/grpc+proto" }),
  );
  stream.on("error", () => {});
  stream.end(grpcFrame(SubscribeEventsRequest.encode(request).finish()));

  const chunks: Buffer[] = [];
  stream.on("data", (chunk: Buffer) => chunks.push(chunk));
  let status: GrpcStatus | undefined;
  const readStatus = (headers: http2.IncomingHttpHeaders) => {
    const code = headers["grpc-status"];
    if (code === undefined) return;
    status = {
      code: Number(code),
      details: decodeURIComponent(String(headers["grpc-message"] ?? "")),
    };
  };
  stream.on("trailers", readStatus);
  // Response headers leave with the first message, outside flow control: once
  // they arrive, the bootstrap event was written and waits behind the window.
  const responded = new Promise<void>((resolve) => {
    stream.on("response", (headers) => {
      readStatus(headers);
      resolve();
    });
  });
  const closed = new Promise<void>((resolve) => stream.on("close", resolve));
  return {
    responded,
    resume: () => session.settings({ initialWindowSize: 65_535 }),
    /** Resolves once the stream closed: its gRPC status if one arrived, its RST_STREAM code, the events. */
    async end() {
      await closed;
      return { status, rstCode: stream.rstCode, events: decodeMessages(Buffer.concat(chunks)) };
    },
  };
}

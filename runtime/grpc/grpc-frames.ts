/**
 * gRPC frames, and each signed event's frame made once. The hub hands the
 * same signed event object to every stream of a user; encoding it per stream
 * had protobuf encoding and its buffers at about a quarter of a node's busy
 * CPU in a profile of one event to 50 streams. So an event is encoded and
 * framed on first use and the bytes kept with the object as long as it
 * lives, whichever path writes it: the lane writes the frame itself, grpc-js
 * (while tracing) copies the message bytes into a frame of its own.
 */
import type { BinaryWriter } from "@bufbuild/protobuf/wire";
import type { SignedEvent } from "../../handlers/subscribe-events.js";
import { SubscribeEventsResponse } from "../../proto/gen/edgegateway/v1/edge_gateway.js";

/** One gRPC frame of an uncompressed message: the 5-byte prefix, then `bytes`. */
export function frameOf(bytes: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + bytes.length);
  frame[0] = 0;
  frame.writeUInt32BE(bytes.length, 1);
  frame.set(bytes, 5);
  return frame;
}

/**
 * The bytes `encode` wrote into `writer`, a writer kept for many messages:
 * it is left empty for the next one also when `encode` throws (`finish()`
 * resets it).
 */
export function encodeWith(writer: BinaryWriter, encode: () => void): Uint8Array {
  try {
    encode();
  } catch (error) {
    writer.finish();
    throw error;
  }
  return writer.finish();
}

const frames = new WeakMap<SignedEvent, Buffer>();

/** `event` as a SubscribeEvents response frame, the same Buffer for every stream. */
export function eventFrame(event: SignedEvent): Buffer {
  let frame = frames.get(event);
  if (frame === undefined) {
    frame = frameOf(SubscribeEventsResponse.encode(event).finish());
    frames.set(event, frame);
  }
  return frame;
}

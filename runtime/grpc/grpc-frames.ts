/**
 * gRPC frames, and each signed event's frame made once. The hub hands the
 * same signed event object to every stream of a user; encoding it per stream
 * had protobuf encoding and its buffers at about a quarter of a node's busy
 * CPU in a profile of one event to 50 streams. So an event is encoded and
 * framed on first use and the bytes kept with the object as long as it
 * lives, whichever path writes it: the lane writes the frame itself, grpc-js
 * (while tracing) copies the message bytes into a frame of its own.
 */
import { BinaryWriter } from "@bufbuild/protobuf/wire";
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

/** What a `BinaryWriter` keeps while it writes (private to it: read with care, see `frameWith`). */
interface WriterState {
  buffer?: unknown;
  pos?: unknown;
  stackPos?: unknown;
}

/**
 * `encode`'s message as a gRPC frame, written through `writer`, a writer kept
 * for many messages: the bytes go from its buffer straight into the frame,
 * without the copy `finish()` makes (an ArrayBuffer per call, which every
 * young-generation collection then sweeps). The writer is left empty for the
 * next message, also when `encode` throws. If the writer's internals are not
 * the ones this reads (another @bufbuild/protobuf release), it frames what
 * `finish()` returns instead; `test/grpc-frames.test.ts` checks the bytes.
 */
export function frameWith(writer: BinaryWriter, encode: () => void): Buffer {
  try {
    encode();
  } catch (error) {
    writer.finish();
    throw error;
  }
  const state = writer as unknown as WriterState;
  const { buffer, pos, stackPos } = state;
  if (
    !(buffer instanceof Uint8Array) ||
    typeof pos !== "number" ||
    pos > buffer.length ||
    !Array.isArray(stackPos) ||
    stackPos.length !== 0
  ) {
    return frameOf(writer.finish());
  }
  const frame = frameOf(buffer.subarray(0, pos));
  state.pos = 0;
  return frame;
}

const frames = new WeakMap<SignedEvent, Buffer>();
/** The writer every event is encoded with (see `frameWith`). */
const eventWriter = new BinaryWriter();

/** `event` as a SubscribeEvents response frame, the same Buffer for every stream. */
export function eventFrame(event: SignedEvent): Buffer {
  let frame = frames.get(event);
  if (frame === undefined) {
    frame = frameWith(eventWriter, () => SubscribeEventsResponse.encode(event, eventWriter));
    frames.set(event, frame);
  }
  return frame;
}

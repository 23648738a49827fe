/**
 * gRPC framing and the reused response writer: a message framed through a
 * shared writer comes out exactly as a writer of its own would frame it,
 * one message after another, and right after an encode that failed halfway.
 */
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { expect, it } from "vitest";
import type { SignedEvent } from "../handlers/subscribe-events.js";
import {
  ExecuteCommandResponse,
  SubscribeEventsResponse,
} from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { eventFrame, frameOf, frameWith } from "../runtime/grpc/grpc-frames.js";

const response: ExecuteCommandResponse = {
  protocolVersion: 1,
  requestId: "req-1",
  resultCode: "ok",
  payload: Buffer.alloc(300, 7),
  timestampMs: 1_700_000_000_000,
  keyId: "0123456789abcdef",
  signature: Buffer.alloc(64, 1),
};

/** The frame a writer of its own gives. */
const ownFrame = (message: ExecuteCommandResponse) =>
  frameOf(ExecuteCommandResponse.encode(message).finish());

it("frames a message with a 5-byte uncompressed length prefix", () => {
  const frame = frameOf(Buffer.from("abc"));
  expect([...frame]).toEqual([0, 0, 0, 0, 3, 97, 98, 99]);
});

it("frames through a shared writer the bytes a writer of its own gives", () => {
  const writer = new BinaryWriter();
  const first = frameWith(writer, () => ExecuteCommandResponse.encode(response, writer));
  const firstBytes = Buffer.from(first);
  expect(firstBytes).toEqual(ownFrame(response));
  // A shorter message after a longer one: only its own bytes, from the start.
  const shorter = { ...response, requestId: "r", payload: Buffer.alloc(3, 9) };
  const second = frameWith(writer, () => ExecuteCommandResponse.encode(shorter, writer));
  expect(second).toEqual(ownFrame(shorter));
  // The first frame is a copy: framing the next message did not change it.
  expect(Buffer.from(first)).toEqual(firstBytes);
  // A longer one that makes the writer grow.
  const longer = { ...response, payload: Buffer.alloc(5000, 3) };
  expect(frameWith(writer, () => ExecuteCommandResponse.encode(longer, writer))).toEqual(
    ownFrame(longer),
  );
});

it("leaves the shared writer empty when an encode throws halfway", () => {
  const writer = new BinaryWriter();
  expect(() =>
    frameWith(writer, () => {
      writer.uint32(10).string("half-written");
      throw new Error("bad response");
    }),
  ).toThrow("bad response");
  const next = frameWith(writer, () => ExecuteCommandResponse.encode(response, writer));
  expect(next).toEqual(ownFrame(response));
});

it("frames what finish() returns from a writer without the expected internals", () => {
  // Earlier @bufbuild/protobuf writers kept `chunks` and `buf`, not `buffer` and `pos`.
  const bytes = ExecuteCommandResponse.encode(response).finish();
  const older = { chunks: [bytes], buf: [], finish: () => bytes } as unknown as BinaryWriter;
  expect(frameWith(older, () => {})).toEqual(ownFrame(response));
});

it("frames each event once, with the bytes of its own encoding, one event after another", () => {
  const event = (eventId: string, payloadBytes: number): SignedEvent => ({
    eventId,
    eventType: "demo.event",
    timestampMs: 1_700_000_000_000,
    payload: Buffer.alloc(payloadBytes, 5),
    requestId: "req-1",
    keyId: "0123456789abcdef",
    signature: Buffer.alloc(64, 2),
  });
  const own = (e: SignedEvent) => frameOf(SubscribeEventsResponse.encode(e).finish());
  const long = event("1700000000000-0", 2000);
  const short = event("1700000000000-1", 10);
  const longFrame = eventFrame(long);
  expect(longFrame).toEqual(own(long));
  expect(eventFrame(short)).toEqual(own(short));
  // The same event gives the same Buffer, unchanged by the events framed since.
  expect(eventFrame(long)).toBe(longFrame);
  expect(longFrame).toEqual(own(long));
});

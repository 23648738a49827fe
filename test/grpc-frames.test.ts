/**
 * gRPC framing and the reused response writer: a message encoded into a
 * shared writer comes out exactly as with a writer of its own, also right
 * after an encode that failed halfway.
 */
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { expect, it } from "vitest";
import { ExecuteCommandResponse } from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { encodeWith, frameOf } from "../runtime/grpc/grpc-frames.js";

const response: ExecuteCommandResponse = {
  protocolVersion: 1,
  requestId: "req-1",
  resultCode: "ok",
  payload: Buffer.alloc(300, 7),
  timestampMs: 1_700_000_000_000,
  keyId: "0123456789abcdef",
  signature: Buffer.alloc(64, 1),
};

it("frames a message with a 5-byte uncompressed length prefix", () => {
  const frame = frameOf(Buffer.from("abc"));
  expect([...frame]).toEqual([0, 0, 0, 0, 3, 97, 98, 99]);
});

it("encodes with a shared writer the same bytes as with a writer of its own", () => {
  const own = ExecuteCommandResponse.encode(response).finish();
  const writer = new BinaryWriter();
  const first = encodeWith(writer, () => ExecuteCommandResponse.encode(response, writer));
  const firstBytes = Buffer.from(first);
  expect(firstBytes).toEqual(Buffer.from(own));
  const second = encodeWith(writer, () =>
    ExecuteCommandResponse.encode({ ...response, requestId: "req-2" }, writer),
  );
  // The first result is a copy: encoding the next message does not change it.
  expect(Buffer.from(first)).toEqual(firstBytes);
  expect(ExecuteCommandResponse.decode(second).requestId).toBe("req-2");
});

it("leaves the shared writer empty when an encode throws halfway", () => {
  const writer = new BinaryWriter();
  expect(() =>
    encodeWith(writer, () => {
      writer.uint32(10).string("half-written");
      throw new Error("bad response");
    }),
  ).toThrow("bad response");
  const next = encodeWith(writer, () => ExecuteCommandResponse.encode(response, writer));
  expect(Buffer.from(next)).toEqual(Buffer.from(ExecuteCommandResponse.encode(response).finish()));
});

/**
 * Raw gRPC over `node:http2` for tests that send requests byte by byte:
 * a request's headers and a message's frame, built here independently of
 * the gateway's own framing.
 */

/** One gRPC frame: the compressed flag, the 4-byte length, then `message`. */
export function grpcFrame(message: Uint8Array, compressed = false): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out[0] = compressed ? 1 : 0;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

/** The headers of a gRPC call to `path`, with `extra` added or overriding them. */
export function grpcRequestHeaders(
  path: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    ":method": "POST",
    ":path": path,
    "content-type": "application/grpc",
    te: "trailers",
    ...extra,
  };
}

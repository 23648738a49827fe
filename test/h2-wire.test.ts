/**
 * The benches' wire-level gRPC client (`bench/h2-wire.ts`): its HPACK
 * decoding against RFC 7541's examples, and its calls against a real
 * `node:http2` server on loopback, where it must read every status right
 * and keep flow control going both ways.
 */
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type CallDone, decodeHeaderBlock, huffmanDecode, WireClient } from "../bench/h2-wire.js";

const PATH = "/test.Echo/Call";
let server: http2.Http2Server;
let address: string;
const seen: http2.IncomingHttpHeaders[] = [];

/** What the server does for a request body starting with each byte. */
const Reply = {
  OK: 0,
  TRAILERS_ONLY: 1,
  RESET: 2,
  HTTP_500: 3,
  NO_TRAILERS: 4,
  BIG: 5,
  HANG: 6,
  STREAM: 7,
} as const;

/** A server stream's messages: sizes from 0 to 40 000 bytes, 25 MB in all. */
const STREAMED = Array.from({ length: 1250 }, (_, index) => (index * 7919) % 40_001);
/** The server's open sessions, gathered as they connect. */
const openSessions = new Set<http2.ServerHttp2Session>();

beforeAll(async () => {
  server = http2.createServer();
  server.on("session", (session) => {
    openSessions.add(session);
    session.on("close", () => openSessions.delete(session));
  });
  server.on("stream", (stream, headers) => {
    seen.push(headers);
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => {
      const body = Buffer.concat(chunks);
      switch (body[5]) {
        case Reply.HANG:
          return;
        case Reply.TRAILERS_ONLY:
          stream.respond(
            { ":status": 200, "content-type": "application/grpc", "grpc-status": "16" },
            { endStream: true },
          );
          return;
        case Reply.RESET:
          stream.close(http2.constants.NGHTTP2_CANCEL);
          return;
        case Reply.STREAM:
          stream.respond(
            { ":status": 200, "content-type": "application/grpc" },
            { waitForTrailers: true },
          );
          stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
          // One write per message: node:http2 packs them into DATA frames as
          // they fit, so messages share frames and span them.
          for (const [index, size] of STREAMED.entries()) {
            const message = Buffer.alloc(5 + size, index % 251);
            message[0] = 0;
            message.writeUInt32BE(size, 1);
            stream.write(message);
          }
          stream.end();
          return;
        case Reply.NO_TRAILERS:
          stream.respond({ ":status": 200, "content-type": "application/grpc" });
          stream.end(body);
          return;
        default: {
          const status = body[5] === Reply.HTTP_500 ? 500 : 200;
          stream.respond(
            { ":status": status, "content-type": "application/grpc" },
            { waitForTrailers: true },
          );
          stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
          stream.end(body[5] === Reply.BIG ? Buffer.alloc(100_000, 7) : body);
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

/** A gRPC frame whose message starts with `reply`, `size` bytes in all. */
function body(reply: number, size = 64): Buffer {
  const out = Buffer.alloc(size, 1);
  out[0] = 0;
  out.writeUInt32BE(size - 5, 1);
  out[5] = reply;
  return out;
}

function call(client: WireClient, request: Buffer, keepData = false) {
  return new Promise<{ ok: boolean; data?: Buffer }>((resolve) => {
    const done: CallDone = (ok, data) => resolve({ ok, data });
    client.call(request, done, keepData);
  });
}

it("decodes RFC 7541's Huffman examples", () => {
  const cases: [string, string][] = [
    ["f1e3c2e5f23a6ba0ab90f4ff", "www.example.com"],
    ["a8eb10649cbf", "no-cache"],
    ["25a849e95ba97d7f", "custom-key"],
    ["25a849e95bb8e8b4bf", "custom-value"],
    ["6402", "302"],
    ["aec3771a4b", "private"],
    ["d07abe941054d444a8200595040b8166e082a62d1bff", "Mon, 21 Oct 2013 20:13:21 GMT"],
  ];
  for (const [hex, text] of cases) expect(huffmanDecode(Buffer.from(hex, "hex"))).toBe(text);
  // Padding longer than 7 bits, or not all ones, is an error.
  expect(() => huffmanDecode(Buffer.from("f1e3c2e5f23a6ba0ab90f4ffff", "hex"))).toThrow(/padding/);
  expect(() => huffmanDecode(Buffer.from("00", "hex"))).toThrow(/padding/);
});

it("decodes RFC 7541's first request block (C.4.1) and refuses a dynamic table", () => {
  const block = Buffer.from("828684418cf1e3c2e5f23a6ba0ab90f4ff", "hex");
  expect(decodeHeaderBlock(block)).toEqual([
    [":method", "GET"],
    [":scheme", "http"],
    [":path", "/"],
    [":authority", "www.example.com"],
  ]);
  // C.4.2 refers to the entry C.4.1 added (index 62): not allowed at table size 0.
  expect(() => decodeHeaderBlock(Buffer.from("828684be58", "hex"))).toThrow(/no table entry 62/);
  expect(() => decodeHeaderBlock(Buffer.from("3f", "hex"))).toThrow(/truncated integer/);
});

it("sends the gRPC request headers and reads each way a call can end", async () => {
  const client = await WireClient.connect(address, PATH, 1);
  try {
    const ok = await call(client, body(Reply.OK), true);
    expect(ok.ok).toBe(true);
    expect(ok.data).toEqual(body(Reply.OK));
    expect(seen.at(-1)).toMatchObject({
      ":method": "POST",
      ":scheme": "http",
      ":path": PATH,
      ":authority": address,
      "content-type": "application/grpc",
      te: "trailers",
    });
    expect((await call(client, body(Reply.TRAILERS_ONLY))).ok).toBe(false);
    expect((await call(client, body(Reply.RESET))).ok).toBe(false);
    expect((await call(client, body(Reply.HTTP_500))).ok).toBe(false);
    expect((await call(client, body(Reply.NO_TRAILERS))).ok).toBe(false);
    // The connection still serves after every one of those.
    expect((await call(client, body(Reply.OK))).ok).toBe(true);
  } finally {
    client.close();
  }
});

it("keeps both flow-control windows moving under many concurrent calls", async () => {
  const client = await WireClient.connect(address, PATH, 2);
  try {
    // 400 × 100 kB responses pass the client's 16 MiB connection window twice over;
    // 400 × 10 kB requests pass the server's 64 KiB connection window many times.
    const big = Array.from({ length: 400 }, () => call(client, body(Reply.BIG, 10_000), true));
    const results = await Promise.all(big);
    expect(results.every((r) => r.ok && r.data?.length === 100_000)).toBe(true);
  } finally {
    client.close();
  }
});

it("hands over a server stream's messages, whole and in order, past the stream's window", async () => {
  const client = await WireClient.connect(address, PATH, 1);
  try {
    const received: { size: number; fill: number | undefined; same: boolean }[] = [];
    const ok = await new Promise<boolean>((resolve) => {
      client.call(
        body(Reply.STREAM),
        (done) => resolve(done),
        false,
        (message) => {
          const fill = message[0];
          received.push({ size: message.length, fill, same: message.every((b) => b === fill) });
        },
      );
    });
    expect(ok).toBe(true);
    expect(received.map((m) => m.size)).toEqual(STREAMED);
    for (const [index, message] of received.entries()) {
      if (message.size > 0) expect(message.fill).toBe(index % 251);
      expect(message.same).toBe(true);
    }
  } finally {
    client.close();
  }
});

it("fails the calls of a connection the server closes", async () => {
  const client = await WireClient.connect(address, PATH, 1);
  const open = call(client, body(Reply.HANG));
  // The server never answers; it closes every session, and the open call fails.
  for (const session of openSessions) session.destroy();
  expect((await open).ok).toBe(false);
  expect((await call(client, body(Reply.OK))).ok).toBe(false);
  client.close();
});

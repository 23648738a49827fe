/**
 * A gRPC client that speaks HTTP/2 frames on a plain TCP socket, for load
 * generation: it costs a small fraction of `node:http2`'s client per call and
 * allocates little, so the server under test, not the client, sets the pace
 * and the client's own garbage collection does not show up as server latency.
 *
 * It does only what a unary or server-streaming gRPC call over cleartext
 * HTTP/2 needs: the connection preface and SETTINGS (no server push, a header
 * table of size 0, large receive windows), one HEADERS + DATA(END_STREAM) per
 * call, flow control both ways, PING and SETTINGS acknowledgements,
 * RST_STREAM and GOAWAY. A server stream's messages are taken out of its DATA
 * frames as they arrive (a message may span frames, a frame may hold many).
 * Response header blocks are decoded with HPACK (static table and Huffman;
 * the header table of size 0 means no dynamic table), so every call's
 * `:status` and `grpc-status` are read, not assumed.
 */
import { connect, type Socket } from "node:net";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const FrameType = {
  DATA: 0,
  HEADERS: 1,
  RST_STREAM: 3,
  SETTINGS: 4,
  PUSH_PROMISE: 5,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
} as const;
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;
const SETTINGS_HEADER_TABLE_SIZE = 0x1;
const SETTINGS_ENABLE_PUSH = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
/** RFC 9113's initial flow-control window, for each stream and the connection. */
const DEFAULT_WINDOW = 65_535;
/** What this client lets the server send before it acknowledges: per stream and per connection. */
const RECEIVE_WINDOW = 1 << 24;

/** RFC 7541 Appendix A. */
const STATIC_TABLE: readonly (readonly [string, string])[] = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ...[
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "accept",
    "access-control-allow-origin",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "refresh",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
  ].map((name): [string, string] => [name, name === "accept-encoding" ? "gzip, deflate" : ""]),
];

/**
 * RFC 7541 Appendix B as code lengths by symbol (256 is EOS). The code is
 * canonical: codes of one length are consecutive, ordered by symbol, and
 * shorter lengths come first, so the lengths alone determine every code.
 */
const HUFFMAN_LENGTHS = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
  28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5,
  6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
  7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6,
  7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23,
  23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20, 22,
  22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22,
  23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27,
  27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25,
  24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];
const EOS = 256;

/** Per code length: the first code, how many codes, and where they start in `symbols`. */
const huffman = (() => {
  const symbols = [...HUFFMAN_LENGTHS.keys()].sort(
    (a, b) => HUFFMAN_LENGTHS[a]! - HUFFMAN_LENGTHS[b]! || a - b,
  );
  const firstCode = new Int32Array(31);
  const firstIndex = new Int32Array(31);
  const count = new Int32Array(31);
  let code = 0;
  let previousLength = HUFFMAN_LENGTHS[symbols[0]!]!;
  symbols.forEach((symbol, index) => {
    const length = HUFFMAN_LENGTHS[symbol]!;
    code <<= length - previousLength;
    previousLength = length;
    if (count[length] === 0) {
      firstCode[length] = code;
      firstIndex[length] = index;
    }
    count[length]!++;
    code++;
  });
  return { symbols, firstCode, firstIndex, count };
})();

/** The Huffman-coded string `bytes` (RFC 7541 §5.2), padding checked. */
export function huffmanDecode(bytes: Uint8Array): string {
  let out = "";
  let code = 0;
  let length = 0;
  for (const byte of bytes) {
    for (let bit = 7; bit >= 0; bit--) {
      code = (code << 1) | ((byte >> bit) & 1);
      length++;
      const offset = code - huffman.firstCode[length]!;
      if (offset >= 0 && offset < huffman.count[length]!) {
        const symbol = huffman.symbols[huffman.firstIndex[length]! + offset]!;
        if (symbol === EOS) throw new Error("HPACK: EOS inside a Huffman string");
        out += String.fromCharCode(symbol);
        code = 0;
        length = 0;
      } else if (length >= 30) {
        throw new Error("HPACK: invalid Huffman code");
      }
    }
  }
  // Padding is the most significant bits of EOS (all ones), shorter than a byte.
  if (length > 7 || code !== (1 << length) - 1) throw new Error("HPACK: invalid Huffman padding");
  return out;
}

/**
 * The headers of one HPACK block, decoded by a peer that allows no dynamic
 * table (SETTINGS_HEADER_TABLE_SIZE 0): an index past the static table, or a
 * table size update above 0, is an error.
 */
export function decodeHeaderBlock(block: Uint8Array): [string, string][] {
  const headers: [string, string][] = [];
  let pos = 0;
  const integer = (prefixBits: number): number => {
    const max = (1 << prefixBits) - 1;
    let value = block[pos++]! & max;
    if (value < max) return value;
    for (let shift = 0; ; shift += 7) {
      if (pos >= block.length || shift > 21) throw new Error("HPACK: truncated integer");
      const byte = block[pos++]!;
      value += (byte & 0x7f) * 2 ** shift;
      if ((byte & 0x80) === 0) return value;
    }
  };
  const string = (): string => {
    const huffmanCoded = (block[pos]! & 0x80) !== 0;
    const length = integer(7);
    if (pos + length > block.length) throw new Error("HPACK: truncated string");
    const bytes = block.subarray(pos, pos + length);
    pos += length;
    return huffmanCoded ? huffmanDecode(bytes) : Buffer.from(bytes).toString("latin1");
  };
  const entry = (index: number): readonly [string, string] => {
    const found = STATIC_TABLE[index - 1];
    if (index === 0 || found === undefined) throw new Error(`HPACK: no table entry ${index}`);
    return found;
  };
  while (pos < block.length) {
    const first = block[pos]!;
    if (first & 0x80) {
      const [name, value] = entry(integer(7));
      headers.push([name, value]);
    } else if ((first & 0xe0) === 0x20) {
      if (integer(5) !== 0) throw new Error("HPACK: table size update above the allowed 0");
    } else {
      // With (01) or without (0000) or never (0001) indexing: all literal here.
      const index = integer(first & 0x40 ? 6 : 4);
      const name = index === 0 ? string() : entry(index)[0];
      headers.push([name, string()]);
    }
  }
  return headers;
}

/** An HPACK integer with a `prefixBits` prefix, the first byte's high bits set to `flags`. */
function encodeInteger(value: number, prefixBits: number, flags: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [flags | value];
  const out = [flags | max];
  let rest = value - max;
  while (rest >= 0x80) {
    out.push((rest & 0x7f) | 0x80);
    rest >>>= 7;
  }
  out.push(rest);
  return out;
}

/** A literal header without indexing; `name` a static table index or a new name. */
function encodeLiteral(name: number | string, value: string): number[] {
  const text = (s: string) => [...encodeInteger(s.length, 7, 0), ...Buffer.from(s, "latin1")];
  return typeof name === "number"
    ? [...encodeInteger(name, 4, 0), ...text(value)]
    : [0, ...text(name), ...text(value)];
}

/** What a response header block says that a unary gRPC call needs. */
interface BlockSummary {
  readonly status: string | undefined;
  readonly grpcStatus: string | undefined;
}

function summarize(headers: readonly [string, string][]): BlockSummary {
  let status: string | undefined;
  let grpcStatus: string | undefined;
  for (const [name, value] of headers) {
    if (name === ":status") status = value;
    else if (name === "grpc-status") grpcStatus = value;
  }
  return { status, grpcStatus };
}

/** Gets true for HTTP 200 with grpc-status 0, and the response's DATA bytes if asked for. */
export type CallDone = (ok: boolean, data?: Buffer) => void;

/** Gets each response message of a server stream (its bytes, without the 5-byte prefix). */
export type OnMessage = (message: Buffer) => void;

interface WireStream {
  readonly done: CallDone;
  readonly chunks: Buffer[] | undefined;
  readonly onMessage: OnMessage | undefined;
  /** A message's bytes received so far, when it spans DATA frames. */
  partial: Buffer | undefined;
  /** DATA bytes received since this stream's last WINDOW_UPDATE. */
  receivedSinceUpdate: number;
  status: string | undefined;
  grpcStatus: string | undefined;
}

function frameHeader(
  out: Buffer,
  offset: number,
  length: number,
  type: number,
  flags: number,
  streamId: number,
): void {
  out.writeUIntBE(length, offset, 3);
  out[offset + 3] = type;
  out[offset + 4] = flags;
  out.writeUInt32BE(streamId, offset + 5);
}

function control(type: number, flags: number, streamId: number, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(9 + payload.length);
  frameHeader(out, 0, payload.length, type, flags, streamId);
  out.set(payload, 9);
  return out;
}

function windowUpdate(streamId: number, increment: number): Buffer {
  const payload = Buffer.allocUnsafe(4);
  payload.writeUInt32BE(increment);
  return control(FrameType.WINDOW_UPDATE, 0, streamId, payload);
}

/** One HTTP/2 connection carrying unary gRPC calls. */
class WireConnection {
  private readonly streams = new Map<number, WireStream>();
  /** Recently seen response header blocks, by their bytes: with no dynamic table they repeat. */
  private readonly blocks = new Map<string, BlockSummary>();
  private nextStreamId = 1;
  /** Connection-level send window; each call's one DATA frame fits a stream's initial window. */
  private sendWindow = DEFAULT_WINDOW;
  private peerStreamWindow = DEFAULT_WINDOW;
  private peerMaxStreams = Number.POSITIVE_INFINITY;
  /** Calls' DATA frames waiting for connection window, in order. */
  private readonly blocked: Buffer[] = [];
  private receivedSinceUpdate = 0;
  private leftover: Buffer | undefined;
  private pendingBlock: { id: number; flags: number; parts: Buffer[] } | undefined;
  private corked = false;
  private closed = false;
  /** Resolves `open`'s promise once the server acknowledged this client's SETTINGS. */
  private onSettingsAcked: (() => void) | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly requestBlock: Buffer,
  ) {}

  /** Connects and resolves once the server has acknowledged this client's SETTINGS. */
  static open(host: string, port: number, path: string): Promise<WireConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port, noDelay: true });
      const requestBlock = Buffer.from([
        0x83, // :method POST
        0x86, // :scheme http
        ...encodeLiteral(4, path), // :path
        ...encodeLiteral(1, `${host}:${port}`), // :authority
        ...encodeLiteral(31, "application/grpc"), // content-type
        ...encodeLiteral("te", "trailers"),
      ]);
      const connection = new WireConnection(socket, requestBlock);
      const settings = Buffer.alloc(18);
      settings.writeUInt16BE(SETTINGS_HEADER_TABLE_SIZE, 0);
      settings.writeUInt32BE(0, 2);
      settings.writeUInt16BE(SETTINGS_ENABLE_PUSH, 6);
      settings.writeUInt32BE(0, 8);
      settings.writeUInt16BE(SETTINGS_INITIAL_WINDOW_SIZE, 12);
      settings.writeUInt32BE(RECEIVE_WINDOW, 14);
      const onError = (error: Error) => reject(error);
      socket.once("error", onError);
      socket.write(
        Buffer.concat([
          PREFACE,
          control(FrameType.SETTINGS, 0, 0, settings),
          windowUpdate(0, RECEIVE_WINDOW - DEFAULT_WINDOW),
        ]),
      );
      connection.onSettingsAcked = () => {
        socket.off("error", onError);
        resolve(connection);
      };
      socket.on("data", (chunk: Buffer) => connection.onData(chunk));
      socket.on("error", () => connection.fail());
      socket.on("close", () => {
        connection.fail();
        // Once `open` resolved, this rejection is a no-op.
        reject(new Error("connection closed before its settings were acknowledged"));
      });
    });
  }

  call(body: Buffer, done: CallDone, keepData: boolean, onMessage?: OnMessage): void {
    if (this.closed || this.streams.size >= this.peerMaxStreams) {
      setImmediate(() => done(false));
      return;
    }
    if (body.length > this.peerStreamWindow || body.length > 16_384) {
      throw new Error(`a ${body.length}-byte request does not fit one DATA frame here`);
    }
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    this.streams.set(id, {
      done,
      chunks: keepData ? [] : undefined,
      onMessage,
      partial: undefined,
      receivedSinceUpdate: 0,
      status: undefined,
      grpcStatus: undefined,
    });
    const block = this.requestBlock;
    const out = Buffer.allocUnsafe(9 + block.length + 9 + body.length);
    frameHeader(out, 0, block.length, FrameType.HEADERS, END_HEADERS, id);
    block.copy(out, 9);
    const dataAt = 9 + block.length;
    frameHeader(out, dataAt, body.length, FrameType.DATA, END_STREAM, id);
    body.copy(out, dataAt + 9);
    if (this.blocked.length === 0 && body.length <= this.sendWindow) {
      this.sendWindow -= body.length;
      this.write(out);
    } else {
      // HEADERS are not flow-controlled, but they must precede their DATA: hold both.
      this.blocked.push(out);
    }
  }

  close(): void {
    if (this.socket.destroyed) return;
    const goaway = Buffer.alloc(8);
    goaway.writeUInt32BE(0, 0);
    this.socket.end(control(FrameType.GOAWAY, 0, 0, goaway));
    this.closed = true;
  }

  /** Corks the socket for the rest of this tick, so one turn's frames leave together. */
  private write(frame: Buffer): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(frame);
  }

  private onData(chunk: Buffer): void {
    const buffer = this.leftover === undefined ? chunk : Buffer.concat([this.leftover, chunk]);
    let pos = 0;
    while (buffer.length - pos >= 9) {
      const length = buffer.readUIntBE(pos, 3);
      if (buffer.length - pos < 9 + length) break;
      const type = buffer[pos + 3]!;
      const flags = buffer[pos + 4]!;
      const id = buffer.readUInt32BE(pos + 5) & 0x7fffffff;
      const payload = buffer.subarray(pos + 9, pos + 9 + length);
      pos += 9 + length;
      this.onFrame(type, flags, id, payload);
    }
    this.leftover = pos < buffer.length ? buffer.subarray(pos) : undefined;
  }

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    switch (type) {
      case FrameType.DATA:
        this.onDataFrame(flags, id, payload);
        return;
      case FrameType.HEADERS: {
        const pad = flags & PADDED ? payload[0]! : 0;
        const start = (flags & PADDED ? 1 : 0) + (flags & PRIORITY ? 5 : 0);
        const block = payload.subarray(start, payload.length - pad);
        if (flags & END_HEADERS) this.onHeaders(id, flags, block);
        else this.pendingBlock = { id, flags, parts: [Buffer.from(block)] };
        return;
      }
      case FrameType.CONTINUATION: {
        const pending = this.pendingBlock;
        if (pending === undefined || pending.id !== id) {
          this.protocolError("CONTINUATION");
          return;
        }
        pending.parts.push(Buffer.from(payload));
        if (flags & END_HEADERS) {
          this.pendingBlock = undefined;
          this.onHeaders(id, pending.flags, Buffer.concat(pending.parts));
        }
        return;
      }
      case FrameType.RST_STREAM:
        this.finish(id, false);
        return;
      case FrameType.SETTINGS:
        this.onSettings(flags, payload);
        return;
      case FrameType.PING:
        if ((flags & ACK) === 0) this.write(control(FrameType.PING, ACK, 0, payload));
        return;
      case FrameType.GOAWAY: {
        this.closed = true;
        const lastStreamId = payload.readUInt32BE(0) & 0x7fffffff;
        for (const streamId of [...this.streams.keys()]) {
          if (streamId > lastStreamId) this.finish(streamId, false);
        }
        return;
      }
      case FrameType.WINDOW_UPDATE:
        if (id === 0) {
          this.sendWindow += payload.readUInt32BE(0) & 0x7fffffff;
          this.flushBlocked();
        }
        return;
      case FrameType.PUSH_PROMISE:
        this.protocolError("PUSH_PROMISE with push disabled");
        return;
      default:
        // PRIORITY and unknown frame types are ignored (RFC 9113 §4.1).
        return;
    }
  }

  private onDataFrame(flags: number, id: number, payload: Buffer): void {
    this.receivedSinceUpdate += payload.length;
    if (this.receivedSinceUpdate >= RECEIVE_WINDOW / 2) {
      this.write(windowUpdate(0, this.receivedSinceUpdate));
      this.receivedSinceUpdate = 0;
    }
    const stream = this.streams.get(id);
    if (stream === undefined) return;
    stream.receivedSinceUpdate += payload.length;
    if (stream.receivedSinceUpdate >= RECEIVE_WINDOW / 2 && (flags & END_STREAM) === 0) {
      this.write(windowUpdate(id, stream.receivedSinceUpdate));
      stream.receivedSinceUpdate = 0;
    }
    const pad = flags & PADDED ? payload[0]! : 0;
    const data = payload.subarray(flags & PADDED ? 1 : 0, payload.length - pad);
    if (stream.chunks !== undefined) stream.chunks.push(Buffer.from(data));
    if (stream.onMessage !== undefined) this.takeMessages(stream, stream.onMessage, data);
    // A gRPC response ends with trailers; a stream that ends on DATA has no status.
    if (flags & END_STREAM) this.finish(id, false);
  }

  /** Hands `stream` each whole gRPC message in `data`, keeping a message's start until its end comes. */
  private takeMessages(stream: WireStream, onMessage: OnMessage, data: Buffer): void {
    let bytes = stream.partial === undefined ? data : Buffer.concat([stream.partial, data]);
    while (bytes.length >= 5) {
      if (bytes[0] !== 0) {
        this.protocolError("a compressed gRPC message");
        return;
      }
      const length = bytes.readUInt32BE(1);
      if (bytes.length < 5 + length) break;
      onMessage(bytes.subarray(5, 5 + length));
      bytes = bytes.subarray(5 + length);
    }
    // Copied: the frame's buffer is the socket's chunk, not to be held.
    stream.partial = bytes.length === 0 ? undefined : Buffer.from(bytes);
  }

  private onHeaders(id: number, flags: number, block: Buffer): void {
    const key = block.toString("latin1");
    let summary = this.blocks.get(key);
    if (summary === undefined) {
      summary = summarize(decodeHeaderBlock(block));
      if (this.blocks.size >= 256) this.blocks.clear();
      this.blocks.set(key, summary);
    }
    const stream = this.streams.get(id);
    if (stream === undefined) return;
    stream.status ??= summary.status;
    if (summary.grpcStatus !== undefined) stream.grpcStatus = summary.grpcStatus;
    if (flags & END_STREAM) this.finish(id, stream.status === "200" && stream.grpcStatus === "0");
  }

  private onSettings(flags: number, payload: Buffer): void {
    if (flags & ACK) {
      const acked = this.onSettingsAcked;
      this.onSettingsAcked = undefined;
      acked?.();
      return;
    }
    for (let pos = 0; pos + 6 <= payload.length; pos += 6) {
      const setting = payload.readUInt16BE(pos);
      const value = payload.readUInt32BE(pos + 2);
      if (setting === SETTINGS_INITIAL_WINDOW_SIZE) this.peerStreamWindow = value;
      else if (setting === SETTINGS_MAX_CONCURRENT_STREAMS) this.peerMaxStreams = value;
    }
    this.write(control(FrameType.SETTINGS, ACK, 0, Buffer.alloc(0)));
  }

  private flushBlocked(): void {
    while (this.blocked.length > 0) {
      const out = this.blocked[0]!;
      const dataLength = out.readUIntBE(9 + this.requestBlock.length, 3);
      if (dataLength > this.sendWindow) return;
      this.sendWindow -= dataLength;
      this.blocked.shift();
      this.write(out);
    }
  }

  private finish(id: number, ok: boolean): void {
    const stream = this.streams.get(id);
    if (stream === undefined) return;
    this.streams.delete(id);
    stream.done(ok, stream.chunks === undefined ? undefined : Buffer.concat(stream.chunks));
  }

  private protocolError(what: string): void {
    this.socket.destroy(new Error(`HTTP/2 protocol error from the server: ${what}`));
  }

  /** Every call still open fails: the connection is gone. */
  private fail(): void {
    this.closed = true;
    this.blocked.length = 0;
    for (const id of [...this.streams.keys()]) this.finish(id, false);
  }
}

/** Unary gRPC calls spread round-robin over a few connections to one server. */
export class WireClient {
  private next = 0;

  private constructor(private readonly connections: readonly WireConnection[]) {}

  /** Opens `connections` connections to `address` (`host:port`) for calls to `path`. */
  static async connect(address: string, path: string, connections: number): Promise<WireClient> {
    const colon = address.lastIndexOf(":");
    const host = address.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
    const port = Number(address.slice(colon + 1));
    const opened = await Promise.allSettled(
      Array.from({ length: connections }, () => WireConnection.open(host, port, path)),
    );
    const ready = opened.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
    const failed = opened.find((result) => result.status === "rejected");
    if (failed !== undefined) {
      for (const connection of ready) connection.close();
      throw failed.reason;
    }
    return new WireClient(ready);
  }

  /**
   * Sends one call with `body` (a framed gRPC message); `done` runs once it
   * ends. With `onMessage`, each response message goes to it as it arrives
   * (a server stream).
   */
  call(body: Buffer, done: CallDone, keepData = false, onMessage?: OnMessage): void {
    const connection = this.connections[this.next++ % this.connections.length]!;
    connection.call(body, done, keepData, onMessage);
  }

  close(): void {
    for (const connection of this.connections) connection.close();
  }
}

/**
 * HTTP/2 keepalive on the gRPC listener (contract §7: a PING every 30 s, a
 * client that does not answer within 10 s is dropped), run by
 * runtime/grpc/keepalive.ts on the connections of the gateway's grpc-js
 * server. The intervals here are shortened through the server's options; the
 * bin uses the contract's.
 */
import http2, { type Http2Session } from "node:http2";
import { connect, type Socket } from "node:net";
import type { Server } from "nice-grpc";
import { afterEach, describe, expect, it, vi } from "vitest";
import { KeepaliveWheel } from "../runtime/grpc/keepalive.js";
import { createGrpcServer, KEEPALIVE } from "../runtime/grpc/server.js";

const INTERVAL_MS = 300;
const TIMEOUT_MS = 200;
const TICK_MS = 50;

const started: { close(): void }[] = [];
afterEach(() => {
  for (const each of started.splice(0)) each.close();
});

/** The gateway's gRPC server (no services needed: keepalive is per connection) on a loopback port. */
async function listen(): Promise<string> {
  const server: Server = createGrpcServer({
    maxCommandPayloadBytes: 1024,
    keepalive: { intervalMs: INTERVAL_MS, timeoutMs: TIMEOUT_MS, tickMs: TICK_MS },
  });
  const port = await server.listen("127.0.0.1:0");
  started.push({ close: () => server.forceShutdown() });
  return `127.0.0.1:${port}`;
}

/** A `node:http2` client: it answers every PING, as gRPC clients do. */
function answeringClient(address: string): { session: http2.ClientHttp2Session; pings: number[] } {
  const session = http2.connect(`http://${address}`);
  session.on("error", () => {});
  started.push({ close: () => session.destroy() });
  const pings: number[] = [];
  session.on("ping", () => pings.push(performance.now()));
  return { session, pings };
}

/** The frame types a raw connection received, in order, and whether the server closed it. */
interface RawConnection {
  readonly socket: Socket;
  readonly frameTypes: number[];
  readonly closed: Promise<void>;
}

const PING = 0x6;

/**
 * A raw HTTP/2 client that opens the connection (preface and SETTINGS) and
 * then never answers anything, as a device whose network went away would.
 */
function silentClient(address: string): RawConnection {
  const [host, port] = address.split(":") as [string, string];
  const socket = connect(Number(port), host);
  started.push({ close: () => socket.destroy() });
  const frameTypes: number[] = [];
  let pending = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 9) {
      const length = pending.readUIntBE(0, 3);
      if (pending.length < 9 + length) break;
      frameTypes.push(pending[3] as number);
      pending = pending.subarray(9 + length);
    }
  });
  socket.on("error", () => {});
  const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
  socket.write(
    Buffer.concat([
      Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
      // An empty SETTINGS frame, then the ack of the server's.
      Buffer.from([0, 0, 0, 0x4, 0, 0, 0, 0, 0]),
      Buffer.from([0, 0, 0, 0x4, 0x1, 0, 0, 0, 0]),
    ]),
  );
  return { socket, frameTypes, closed };
}

describe("HTTP/2 keepalive on the gRPC listener", () => {
  it("pings a connected client once per interval, and keeps a client that answers", async () => {
    const address = await listen();
    const { session, pings } = answeringClient(address);
    while (pings.length < 3) await new Promise((resolve) => setTimeout(resolve, TICK_MS));
    expect(session.destroyed).toBe(false);
    expect(session.closed).toBe(false);
    // One schedule only: two pings never come closer than the interval less
    // one tick (a second pinger on its own timers would make them closer).
    const gaps = pings.slice(1).map((at, index) => at - (pings[index] as number));
    for (const gap of gaps) expect(gap).toBeGreaterThanOrEqual(INTERVAL_MS - TICK_MS - 5);
  });

  it("closes a connection whose client does not answer a ping", async () => {
    const address = await listen();
    const client = silentClient(address);
    await client.closed;
    // It was pinged before: the connection stayed open until its ping went unanswered.
    expect(client.frameTypes).toContain(PING);
  });
});

describe("KeepaliveWheel", () => {
  it("lets a connection go once it closes, and stops its timer with the last one", async () => {
    const server = http2.createServer();
    const wheel = new KeepaliveWheel({
      intervalMs: INTERVAL_MS,
      timeoutMs: TIMEOUT_MS,
      tickMs: TICK_MS,
    });
    server.on("session", (session) => wheel.add(session));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    started.push({ close: () => server.close() });
    const { port } = server.address() as { port: number };
    const clients = [answeringClient(`127.0.0.1:${port}`), answeringClient(`127.0.0.1:${port}`)];
    while (wheel.size < 2) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(wheel.size).toBe(2);
    for (const { session } of clients) session.destroy();
    while (wheel.size > 0) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(wheel.size).toBe(0);
    expect(wheel.running).toBe(false);
  });
});

describe("the listener's keepalive timing (contract §7)", () => {
  /** A connection that records its pings and answers them only when told. */
  function fakeSession() {
    const session = {
      destroyed: false,
      closed: false,
      pings: [] as number[],
      destroyedAt: undefined as number | undefined,
      answer: undefined as ((error: Error | null) => void) | undefined,
      ping(callback: (error: Error | null) => void) {
        session.pings.push(Date.now());
        session.answer = callback;
        return true;
      },
      destroy() {
        session.destroyed = true;
        session.destroyedAt = Date.now();
      },
      once() {},
    };
    return session;
  }

  it("pings every 30 s and closes a connection 10 s after a ping it did not answer", () => {
    vi.useFakeTimers({ now: 0 });
    try {
      expect(KEEPALIVE).toMatchObject({ intervalMs: 30_000, timeoutMs: 10_000 });
      const wheel = new KeepaliveWheel(KEEPALIVE);
      const answering = fakeSession();
      const silent = fakeSession();
      wheel.add(answering as unknown as Http2Session);
      wheel.add(silent as unknown as Http2Session);
      vi.advanceTimersByTime(29_000);
      expect(answering.pings).toEqual([]);
      vi.advanceTimersByTime(1_000);
      expect(answering.pings).toEqual([30_000]);
      expect(silent.pings).toEqual([30_000]);
      answering.answer?.(null);
      vi.advanceTimersByTime(9_900);
      expect(silent.destroyed).toBe(false);
      vi.advanceTimersByTime(100);
      expect(silent.destroyedAt).toBe(40_000);
      expect(answering.destroyed).toBe(false);
      vi.advanceTimersByTime(20_000);
      expect(answering.pings).toEqual([30_000, 60_000]);
    } finally {
      vi.useRealTimers();
    }
  });
});

/**
 * The stream reader against a real redis-server (contract §6 "Readers"): where it
 * starts, order and batching, binary fields, surviving handler failures and Redis
 * outages, gap reports, and a prompt stop.
 */
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  createStreamReader,
  type StreamEntry,
  type StreamGap,
  type StreamReader,
  type StreamReaderOptions,
} from "../runtime/streams/stream-reader.js";
import { createMetrics } from "../runtime/telemetry/metrics.js";
import { captureLogger } from "./support/logger.js";
import { freePort, startRedis, type TestRedis } from "./support/redis-server.js";
import { waitFor } from "./support/wait.js";

let server: TestRedis;
let redis: Redis;
const running: StreamReader[] = [];
let streamCount = 0;

beforeAll(async () => {
  server = await startRedis();
  redis = server.client();
  // The restart test takes the server away; this client just reconnects.
  redis.on("error", () => {});
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((reader) => reader.stop()));
});

afterAll(async () => {
  redis.disconnect();
  await server.stop();
});

/** The millisecond part of an entry id. */
function idMs(id: string): number {
  return Number(id.split("-")[0]);
}

function nextStream(): string {
  streamCount += 1;
  return `test:stream:${streamCount}`;
}

/** Starts a reader that records what it is handed. */
async function startReader(stream: string, options: Partial<StreamReaderOptions> = {}) {
  const entries: StreamEntry[] = [];
  const batches: number[] = [];
  const gaps: StreamGap[] = [];
  const { logger, lines } = captureLogger();
  const reader = createStreamReader({
    redis,
    stream,
    count: 16,
    blockMs: 500,
    logger,
    onEntries: (batch) => {
      batches.push(batch.length);
      entries.push(...batch);
    },
    onGap: (gap) => {
      gaps.push(gap);
    },
    ...options,
  });
  running.push(reader);
  await reader.start();
  const ids = () => entries.map((entry) => entry.id);
  return { reader, entries, batches, gaps, lines, ids };
}

/** The Redis client id of the reader's connection (named after its stream). */
async function readerClientId(stream: string): Promise<string> {
  let id: string | undefined;
  await waitFor("the reader's connection", async () => {
    const list = String(await redis.client("LIST"));
    id = list
      .split("\n")
      .find((line) => line.includes(` name=stream-reader:${stream} `))
      ?.match(/^id=(\d+) /)?.[1];
    return id !== undefined;
  });
  return id!;
}

/**
 * Drops the reader's connection and keeps it away (new connections fail to
 * authenticate) while `whileAway` runs, then lets it back in.
 */
async function withReaderAway(stream: string, whileAway: () => Promise<void>): Promise<void> {
  const id = await readerClientId(stream);
  await redis.config("SET", "requirepass", `${server.password}-changed`);
  try {
    await redis.client("KILL", "ID", id);
    await whileAway();
  } finally {
    await redis.config("SET", "requirepass", server.password);
  }
}

describe("createStreamReader", () => {
  it("starts after the stream's last entry at startup, so older entries are not replayed", async () => {
    const stream = nextStream();
    await redis.xadd(stream, "*", "n", "old-1");
    const lastOld = await redis.xadd(stream, "*", "n", "old-2");
    const { reader, ids } = await startReader(stream);
    expect(reader.cursor()).toBe(lastOld);

    const fresh = await redis.xadd(stream, "*", "n", "new");
    await waitFor("the new entry", () => ids().includes(fresh!));
    expect(ids()).toEqual([fresh]);
    expect(reader.cursor()).toBe(fresh);
  });

  it("resolves a missing or empty stream to 0-0 and reads what is added next", async () => {
    const missing = nextStream();
    const first = await startReader(missing);
    expect(first.reader.cursor()).toBe("0-0");

    const emptied = nextStream();
    await redis.xadd(emptied, "*", "n", "gone");
    await redis.xtrim(emptied, "MAXLEN", 0);
    const second = await startReader(emptied);
    expect(second.reader.cursor()).toBe("0-0");

    const a = await redis.xadd(missing, "*", "n", "a");
    const b = await redis.xadd(emptied, "*", "n", "b");
    await waitFor("both entries", () => first.ids().includes(a!) && second.ids().includes(b!));
    expect(first.ids()).toEqual([a]);
    expect(second.ids()).toEqual([b]);
  });

  it("hands entries over strictly in stream order, in batches of at most count", async () => {
    const stream = nextStream();
    const { ids, batches } = await startReader(stream, { count: 3 });
    const pipeline = redis.pipeline();
    for (let index = 0; index < 20; index += 1) pipeline.xadd(stream, "*", "n", String(index));
    const added = (await pipeline.exec())!.map(([, id]) => id as string);

    await waitFor("all 20 entries", () => ids().length === 20);
    expect(ids()).toEqual(added);
    expect(Math.max(...batches)).toBeLessThanOrEqual(3);
  });

  it("passes field values through as raw bytes; a repeated field name keeps its last value", async () => {
    const stream = nextStream();
    const { entries } = await startReader(stream);
    const payload = Buffer.concat([
      Buffer.from(Array.from({ length: 256 }, (_, byte) => byte)),
      Buffer.from([0xc3, 0x28, 0xff, 0xfe, 0x00]),
    ]);
    await redis.xadd(stream, "*", "payload", payload, "status", "active", "status", "revoked");

    await waitFor("the entry", () => entries.length === 1);
    const fields = entries[0]!.fields;
    expect(Buffer.compare(fields.get("payload")!, payload)).toBe(0);
    expect(fields.get("status")!.toString()).toBe("revoked");
  });

  it("logs a throwing handler and keeps reading", async () => {
    const stream = nextStream();
    const seen: string[] = [];
    const { lines } = await startReader(stream, {
      count: 1,
      onEntries: (batch) => {
        for (const entry of batch) {
          seen.push(entry.id);
          if (entry.fields.get("n")?.toString() === "bad") throw new Error("handler bug");
        }
      },
    });
    const bad = await redis.xadd(stream, "*", "n", "bad");
    const good = await redis.xadd(stream, "*", "n", "good");

    await waitFor("the entry after the failure", () => seen.includes(good!));
    expect(seen).toEqual([bad, good]);
    expect(lines.some((line) => line.level === "error" && line.message.includes(bad!))).toBe(true);
  });

  // The shared client fails fast on the request path; its reader connection
  // must still block for the whole XREAD.
  it("blocks past the shared client's command timeout", async () => {
    const shared = new Redis({
      host: server.host,
      port: server.port,
      password: server.password,
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: 20,
    });
    const stream = nextStream();
    try {
      const { ids, lines } = await startReader(stream, { redis: shared, blockMs: 1000 });
      await waitFor("the blocked XREAD", async () =>
        /blocked_clients:1\b/.test(await redis.info("clients")),
      );
      await new Promise((resolve) => setTimeout(resolve, 100));
      const id = await redis.xadd(stream, "*", "n", "1");
      await waitFor("the entry", () => ids().includes(id!));
      expect(lines.filter((line) => line.level === "warn")).toEqual([]);
    } finally {
      await Promise.all(running.splice(0).map((reader) => reader.stop()));
      shared.disconnect();
    }
  });

  it("sets gateway_stream_reader_lag_seconds for its stream", async () => {
    const stream = nextStream();
    const metrics = createMetrics();
    const { ids } = await startReader(stream, { metrics });
    const id = await redis.xadd(stream, "*", "n", "1");
    await waitFor("the entry", () => ids().includes(id!));

    const lag = (await metrics.readerLag.get()).values.find(
      (value) => value.labels.stream === stream,
    );
    expect(lag?.value).toBeGreaterThanOrEqual(0);
  });

  // A dropped connection alone loses nothing: entries added while the reader
  // was away are read from its cursor, and no gap is reported.
  it("reads on from its cursor after its connection drops, without a gap", async () => {
    const stream = nextStream();
    const { ids, gaps, lines } = await startReader(stream);
    const before = await redis.xadd(stream, "*", "n", "before");
    await waitFor("the first entry", () => ids().includes(before!));

    const away: string[] = [];
    await withReaderAway(stream, async () => {
      for (const n of ["away-1", "away-2"]) away.push((await redis.xadd(stream, "*", "n", n))!);
    });
    const after = await redis.xadd(stream, "*", "n", "after");

    await waitFor("every entry", () => ids().includes(after!));
    expect(ids()).toEqual([before, ...away, after]);
    expect(gaps).toEqual([]);
    expect(lines.some((line) => line.level === "warn" && line.message.includes(before!))).toBe(
      true,
    );
  });

  it("reports a gap when entries it had not read were trimmed while it was away, then reads on", async () => {
    const stream = nextStream();
    const { ids, gaps } = await startReader(stream);
    const seen = await redis.xadd(stream, "*", "n", "seen");
    await waitFor("the first entry", () => ids().includes(seen!));

    let kept = "";
    await withReaderAway(stream, async () => {
      await redis.xadd(stream, "*", "n", "trimmed-1");
      await redis.xadd(stream, "*", "n", "trimmed-2");
      kept = (await redis.xadd(stream, "*", "n", "kept"))!;
      await redis.xtrim(stream, "MAXLEN", 1);
    });
    const after = await redis.xadd(stream, "*", "n", "after");

    await waitFor("the entries after the gap", () => ids().includes(after!));
    expect(ids()).toEqual([seen, kept, after]);
    expect(gaps).toHaveLength(1);
    expect(gaps[0]).toMatchObject({ kind: "trimmed", cursor: seen });
  });

  // A restore from an older snapshot or replica brings back entries the reader
  // had processed, all with ids at or below its cursor: they are not handed over
  // again, the gap is still reported, and entries added after it are read.
  it("does not re-read a stream recreated with entries at or below its cursor, and reads what is added next", async () => {
    const stream = nextStream();
    const { reader, ids, gaps } = await startReader(stream);
    const processed: string[] = [];
    for (const n of ["one", "two", "three"])
      processed.push((await redis.xadd(stream, "*", "n", n))!);
    await waitFor("the first entries", () => ids().length === 3);
    const cursor = processed[2]!;
    expect(reader.cursor()).toBe(cursor);

    await withReaderAway(stream, async () => {
      // The older copy ends before the cursor entry.
      await redis.del(stream);
      await redis.xadd(stream, processed[0]!, "n", "one");
      await redis.xadd(stream, processed[1]!, "n", "two");
    });
    await waitFor("the gap", () => gaps.length === 1);
    expect(gaps[0]).toMatchObject({ kind: "lost", cursor });
    expect(gaps[0]!.reason).toContain("below the cursor");
    expect(reader.cursor()).toBe(cursor);

    const next = await redis.xadd(stream, "*", "n", "next");
    expect(idMs(next!)).toBeGreaterThan(idMs(cursor));
    await waitFor("the entry added after the restore", () => ids().includes(next!));
    expect(ids()).toEqual([...processed, next]);
    expect(reader.cursor()).toBe(next);
    expect(gaps).toHaveLength(1);
  });

  // The recreated stream holds restored entries below the cursor, not the cursor
  // entry itself, and one added after it: only that one is read.
  it("reads only the entries above its cursor in a recreated stream that never lost an entry", async () => {
    const stream = nextStream();
    const { ids, gaps } = await startReader(stream);
    const processed: string[] = [];
    for (const n of ["one", "two"]) processed.push((await redis.xadd(stream, "*", "n", n))!);
    await waitFor("the first entries", () => ids().length === 2);
    const cursor = processed[1]!;

    let added = "";
    await withReaderAway(stream, async () => {
      // A `*` id comes from the clock; the clock passing the cursor's millisecond
      // is what puts it above the cursor.
      await waitFor("the clock to pass the cursor", () => Date.now() > idMs(cursor));
      await redis.del(stream);
      await redis.xadd(stream, processed[0]!, "n", "one");
      added = (await redis.xadd(stream, "*", "n", "added"))!;
    });
    await waitFor("the entry added to the recreated stream", () => ids().includes(added));
    expect(ids()).toEqual([...processed, added]);
    expect(gaps).toHaveLength(1);
    expect(gaps[0]).toMatchObject({ kind: "lost", cursor });
    expect(gaps[0]!.reason).toContain("recreated");
  });

  it("stops at once while its XREAD is blocked", async () => {
    const stream = nextStream();
    // Block far longer than the test may run: stop() must not wait for the XREAD
    // (nor for its own 600 s handler bound), so it resolves before the test times out.
    const { reader, entries, lines } = await startReader(stream, {
      blockMs: 600_000,
      stopTimeoutMs: 600_000,
    });
    const blockedClients = async () =>
      Number(/blocked_clients:(\d+)/.exec(await redis.info("clients"))?.[1]);
    await waitFor("the blocked XREAD", async () => (await blockedClients()) === 1);

    await reader.stop();
    await waitFor("the connection to close", async () => (await blockedClients()) === 0);
    expect(await blockedClients()).toBe(0);
    // Stopped means stopped: an entry added now is never read, and a second stop is a no-op.
    await redis.xadd(stream, "*", "k", "after-stop");
    await reader.stop();
    expect(entries).toEqual([]);
    expect(lines.filter((line) => line.level !== "debug")).toEqual([]);
  });

  it("rejects start() when Redis cannot be reached", async () => {
    const unreachable = new Redis({
      host: "127.0.0.1",
      port: await freePort(),
      lazyConnect: true,
      retryStrategy: () => null,
    });
    const reader = createStreamReader({
      redis: unreachable,
      stream: nextStream(),
      count: 1,
      logger: captureLogger().logger,
      onEntries: () => {},
    });
    await expect(reader.start()).rejects.toThrow(/cannot resolve the stream's last id/);
    await reader.stop();
    unreachable.disconnect();
  });

  // Runs last: it restarts the server, and with it every other client.
  it("survives Redis being killed and restarted empty, reading what is added after the restart", async () => {
    const stream = nextStream();
    const { reader, ids, gaps, lines } = await startReader(stream);
    const before = await redis.xadd(stream, "*", "n", "before");
    await waitFor("the first entry", () => ids().includes(before!));

    await server.kill();
    await server.restart();
    // The stream is gone: a gap, and the cursor stays where it was (not 0-0).
    await waitFor("the gap", () => gaps.length === 1);
    expect(gaps[0]).toMatchObject({ kind: "lost", cursor: before });
    expect(reader.cursor()).toBe(before);
    const publisher = server.client();
    try {
      const added: string[] = [];
      for (const n of ["next-1", "next-2"])
        added.push((await publisher.xadd(stream, "*", "n", n))!);
      await waitFor("the entries added after the restart", () => ids().includes(added[1]!));
      expect(ids()).toEqual([before, ...added]);
      expect(reader.cursor()).toBe(added[1]);
    } finally {
      publisher.disconnect();
    }
    expect(gaps).toHaveLength(1);
    expect(lines.some((line) => line.level === "info" && line.message.includes("again"))).toBe(
      true,
    );
  });
});

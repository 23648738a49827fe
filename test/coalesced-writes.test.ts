/**
 * Commands sent on a coalescing client within one event-loop turn leave in
 * one socket write, against a real redis-server: they wait in the corked
 * socket until the turn's check phase, and every reply comes back in order.
 */
import type { Socket } from "node:net";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { coalesceWrites } from "../runtime/redis/coalesced-writes.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";

let redis: TestRedis;
let client: Redis;

beforeAll(async () => {
  redis = await startRedis();
  client = coalesceWrites(redis.client());
  await client.ping();
});

afterAll(async () => {
  client?.disconnect();
  await redis?.stop();
});

/** The client's socket, as ioredis keeps it. */
function socketOf(redis: Redis): Socket {
  return (redis as unknown as { stream: Socket }).stream;
}

it("holds a turn's commands in the corked socket, then sends them together and answers each in order", async () => {
  const socket = socketOf(client);
  const sets = Array.from({ length: 50 }, (_, i) => client.set(`coalesced:${i}`, String(i), "NX"));
  const gets = Array.from({ length: 50 }, (_, i) => client.get(`coalesced:${i}`));
  // Nothing has been written yet: all 100 commands wait in the socket's buffer.
  expect(socket.writableCorked).toBe(1);
  expect(socket.writableLength).toBeGreaterThan(0);
  expect(await Promise.all(sets)).toEqual(Array(50).fill("OK"));
  expect(await Promise.all(gets)).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
  expect(socket.writableCorked).toBe(0);
});

it("sends a lone command within its own turn", async () => {
  const socket = socketOf(client);
  const reply = client.ping();
  expect(socket.writableCorked).toBe(1);
  await new Promise((resolve) => setImmediate(resolve));
  expect(socket.writableCorked).toBe(0);
  expect(await reply).toBe("PONG");
});

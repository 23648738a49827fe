/**
 * The user channels of routed fan-out (contract §13) over an in-memory
 * subscriber port: what reaches the hub, which streams end when a message
 * went missing or the connection was lost, and when a user is unsubscribed.
 * (test/fanout-routed.e2e.test.ts runs the same against real Redis.)
 */
import { EventEmitter } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import { createUserChannels, type SubscriberConnection } from "../runtime/push/user-channels.js";
import { createKeyspace } from "../runtime/redis/keyspace.js";
import type { ClientEvent } from "../runtime/streams/client-events.js";
import { silentLogger } from "./support/logger.js";
import { waitFor } from "./support/wait.js";

/** An in-memory subscriber connection: records (un)subscriptions, delivers what a test sends. */
class MemoryConnection extends EventEmitter implements SubscriberConnection {
  readonly subscribed = new Set<string>();
  readonly log: string[] = [];
  disconnected = false;
  failNext = false;
  async ssubscribe(channel: string) {
    if (this.failNext) {
      this.failNext = false;
      throw new Error("Connection is closed.");
    }
    this.subscribed.add(channel);
    this.log.push(`+${channel}`);
  }
  async sunsubscribe(channel: string) {
    this.subscribed.delete(channel);
    this.log.push(`-${channel}`);
  }
  disconnect() {
    this.disconnected = true;
  }
  /** Publishes as the router does, if subscribed. */
  send(channel: string, message: Buffer) {
    if (this.subscribed.has(channel)) this.emit("smessageBuffer", Buffer.from(channel), message);
  }
}

function eventMessage(prev: string, id: string, userId: string, payload = "p"): Buffer {
  const parts = [Buffer.from(`e${prev}\0${id}\0`)];
  for (const text of ["user_id", userId, "event_type", "t.e", "payload", payload]) {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(Buffer.byteLength(text));
    parts.push(length, Buffer.from(text));
  }
  return Buffer.concat(parts);
}

const keyspace = createKeyspace();
const channel = (userId: string) => keyspace.eventsChannel(userId);
let stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const stop of stops) await stop();
  stops = [];
});

function setup(options: { idleMs?: number; failConnect?: number } = {}) {
  const connections: MemoryConnection[] = [];
  const losses: ((why: string) => void)[] = [];
  const delivered: ClientEvent[] = [];
  const interrupted: (string | undefined)[] = [];
  let failConnect = options.failConnect ?? 0;
  const channels = createUserChannels({
    connect: async (onLost) => {
      if (failConnect > 0) {
        failConnect--;
        throw new Error("connect ECONNREFUSED");
      }
      const connection = new MemoryConnection();
      connections.push(connection);
      losses.push(onLost);
      return connection;
    },
    keyspace,
    deliver: (event) => {
      delivered.push(event);
      return 1;
    },
    interrupt: (userId) => {
      interrupted.push(userId);
      return 1;
    },
    maxPayloadBytes: 1024,
    idleMs: options.idleMs ?? 60_000,
    logger: silentLogger,
  });
  stops.push(() => channels.stop());
  return { channels, connections, losses, delivered, interrupted };
}

describe("user channels", () => {
  it("subscribes a user once for several streams, and delivers its events in order", async () => {
    const { channels, connections, delivered } = setup();
    await channels.acquire("u1");
    await channels.acquire("u1");
    const [connection] = connections;
    expect(connection!.log).toEqual([`+${channel("u1")}`]);
    connection!.send(channel("u1"), eventMessage("1-0", "2-0", "u1", "a"));
    connection!.send(channel("u1"), eventMessage("2-0", "3-0", "u1", "b"));
    expect(delivered.map((event) => [event.eventId, event.payload.toString()])).toEqual([
      ["2-0", "a"],
      ["3-0", "b"],
    ]);
  });

  it("ends one user's streams when a message names another predecessor than the last one received", async () => {
    const { channels, connections, delivered, interrupted } = setup();
    await channels.acquire("u1");
    await channels.acquire("u2");
    const connection = connections[0]!;
    connection.send(channel("u1"), eventMessage("1-0", "2-0", "u1"));
    connection.send(channel("u2"), eventMessage("1-5", "2-5", "u2"));
    connection.send(channel("u1"), eventMessage("3-0", "4-0", "u1"));
    expect(interrupted).toEqual(["u1"]);
    // The event itself still goes to whatever streams remain, and the chain goes on from it.
    expect(delivered.map((event) => event.eventId)).toEqual(["2-0", "2-5", "4-0"]);
    connection.send(channel("u1"), eventMessage("4-0", "5-0", "u1"));
    expect(interrupted).toEqual(["u1"]);
  });

  it("ends a user's streams on a gap message, and drops a message it cannot decode", async () => {
    const { channels, connections, delivered, interrupted } = setup();
    await channels.acquire("u1");
    connections[0]!.send(channel("u1"), Buffer.from("g9-0\0"));
    connections[0]!.send(channel("u1"), Buffer.from("zzz"));
    expect(interrupted).toEqual(["u1"]);
    expect(delivered).toEqual([]);
  });

  it("ends every stream when the connection is lost, and subscribes afresh on a new one", async () => {
    const { channels, connections, losses, interrupted } = setup();
    await channels.acquire("u1");
    losses[0]!("subscriber connection closed");
    expect(interrupted).toEqual([undefined]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(connections[0]!.disconnected).toBe(true);
    expect(channels.size).toBe(0);
    await channels.acquire("u1");
    expect(connections).toHaveLength(2);
    expect(connections[1]!.log).toEqual([`+${channel("u1")}`]);
    // A late loss report of the old connection changes nothing.
    losses[0]!("again");
    expect(interrupted).toEqual([undefined]);
  });

  it("fails an acquire that cannot subscribe, and the next one tries again", async () => {
    const { channels, connections } = setup({ failConnect: 1 });
    await expect(channels.acquire("u1")).rejects.toThrow("ECONNREFUSED");
    expect(channels.size).toBe(0);
    await channels.acquire("u1");
    connections[0]!.failNext = true;
    await expect(channels.acquire("u2")).rejects.toThrow("Connection is closed.");
    await channels.acquire("u2");
    expect(connections[0]!.log).toEqual([`+${channel("u1")}`, `+${channel("u2")}`]);
  });

  it("unsubscribes a user only once it has had no stream for the idle time", async () => {
    const { channels, connections } = setup({ idleMs: 100 });
    const release = await channels.acquire("u1");
    const stay = await channels.acquire("u2");
    release();
    await waitFor("the idle user to be unsubscribed", () => connections[0]!.log.length === 3);
    expect(connections[0]!.log).toEqual([
      `+${channel("u1")}`,
      `+${channel("u2")}`,
      `-${channel("u1")}`,
    ]);
    expect(channels.size).toBe(1);
    stay();
  });
});

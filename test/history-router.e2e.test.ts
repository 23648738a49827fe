/**
 * The history router (contract §12) across gateway processes (the real bin)
 * on one Redis and one ingress stream: each client event lands in its user's
 * history exactly once and in order however many nodes run, also when the
 * routing node is killed mid-write, and a device that lost its stream with
 * that node resumes on a survivor without losing or repeating an event.
 */
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { publishClientEvent, publishSessionSnapshot } from "../runtime/kit/publishers.js";
import { createCleanup } from "./support/cleanup.js";
import { startGatewayBin } from "./support/gateway.js";
import {
  hasValidGatewaySignature,
  metric,
  newDevice,
  subscribe,
  subscribeRequest,
  uniqueName,
} from "./support/push.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";
import { waitFor } from "./support/wait.js";

let redis: TestRedis;
let publisher: Redis;
const cleanup = createCleanup();

beforeAll(async () => {
  redis = await startRedis();
  publisher = redis.client();
});

afterEach(() => cleanup.run());

afterAll(async () => {
  publisher?.disconnect();
  await redis?.stop();
});

/**
 * A stream queue that holds the burst a new router sends when it catches up
 * with the ingress after a takeover (a few seconds of events at once): the
 * tests with streams open across a takeover are about losing and repeating
 * nothing, not about the burst budget (a burst larger than the queue
 * overflows by design, and the device resumes).
 */
const TAKEOVER_BURST = { GATEWAY_PUSH_STREAM_QUEUE_SIZE: "4096" };

/** How client events reach the nodes (`GATEWAY_PUSH_FANOUT`): the router works the same either way. */
type Fanout = "read" | "routed";

/** Several gateway processes reading one ingress stream. */
interface Nodes {
  readonly clientEvents: string;
  readonly sessionEvents: string;
  readonly nodes: Awaited<ReturnType<typeof startGatewayBin>>[];
  /** `{prefix}history-lease:<ingress>`. */
  readonly leaseKey: string;
  /** `{prefix}history-router:<ingress>`. */
  readonly routerKey: string;
}

/** Starts `count` bins on the same new ingress stream; resolves once one of them routes. */
async function startNodes(
  count: number,
  fanout: Fanout,
  env: Record<string, string> = {},
): Promise<Nodes> {
  const name = uniqueName("router");
  const clientEvents = `${name}:client_events`;
  const sessionEvents = `${name}:session_events`;
  const nodes: Nodes["nodes"] = [];
  // One after another: the start-up of several processes at once on a small
  // machine only makes each slower.
  for (let index = 0; index < count; index++) {
    nodes.push(
      await startGatewayBin(redis, cleanup, {
        GATEWAY_CLIENT_EVENTS_REDIS_STREAM: clientEvents,
        GATEWAY_SESSION_EVENTS_REDIS_STREAM: sessionEvents,
        GATEWAY_PUSH_FANOUT: fanout,
        ...env,
      }),
    );
  }
  const routerKey = `gateway:history-router:${clientEvents}`;
  // Events published before the router state exists are, by design, not in history.
  await waitFor("a node to start routing", async () => {
    return (await publisher.hget(routerKey, "floor")) !== null;
  });
  return {
    clientEvents,
    sessionEvents,
    nodes,
    leaseKey: `gateway:history-lease:${clientEvents}`,
    routerKey,
  };
}

/** The node holding the router lease now, and the lease's holder text. */
async function leaderOf(cluster: Nodes): Promise<{ node: Nodes["nodes"][number]; holder: string }> {
  let holder: string | null = null;
  await waitFor("the router lease to be held", async () => {
    holder = await publisher.get(cluster.leaseKey);
    return holder !== null;
  });
  const node = nodeOfHolder(cluster, holder!);
  if (node === undefined) throw new Error(`lease holder ${holder} is none of the spawned nodes`);
  return { node, holder: holder! };
}

/** The spawned node whose pid the holder text (`<hostname>:<pid>:<random>`) names. */
function nodeOfHolder(cluster: Nodes, holder: string) {
  const pid = Number(holder.split(":").at(-2));
  return cluster.nodes.find((node) => node.bin.child.pid === pid);
}

/** One published event, as the publisher recorded it. */
interface Published {
  readonly id: string;
  readonly userId: string;
  readonly payload: Buffer;
}

function compareIds(a: string, b: string): number {
  const [aMs, aSeq] = a.split("-").map(BigInt) as [bigint, bigint];
  const [bMs, bSeq] = b.split("-").map(BigInt) as [bigint, bigint];
  if (aMs !== bMs) return aMs < bMs ? -1 : 1;
  return aSeq === bSeq ? 0 : aSeq < bSeq ? -1 : 1;
}

/** A payload that names its user and sequence number, with bytes that are not text. */
function payloadOf(userId: string, sequence: number): Buffer {
  return Buffer.concat([Buffer.from(`${userId}#${sequence}`), Buffer.from([0, 255, 10])]);
}

/** Publishes one event for each of `users` at once (one pipelined round) and records them. */
async function publishRound(
  cluster: Nodes,
  users: readonly string[],
  sequence: number,
  into: Published[],
): Promise<void> {
  const round = users.map((userId) => ({ userId, payload: payloadOf(userId, sequence) }));
  const ids = await Promise.all(
    round.map(({ userId, payload }) =>
      publishClientEvent(
        publisher,
        { userId, eventType: "test.routed", payload, requestId: `r-${sequence}` },
        { stream: cluster.clientEvents },
      ),
    ),
  );
  for (const [index, event] of round.entries()) into.push({ ...event, id: ids[index]! });
}

/**
 * Publishes rounds for `users` until stopped (a short pause between rounds,
 * so that routing and publishing interleave), at most `maxRounds`.
 */
function publishContinuously(cluster: Nodes, users: readonly string[], maxRounds: number) {
  const published: Published[] = [];
  let publishing = true;
  const loop = (async () => {
    for (let sequence = 0; publishing && sequence < maxRounds; sequence++) {
      await publishRound(cluster, users, sequence, published);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })();
  return {
    published,
    /** Resolves once `maxRounds` rounds are published. */
    done: loop,
    /** Stops publishing; resolves with everything published. */
    async stop(): Promise<Published[]> {
      publishing = false;
      await loop;
      return published;
    },
  };
}

/** Waits until the router's stored position reached `id`. */
async function routedThrough(cluster: Nodes, id: string): Promise<void> {
  await waitFor(`history routed through ${id}`, async () => {
    const position = await publisher.hget(cluster.routerKey, "position");
    return position !== null && compareIds(position, id) >= 0;
  });
}

/**
 * Asserts each user's history holds exactly that user's published events —
 * each id once, in order, with the ingress entry's fields and the payload
 * published — once the router has routed the last of them.
 */
async function expectHistories(
  cluster: Nodes,
  users: readonly string[],
  published: readonly Published[],
): Promise<void> {
  const last = published
    .map((event) => event.id)
    .sort(compareIds)
    .at(-1)!;
  await routedThrough(cluster, last);
  const ingress = await publisher.xrangeBuffer(cluster.clientEvents, "-", "+");
  for (const userId of users) {
    const mine = published
      .filter((event) => event.userId === userId)
      .sort((a, b) => compareIds(a.id, b.id));
    const history = await publisher.xrangeBuffer(`gateway:history:{${userId}}`, "-", "+");
    const ids = history.map(([id]) => id.toString());
    expect(ids).toEqual(mine.map((event) => event.id));
    expect(new Set(ids).size).toBe(ids.length);
    for (const [index, [, fields]] of history.entries()) {
      const field = (name: string) => fields[fields.findIndex((f) => f.toString() === name) + 1];
      expect(field("user_id")?.toString()).toBe(userId);
      expect(field("payload")?.equals(mine[index]!.payload)).toBe(true);
    }
    // Every field of each ingress entry is kept, in the same order.
    const fromIngress = ingress.filter(([, fields]) => fields[1]?.toString() === userId);
    expect(history).toEqual(fromIngress);
  }
}

/** A routed-entries counter summed over the nodes still running. */
async function routedTotal(cluster: Nodes): Promise<number> {
  let total = 0;
  for (const node of cluster.nodes) {
    total += await metric(node.admin, "gateway_history_entries_routed_total");
  }
  return total;
}

/** Kills `node` (SIGKILL) and resolves how long until a survivor held the lease, in ms. */
async function killAndTimeTakeover(cluster: Nodes, node: Nodes["nodes"][number], holder: string) {
  const killedAt = Date.now();
  await node.bin.kill();
  let next: string | null = null;
  await waitFor("a surviving node to take the router lease", async () => {
    next = await publisher.get(cluster.leaseKey);
    return next !== null && next !== holder;
  });
  const takeoverMs = Date.now() - killedAt;
  const survivor = nodeOfHolder(cluster, next!);
  expect(survivor).toBeDefined();
  expect(survivor).not.toBe(node);
  return takeoverMs;
}

describe.each(["read", "routed"] as const)(
  "the history router on one ingress stream, fan-out %s",
  (fanout) => {
    it.each([1, 2, 5])(
      "writes every event exactly once into its user's history with %i node(s)",
      async (count) => {
        const cluster = await startNodes(count, fanout);
        const users = [uniqueName("user"), uniqueName("user"), uniqueName("user")];
        const publishing = publishContinuously(cluster, users, 100);
        await publishing.done;
        const published = publishing.published;
        expect(published).toHaveLength(300);

        await expectHistories(cluster, users, published);
        // No node died, so the lease never moved and no batch was routed twice.
        expect(await routedTotal(cluster)).toBe(300);
      },
      120_000,
    );

    it("loses and repeats nothing when the routing node dies mid-write", async () => {
      const cluster = await startNodes(3, fanout);
      const { node: leader, holder } = await leaderOf(cluster);
      const users = [
        uniqueName("user"),
        uniqueName("user"),
        uniqueName("user"),
        uniqueName("user"),
      ];
      // Below GATEWAY_PUSH_HISTORY_SIZE per user, so nothing is trimmed.
      const publishing = publishContinuously(cluster, users, 900);
      await waitFor("the leader to route while events keep coming", async () => {
        const twentieth = publishing.published[20];
        if (twentieth === undefined) return false;
        const position = await publisher.hget(cluster.routerKey, "position");
        return position !== null && compareIds(position, twentieth.id) >= 0;
      });

      const takeoverMs = await killAndTimeTakeover(cluster, leader, holder);
      // The contract's bound (lease 3 s, renewed every second), not a speed expectation.
      expect(takeoverMs).toBeLessThan(5000);
      const atTakeover = publishing.published.length;
      await waitFor("more events after the takeover", () => {
        return publishing.published.length >= atTakeover + 40;
      });
      const published = await publishing.stop();

      // A re-routed batch counts again on the new leader: the history content is what counts.
      await expectHistories(cluster, users, published);
    }, 120_000);

    // A router that dies after writing a batch's histories but before it
    // stores its position leaves that position behind. Where a SIGKILL
    // lands is up to chance; here the position is put back by hand right
    // after the kill, as that crash would leave it, so the survivor surely
    // routes written events again.
    it("writes no event twice when a new router re-routes events its predecessor wrote but did not record", async () => {
      const cluster = await startNodes(2, fanout);
      const { node: leader, holder } = await leaderOf(cluster);
      const users = [uniqueName("user"), uniqueName("user")];
      const before = publishContinuously(cluster, users, 20);
      await before.done;
      const written = [...before.published].sort((a, b) => compareIds(a.id, b.id));
      await routedThrough(cluster, written.at(-1)!.id);

      await leader.bin.kill();
      await publisher.hset(cluster.routerKey, "position", written[9]!.id);
      let next: string | null = null;
      await waitFor("a surviving node to take the router lease", async () => {
        next = await publisher.get(cluster.leaseKey);
        return next !== null && next !== holder;
      });
      const survivor = nodeOfHolder(cluster, next!)!;
      const after = publishContinuously(cluster, users, 10);
      await after.done;
      const published = [...written, ...after.published];

      await expectHistories(cluster, users, published);
      // The survivor routed the 30 written events after the stale position
      // again (their writes were no-ops), then the 20 new ones.
      expect(await metric(survivor.admin, "gateway_history_entries_routed_total")).toBe(50);
    }, 120_000);

    it("resumes a device whose node died on a survivor, with every missed event once", async () => {
      const cluster = await startNodes(2, fanout, TAKEOVER_BURST);
      const { node: leader, holder } = await leaderOf(cluster);
      const [survivor] = cluster.nodes.filter((node) => node !== leader);
      const device = newDevice(uniqueName("user"));
      await publishSessionSnapshot(
        publisher,
        {
          deviceSessionId: device.deviceSessionId,
          userId: device.userId,
          clientPublicKey: device.publicKeyText,
          status: "active",
        },
        { stream: cluster.sessionEvents },
      );
      // The device is on the routing node, which is about to die.
      const first = subscribe(leader.grpc, subscribeRequest(device), cleanup);
      await first.received(1);
      const users = [device.userId, uniqueName("user"), uniqueName("user")];
      const publishing = publishContinuously(cluster, users, 900);
      await first.received(6);

      expect(await killAndTimeTakeover(cluster, leader, holder)).toBeLessThan(5000);
      await first.terminal();
      const lastSeen = first.events.at(-1)!.eventId;
      const atTakeover = publishing.published.length;
      await waitFor("more events after the takeover", () => {
        return publishing.published.length >= atTakeover + 30;
      });

      // Resumed while events keep coming: the replay and live delivery meet.
      const resumed = subscribe(
        survivor!.grpc,
        subscribeRequest(device, { lastEventId: lastSeen }),
        cleanup,
      );
      const [bootstrap] = await resumed.received(2);
      expect(bootstrap!.eventId).toBe(lastSeen);
      const atResume = publishing.published.length;
      await waitFor("more events after the resume", () => {
        return publishing.published.length >= atResume + 30;
      });
      const published = await publishing.stop();

      const missed = published
        .filter((event) => event.userId === device.userId && compareIds(event.id, lastSeen) > 0)
        .sort((a, b) => compareIds(a.id, b.id));
      const events = (await resumed.received(1 + missed.length)).slice(1);
      expect(events.map((event) => event.eventId)).toEqual(missed.map((event) => event.id));
      expect(events.every((event, index) => missed[index]!.payload.equals(event.payload))).toBe(
        true,
      );
      expect(events.every(hasValidGatewaySignature)).toBe(true);
      await expectHistories(cluster, users, published);

      // Nothing arrives twice after the last one either: the next event is the next one.
      const marker = await publishClientEvent(
        publisher,
        { userId: device.userId, eventType: "test.marker" },
        { stream: cluster.clientEvents },
      );
      const all = await resumed.received(2 + missed.length);
      expect(all.at(-1)!.eventId).toBe(marker);
      expect(resumed.events).toHaveLength(2 + missed.length);
      expect(await metric(survivor!.admin, 'gateway_push_resumes_total{result="recovered"}')).toBe(
        1,
      );
    }, 120_000);
  },
);

describe("the history router under fan-out routed", () => {
  it("keeps a stream on a survivor fed with every event once while the routing node dies", async () => {
    const cluster = await startNodes(2, "routed", TAKEOVER_BURST);
    const { node: leader, holder } = await leaderOf(cluster);
    const [survivor] = cluster.nodes.filter((node) => node !== leader);
    const device = newDevice(uniqueName("user"));
    await publishSessionSnapshot(
      publisher,
      {
        deviceSessionId: device.deviceSessionId,
        userId: device.userId,
        clientPublicKey: device.publicKeyText,
        status: "active",
      },
      { stream: cluster.sessionEvents },
    );
    const stream = subscribe(survivor!.grpc, subscribeRequest(device), cleanup);
    await stream.received(1);
    const users = [device.userId, uniqueName("user")];
    const publishing = publishContinuously(cluster, users, 900);
    await stream.received(6);

    expect(await killAndTimeTakeover(cluster, leader, holder)).toBeLessThan(5000);
    const atTakeover = publishing.published.length;
    await waitFor("more events after the takeover", () => {
      return publishing.published.length >= atTakeover + 30;
    });
    const published = await publishing.stop();

    // The new router re-routes what its predecessor had not recorded: what
    // was already written is not published again, the rest is.
    const mine = published
      .filter((event) => event.userId === device.userId)
      .sort((a, b) => compareIds(a.id, b.id));
    const events = (await stream.received(1 + mine.length)).slice(1);
    expect(events.map((event) => event.eventId)).toEqual(mine.map((event) => event.id));
    expect(stream.ended).toBeUndefined();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(stream.events).toHaveLength(1 + mine.length);
  }, 120_000);
});

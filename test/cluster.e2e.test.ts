/**
 * Redis Cluster mode (contract §13): two in-process gateway nodes with
 * `GATEWAY_REDIS_CLUSTER=true` on a real 3-master + 3-replica cluster, seeded
 * with one node's address. Calls, replay protection, fan-out, revocation,
 * resume, the CLI and provisioning work as on one Redis, and no event is lost
 * while a stream's slot moves to another master.
 */
import type { Cluster } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Routes } from "../handlers/ports.js";
import type { SubscribeEventsResponse } from "../proto/gen/edgegateway/v1/edge_gateway.js";
import { type CliIo, runCli } from "../runtime/cli/cli.js";
import { runProvisionCli } from "../runtime/cli/provision-command.js";
import { loadConfig } from "../runtime/config/config.js";
import { createGateway } from "../runtime/host/gateway.js";
import { publishSessionSnapshot } from "../runtime/kit/publishers.js";
import { createKeyspace } from "../runtime/redis/keyspace.js";
import { createCleanup } from "./support/cleanup.js";
import { createMemoryLogger, gatewayEnv } from "./support/gateway.js";
import {
  execute,
  hasValidGatewaySignature,
  metric,
  newDevice,
  startPushGateway,
  subscribe,
  subscribeRequest,
  type TestDevice,
} from "./support/push.js";
import { startRedisCluster, type TestRedisCluster } from "./support/redis-cluster.js";
import { freePort, startRedis } from "./support/redis-server.js";
import { waitFor } from "./support/wait.js";

const routes: Routes = {
  "demo.echo": async (command) => ({ resultCode: "ok", payload: command.payload }),
};
const CLUSTER_ENV = { GATEWAY_REDIS_CLUSTER: "true" };
const REVOKED = { status: "FAILED_PRECONDITION", details: "device session is revoked" };

let cluster: TestRedisCluster;
let publisher: Cluster;
/** Lives as long as the file: the two gateway nodes. */
const nodes = createCleanup();
/** Lives as long as one test: its clients. */
const cleanup = createCleanup();
type PushGateway = Awaited<ReturnType<typeof startPushGateway>>;
let first: PushGateway;
let second: PushGateway;

beforeAll(async () => {
  cluster = await startRedisCluster();
  publisher = cluster.client();
  // Both nodes read the same two streams, as a deployment does.
  const options = { name: "cluster", env: CLUSTER_ENV, routes };
  first = await startPushGateway(cluster, publisher, nodes, options);
  second = await startPushGateway(cluster, publisher, nodes, options);
}, 60_000);

afterEach(() => cleanup.run());

afterAll(async () => {
  await nodes.run();
  publisher?.disconnect();
  await cluster?.stop();
});

function eventIds(events: readonly SubscribeEventsResponse[]): string[] {
  return events.map((event) => event.eventId);
}

/**
 * Resumes `device` on `node` from `lastEventId` as the device client does:
 * a stream that ends `UNAVAILABLE` (its node's subscriber saw slots move, say)
 * is resumed again from the last event it delivered. Each resume must be
 * recovered (its bootstrap echoes the id resumed from); resolves the ids of
 * the events received, in order, once `count` arrived.
 */
async function resumeUntil(
  node: PushGateway,
  device: TestDevice,
  lastEventId: string,
  count: number,
): Promise<string[]> {
  const received: string[] = [];
  let from = lastEventId;
  for (let attempt = 1; received.length < count; attempt++) {
    if (attempt > 5)
      throw new Error(`still ${count - received.length} event(s) short after 5 resumes`);
    const stream = subscribe(node.grpc, subscribeRequest(device, { lastEventId: from }), cleanup);
    const events = await stream.received(1 + count - received.length).catch(() => stream.events);
    if (events.length > 0) expect(events[0]!.eventId).toBe(from);
    received.push(...eventIds(events.slice(1)));
    if (received.length < count) {
      expect(stream.ended?.status).toBe("UNAVAILABLE");
      from = received.at(-1) ?? from;
    }
  }
  return received;
}

/** Payload texts of the events after the bootstrap. */
function payloads(events: readonly SubscribeEventsResponse[]): string[] {
  return events.slice(1).map((event) => Buffer.from(event.payload).toString());
}

async function activate(...devices: TestDevice[]): Promise<void> {
  for (const device of devices) await first.snapshot(device, "active");
}

/** Runs the CLI in this process with `env`; its exit code and output. */
async function cli(args: string[], env: Record<string, string>) {
  const lines: string[] = [];
  const io: CliIo = { stdout: (line) => lines.push(line), stderr: (line) => lines.push(line) };
  const code = await (args[0] === "infra"
    ? runProvisionCli(args.slice(2), env, io)
    : runCli(args, env, io));
  return { code, output: lines.join("\n") };
}

describe("two gateway nodes on a Redis Cluster", () => {
  it("log the cluster mode at startup, connect through the seed node and name the mode in /readyz", async () => {
    for (const node of [first, second]) {
      expect(node.gateway.logger.lines.join("\n")).toContain(
        `Redis connected: mode=cluster addr=${cluster.addr} db=0`,
      );
      const ready = await fetch(`http://${node.publicHttp}/readyz`);
      expect([ready.status, await ready.json()]).toEqual([
        200,
        { status: "ready", redis_mode: "cluster" },
      ]);
    }
  });

  it("execute commands on both nodes, and a request_id is accepted exactly once across them", async () => {
    const device = newDevice("erin");
    await activate(device);
    for (const node of [first, second]) {
      expect(await execute(node.grpc, device, cleanup)).toEqual({ status: "OK", details: "ok" });
    }
    // The Cluster clients are timed like a single Redis client: the replay
    // reservation on the request path, the readers' XREAD on their own copies.
    for (const node of [first, second]) {
      expect(
        await metric(node.admin, 'gateway_redis_command_duration_seconds_count{command="set"}'),
      ).toBeGreaterThan(0);
      expect(
        await metric(node.admin, 'gateway_redis_command_duration_seconds_count{command="xread"}'),
      ).toBeGreaterThan(0);
    }
    for (let round = 0; round < 5; round += 1) {
      const requestId = `once-${round}`;
      const outcomes = await Promise.all(
        [first, second].map((node) => execute(node.grpc, device, cleanup, { requestId })),
      );
      expect(outcomes.map(({ status }) => status).sort()).toEqual(["ALREADY_EXISTS", "OK"]);
    }
  });

  it("fan a client event out to the user's streams on both nodes", async () => {
    const phone = newDevice("frank");
    const laptop = newDevice("frank");
    await activate(phone, laptop);
    const onFirst = subscribe(first.grpc, subscribeRequest(phone), cleanup);
    const onSecond = subscribe(second.grpc, subscribeRequest(laptop), cleanup);
    await Promise.all([onFirst.received(1), onSecond.received(1)]);

    const payload = Buffer.from([0, 1, 2, 254, 255]);
    const id = await first.publish({ userId: "frank", eventType: "chat.message", payload });
    for (const stream of [onFirst, onSecond]) {
      const [, event] = await stream.received(2);
      expect(event).toMatchObject({ eventId: id, eventType: "chat.message" });
      expect(Buffer.from(event!.payload).equals(payload)).toBe(true);
      expect(hasValidGatewaySignature(event!)).toBe(true);
    }
  });

  it("end a revoked session's streams on both nodes and refuse its new calls", async () => {
    const phone = newDevice("grace");
    await activate(phone);
    const onFirst = subscribe(first.grpc, subscribeRequest(phone), cleanup);
    const onSecond = subscribe(second.grpc, subscribeRequest(phone), cleanup);
    await Promise.all([onFirst.received(1), onSecond.received(1)]);

    await first.snapshot(phone, "revoked");
    expect(await onFirst.terminal()).toEqual(REVOKED);
    expect(await onSecond.terminal()).toEqual(REVOKED);
    for (const node of [first, second]) {
      expect(await execute(node.grpc, phone, cleanup)).toEqual(REVOKED);
    }
  });

  it("end a session's streams on both nodes when the revoke comes while every node's connections drop", async () => {
    const phone = newDevice("ivan");
    await activate(phone);
    const onFirst = subscribe(first.grpc, subscribeRequest(phone), cleanup);
    const onSecond = subscribe(second.grpc, subscribeRequest(phone), cleanup);
    await Promise.all([onFirst.received(1), onSecond.received(1)]);

    // Every client connection to every master drops, then the revoke is
    // written at once, before the nodes' readers are back.
    const admins = (await cluster.masters()).map((port) => cluster.nodeClient(port));
    cleanup.defer(() => {
      for (const admin of admins) admin.disconnect();
    });
    await Promise.all(admins.map((admin) => admin.ping()));
    await Promise.all(
      admins.map((admin) => admin.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")),
    );
    const sessionMaster = await cluster.masterOf(await cluster.slotOf(first.sessionEvents));
    const hashMaster = await cluster.masterOf(
      await cluster.slotOf(createKeyspace().sessionKey(phone.deviceSessionId)),
    );
    const masters = await cluster.masters();
    const on = (port: number) => admins[masters.indexOf(port)]!;
    await Promise.all([
      on(hashMaster).hset(createKeyspace().sessionKey(phone.deviceSessionId), {
        status: "revoked",
      }),
      on(sessionMaster).xadd(
        first.sessionEvents,
        "*",
        "device_session_id",
        phone.deviceSessionId,
        "user_id",
        phone.userId,
        "client_public_key",
        phone.publicKeyText,
        "status",
        "revoked",
        "revoked_at_ms",
        String(Date.now()),
      ),
    ]);

    expect(await onFirst.terminal()).toEqual(REVOKED);
    expect(await onSecond.terminal()).toEqual(REVOKED);

    // The tests after this one need both nodes' Redis connections back: until
    // then a node answers calls UNAVAILABLE (fail closed), as it should.
    const probe = newDevice("ivan-probe");
    await activate(probe);
    await waitFor("both nodes to serve calls again", async () => {
      const outcomes = await Promise.all(
        [first, second].map((node) => execute(node.grpc, probe, cleanup)),
      );
      return outcomes.every(({ status }) => status === "OK");
    });
  });

  it("resume on the other node with every event missed, recovered", async () => {
    const device = newDevice("heidi");
    await activate(device);
    const before = subscribe(first.grpc, subscribeRequest(device), cleanup);
    await before.received(1);
    await first.publish({ userId: "heidi", eventType: "demo.note", payload: "seen" });
    const [, seen] = await before.received(2);
    before.cancel();

    const missed: string[] = [];
    for (const text of ["a", "b", "c"]) {
      missed.push(await first.publish({ userId: "heidi", eventType: "demo.note", payload: text }));
    }
    // The router copies the events into the user's history; any node can replay them.
    const historyKey = createKeyspace().historyKey("heidi");
    await waitFor(
      "the history of the missed events",
      async () => (await publisher.xlen(historyKey)) >= 4,
    );

    const resumed = subscribe(
      second.grpc,
      subscribeRequest(device, { lastEventId: seen!.eventId }),
      cleanup,
    );
    const events = await resumed.received(4);
    expect(events[0]?.eventId).toBe(seen!.eventId);
    expect(eventIds(events.slice(1))).toEqual(missed);
    expect(payloads(events)).toEqual(["a", "b", "c"]);
    expect(await metric(second.admin, 'gateway_push_resumes_total{result="recovered"}')).toBe(1);
  });

  it("get the session hash and then the snapshot entry from publishSessionSnapshot on a Cluster client", async () => {
    const device = newDevice("nina");
    const session = {
      deviceSessionId: device.deviceSessionId,
      userId: "nina",
      clientPublicKey: device.publicKeyText,
    };
    const hashKey = createKeyspace().sessionKey(device.deviceSessionId);
    // The hash and the stream hash to different slots: one MULTI could not hold both.
    expect(await cluster.slotOf(hashKey)).not.toBe(await cluster.slotOf(first.sessionEvents));

    const revokedId = await publishSessionSnapshot(
      publisher,
      { ...session, status: "revoked", revokedAtMs: 1_700_000_000_000 },
      { stream: first.sessionEvents, now: () => 1_700_000_000_001 },
    );
    expect(await publisher.hgetall(hashKey)).toEqual({
      user_id: "nina",
      client_public_key: device.publicKeyText,
      status: "revoked",
      revoked_at_ms: "1700000000000",
      updated_at_ms: "1700000000001",
    });
    const [entry] = await publisher.xrange(first.sessionEvents, revokedId, revokedId);
    expect(entry?.[1]).toEqual([
      "device_session_id",
      device.deviceSessionId,
      "user_id",
      "nina",
      "client_public_key",
      device.publicKeyText,
      "status",
      "revoked",
      "revoked_at_ms",
      "1700000000000",
    ]);

    await publishSessionSnapshot(
      publisher,
      { ...session, status: "active" },
      { stream: first.sessionEvents },
    );
    expect(await publisher.hget(hashKey, "status")).toBe("active");
    expect(await publisher.hexists(hashKey, "revoked_at_ms")).toBe(0);
  });

  it("serve the CLI's session put, event publish and session revoke, and infra provision", async () => {
    const env = gatewayEnv(cluster, {
      ...CLUSTER_ENV,
      GATEWAY_SESSION_EVENTS_REDIS_STREAM: first.sessionEvents,
      GATEWAY_CLIENT_EVENTS_REDIS_STREAM: first.clientEvents,
    });
    const device = newDevice("ivan");
    const put = await cli(
      [
        "session",
        "put",
        "--session",
        device.deviceSessionId,
        "--user",
        "ivan",
        "--public-key",
        device.publicKeyText,
      ],
      env,
    );
    expect(put.code, put.output).toBe(0);
    const stream = subscribe(second.grpc, subscribeRequest(device), cleanup);
    await stream.received(1);

    const published = await cli(
      ["event", "publish", "--user", "ivan", "--type", "demo.cli", "--payload", "hi"],
      env,
    );
    expect(published.code, published.output).toBe(0);
    const [, event] = await stream.received(2);
    expect(event).toMatchObject({ eventType: "demo.cli" });
    expect(Buffer.from(event!.payload).toString()).toBe("hi");

    const revoked = await cli(["session", "revoke", "--session", device.deviceSessionId], env);
    expect(revoked.code, revoked.output).toBe(0);
    expect(await stream.terminal()).toEqual(REVOKED);

    const provision = await cli(["infra", "provision"], env);
    expect(provision.code, provision.output).toBe(0);
    const check = await cli(["infra", "provision", "--check"], env);
    expect(check.code, check.output).toBe(0);
    // Every master was asked for its eviction policy.
    for (const port of await cluster.masters()) {
      expect(check.output).toContain(`maxmemory-policy on 127.0.0.1:${port}: noeviction`);
    }
  });

  it("keep every event while the client-events stream's slot moves to another master", async () => {
    const phone = newDevice("judy");
    const laptop = newDevice("judy");
    await activate(phone, laptop);
    const onFirst = subscribe(first.grpc, subscribeRequest(phone), cleanup);
    const onSecond = subscribe(second.grpc, subscribeRequest(laptop), cleanup);
    await Promise.all([onFirst.received(1), onSecond.received(1)]);

    const slot = await cluster.slotOf(first.clientEvents);
    const from = await cluster.masterOf(slot);
    const to = (await cluster.masters()).find((port) => port !== from)!;
    const published: string[] = [];
    let moving = true;
    const publishing = (async () => {
      let index = 0;
      while (moving || index < 20) {
        published.push(
          await first.publish({ userId: "judy", eventType: "demo.seq", payload: String(index) }),
        );
        index += 1;
        await new Promise((wake) => setTimeout(wake, 5));
      }
    })();
    // Events keep coming while the key sits on the new master and the slot is
    // still migrating (ASK redirections), and after the move (MOVED).
    await cluster.moveSlot(slot, to, () => new Promise((wake) => setTimeout(wake, 200)));
    moving = false;
    await publishing;
    expect(await cluster.masterOf(slot)).toBe(to);
    expect(published.length).toBeGreaterThan(20);

    for (const stream of [onFirst, onSecond]) {
      const events = await stream.received(1 + published.length);
      expect(eventIds(events.slice(1))).toEqual(published);
      expect(payloads(events)).toEqual(published.map((_, index) => String(index)));
    }
  });

  it("end an open stream to resume when its user's channel moves with its slot, never a silent gap", async () => {
    const device = newDevice("peggy");
    await activate(device);
    const stream = subscribe(first.grpc, subscribeRequest(device), cleanup);
    await stream.received(1);
    const seen = await first.publish({ userId: "peggy", eventType: "demo.seq", payload: "seen" });
    await stream.received(2);

    const slot = await cluster.slotOf(createKeyspace().eventsChannel("peggy"));
    const from = await cluster.masterOf(slot);
    const to = (await cluster.masters()).find((port) => port !== from)!;
    const published: string[] = [];
    let moving = true;
    const publishing = (async () => {
      while (moving || published.length < 20) {
        const payload = `${published.length}`;
        published.push(await first.publish({ userId: "peggy", eventType: "demo.seq", payload }));
        await new Promise((wake) => setTimeout(wake, 5));
      }
    })();
    await cluster.moveSlot(slot, to, () => new Promise((wake) => setTimeout(wake, 200)));
    moving = false;
    await publishing;

    // Messages published while the channel moved may never have reached the
    // node: the stream ends, and a resume from its last event gets the rest.
    expect(await stream.terminal()).toEqual({
      status: "UNAVAILABLE",
      details: "push stream interrupted: events may have been lost; reconnect to resume",
    });
    const got = stream.events.slice(2).map((event) => event.eventId);
    expect(got).toEqual(published.slice(0, got.length));
    const lastEventId = stream.events.at(-1)!.eventId;
    expect([seen, ...got].at(-1)).toBe(lastEventId);
    const rest = published.slice(got.length);
    expect(await resumeUntil(first, device, lastEventId, rest.length)).toEqual(rest);
  });

  it("keep a user's history complete while its slot moves, so a resume on the other node recovers", async () => {
    const device = newDevice("oscar");
    await activate(device);
    const before = subscribe(first.grpc, subscribeRequest(device), cleanup);
    await before.received(1);
    const seenId = await first.publish({ userId: "oscar", eventType: "demo.seq", payload: "seen" });
    await before.received(2);
    before.cancel();

    const historyKey = createKeyspace().historyKey("oscar");
    const slot = await cluster.slotOf(historyKey);
    const from = await cluster.masterOf(slot);
    const to = (await cluster.masters()).find((port) => port !== from)!;
    const missed: string[] = [];
    let moving = true;
    const publishing = (async () => {
      while (moving || missed.length < 20) {
        missed.push(
          await first.publish({
            userId: "oscar",
            eventType: "demo.seq",
            payload: `${missed.length}`,
          }),
        );
        await new Promise((wake) => setTimeout(wake, 5));
      }
    })();
    await cluster.moveSlot(slot, to, () => new Promise((wake) => setTimeout(wake, 200)));
    moving = false;
    await publishing;
    expect(await cluster.masterOf(slot)).toBe(to);
    await waitFor(
      "the router to copy every event into the moved history",
      async () => (await publisher.xlen(historyKey)) >= missed.length + 1,
    );

    // A node may end the stream once to resume (its subscriber saw the slot
    // move): the device resumes again, recovered each time.
    expect(await resumeUntil(second, device, seenId, missed.length)).toEqual(missed);
  });

  // Last: it leaves the cluster with a promoted replica in place of a master.
  it("fail calls closed while a master is down, and serve calls and events again after its replica takes over", async () => {
    const phone = newDevice("mallory");
    const laptop = newDevice("mallory");
    await activate(phone, laptop);
    const onFirst = subscribe(first.grpc, subscribeRequest(phone), cleanup);
    const onSecond = subscribe(second.grpc, subscribeRequest(laptop), cleanup);
    await Promise.all([onFirst.received(1), onSecond.received(1)]);

    // The master of the client-events stream, and request ids whose replay
    // reservation lives on it.
    const victim = await cluster.masterOf(await cluster.slotOf(first.clientEvents));
    const keyspace = createKeyspace();
    const onVictim: string[] = [];
    for (let index = 0; onVictim.length < 40; index += 1) {
      const requestId = `failover-${index}`;
      const slot = await cluster.slotOf(keyspace.replayKey(phone.deviceSessionId, requestId));
      if ((await cluster.masterOf(slot)) === victim) onVictim.push(requestId);
    }

    await cluster.kill(victim);
    const startedAt = Date.now();
    expect(await execute(first.grpc, phone, cleanup, { requestId: onVictim.shift()! })).toEqual({
      status: "UNAVAILABLE",
      details: expect.any(String),
    });
    expect(Date.now() - startedAt).toBeLessThan(1500);

    // Until the replica takes over: UNAVAILABLE at once, never a call accepted without its reservation.
    await cluster.waitHealthy();
    for (const node of [first, second]) {
      let outcome = { status: "", details: "" };
      while (outcome.status !== "OK" && onVictim.length > 0) {
        outcome = await execute(node.grpc, phone, cleanup, { requestId: onVictim.shift()! });
        if (outcome.status !== "OK") {
          expect(outcome.status).toBe("UNAVAILABLE");
          await new Promise((wake) => setTimeout(wake, 100));
        }
      }
      expect(outcome).toEqual({ status: "OK", details: "ok" });
    }
    // Both nodes found the promoted replica well before their periodic slot refresh.
    expect(Date.now() - startedAt).toBeLessThan(15_000);

    // The router finds the ingress on the promoted replica and routes on.
    let id: string | undefined;
    while (id === undefined) {
      id = await first.publish({ userId: "mallory", eventType: "demo.after" }).catch(async () => {
        await new Promise((wake) => setTimeout(wake, 250));
        return undefined;
      });
    }
    // Each stream gets the event live, or — its node's subscriber lost a
    // shard, so messages may have been missed — ends to resume, and the
    // resume recovers it: never a silent gap.
    for (const [node, stream, device] of [
      [first, onFirst, phone],
      [second, onSecond, laptop],
    ] as const) {
      const events = await stream.received(2).catch(() => undefined);
      if (events !== undefined) {
        expect(eventIds(events.slice(1))).toEqual([id]);
        continue;
      }
      expect(stream.ended).toEqual({
        status: "UNAVAILABLE",
        details: "push stream interrupted: events may have been lost; reconnect to resume",
      });
      const lastEventId = stream.events[0]!.eventId;
      const resumed = subscribe(node.grpc, subscribeRequest(device, { lastEventId }), cleanup);
      const again = await resumed.received(2);
      expect(again[0]!.eventId).toBe(lastEventId);
      expect(eventIds(again.slice(1))).toEqual([id]);
    }
  }, 60_000);
});

describe("a gateway node in cluster mode at startup", () => {
  /** The error `start()` rejects with, and how long it took. */
  async function startFailure(env: Record<string, string>) {
    const gateway = createGateway({ config: loadConfig(env), logger: createMemoryLogger() });
    const startedAt = Date.now();
    const error = await gateway.start().then(
      () => gateway.stop().then(() => undefined),
      (caught: Error) => caught,
    );
    return { error, ms: Date.now() - startedAt };
  }

  it("fails within GATEWAY_REDIS_PING_TIMEOUT, naming the seed, when no node answers", async () => {
    const seed = { addr: `127.0.0.1:${await freePort()}`, password: cluster.password };
    const { error, ms } = await startFailure(
      gatewayEnv(seed, { ...CLUSTER_ENV, GATEWAY_REDIS_PING_TIMEOUT: "500ms" }),
    );
    expect(error?.message).toMatch(new RegExp(`^Redis PING to ${seed.addr} failed`));
    expect(ms).toBeLessThan(3000);
  });

  it("fails naming WRONGPASS, never the password, when the password is wrong", async () => {
    // A node that is still running: the failover test may have killed the first one.
    const seed = { addr: cluster.nodes.find((node) => node.running)!.addr, password: "x" };
    const { error } = await startFailure(
      gatewayEnv(seed, { ...CLUSTER_ENV, GATEWAY_REDIS_PASSWORD: "not-the-password" }),
    );
    expect(error?.message).toMatch(/^Redis PING to 127\.0\.0\.1:\d+ failed: WRONGPASS/);
    expect(error?.message).not.toContain("not-the-password");
  });

  it("fails when the seed is a Redis without cluster support", async () => {
    const single = await startRedis();
    try {
      const { error } = await startFailure(
        gatewayEnv(single, { ...CLUSTER_ENV, GATEWAY_REDIS_PING_TIMEOUT: "1s" }),
      );
      expect(error?.message).toMatch(
        new RegExp(`^Redis PING to ${single.addr} failed: .*cluster support disabled`),
      );
    } finally {
      await single.stop();
    }
  });
});

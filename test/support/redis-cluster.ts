/**
 * Starts a real Redis Cluster for one test file: `redis-server` processes on
 * free loopback ports with a password (3 masters, 1 replica each by default),
 * joined by `redis-cli --cluster create`. Stops only the processes it started,
 * by their PIDs; their files live in a temporary directory removed after the
 * file's tests (./temp-dir.ts).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { Cluster, Redis } from "ioredis";
import { freeLoopbackPort, waitForRedisPing } from "../../runtime/dev/local-redis.js";
import { tempDir } from "./temp-dir.js";

const HOST = "127.0.0.1";

/** One `redis-server` of the cluster. */
export interface TestClusterNode {
  readonly port: number;
  /** `host:port`. */
  readonly addr: string;
  /** Whether this harness's process for it is still running. */
  readonly running: boolean;
}

/** A running test Redis Cluster. */
export interface TestRedisCluster {
  readonly host: string;
  readonly password: string;
  /** The first node's `host:port`: the seed `GATEWAY_REDIS_MASTER_ADDR` takes. */
  readonly addr: string;
  readonly nodes: readonly TestClusterNode[];
  /** A fresh `Cluster` client seeded with the first node (the caller quits it). */
  client(): Cluster;
  /** A fresh client of one node (the caller quits it). */
  nodeClient(port: number): Redis;
  /** The slot of `key`. */
  slotOf(key: string): Promise<number>;
  /** The port of the master that serves `slot` now. */
  masterOf(slot: number): Promise<number>;
  /** Ports of the masters that serve slots now. */
  masters(): Promise<number[]>;
  /**
   * Moves `slot` with its keys to the master on `toPort`, as a resharding
   * does: `SETSLOT … IMPORTING/MIGRATING`, `MIGRATE … KEYS` in batches, then
   * `SETSLOT … NODE` on every master. `betweenBatches` runs after each batch.
   */
  moveSlot(slot: number, toPort: number, betweenBatches?: () => Promise<void>): Promise<void>;
  /** SIGKILLs the node on `port`. */
  kill(port: number): Promise<void>;
  /**
   * Resolves once every running node reports `cluster_state:ok`, sees every
   * slot served by a running master with at least `replicasPerMaster`
   * replicas (default 0), and every replica is in sync with its master.
   */
  waitHealthy(replicasPerMaster?: number): Promise<void>;
  /** Stops every node this harness started; safe to call twice. */
  stop(): Promise<void>;
}

/** Starts a cluster of `masters` masters with `replicas` replicas each. */
export async function startRedisCluster(
  options: { masters?: number; replicas?: number } = {},
): Promise<TestRedisCluster> {
  const masterCount = options.masters ?? 3;
  const replicas = options.replicas ?? 1;
  const password = randomBytes(12).toString("hex");
  const dir = tempDir("redis-cluster");
  const used = new Set<number>();
  const port = async () => {
    for (;;) {
      const candidate = await freeLoopbackPort();
      if (!used.has(candidate)) {
        used.add(candidate);
        return candidate;
      }
    }
  };

  const processes = new Map<number, ChildProcess>();
  const stop = async (nodePort: number) => {
    const proc = processes.get(nodePort);
    processes.delete(nodePort);
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      proc.once("exit", () => resolve());
      proc.kill("SIGKILL");
    });
  };
  const stopAll = async () => {
    await Promise.all([...processes.keys()].map(stop));
  };

  const ports: number[] = [];
  try {
    for (let index = 0; index < masterCount * (1 + replicas); index += 1) {
      const nodePort = await port();
      // The cluster bus gets a port of its own: the default (port + 10000)
      // may be taken or out of range for a high ephemeral port.
      const busPort = await port();
      const proc = spawn(
        "redis-server",
        [
          "--port",
          String(nodePort),
          "--cluster-port",
          String(busPort),
          "--bind",
          HOST,
          "--cluster-enabled",
          "yes",
          "--cluster-config-file",
          join(dir, `nodes-${nodePort}.conf`),
          "--cluster-node-timeout",
          "2000",
          "--dir",
          dir,
          "--requirepass",
          password,
          "--masterauth",
          password,
          "--save",
          "",
          "--appendonly",
          "no",
          "--daemonize",
          "no",
          "--maxmemory-policy",
          "noeviction",
        ],
        { stdio: "ignore" },
      );
      processes.set(nodePort, proc);
      ports.push(nodePort);
    }
    for (const nodePort of ports) {
      await waitForRedisPing({ child: processes.get(nodePort)!, port: nodePort, password });
    }
    await createCluster(
      ports.map((nodePort) => `${HOST}:${nodePort}`),
      replicas,
      password,
    );
  } catch (error) {
    await stopAll();
    throw error;
  }

  const nodeClient = (nodePort: number) =>
    new Redis({ host: HOST, port: nodePort, password, lazyConnect: false });
  const onNode = async <T>(nodePort: number, run: (redis: Redis) => Promise<T>): Promise<T> => {
    const redis = nodeClient(nodePort);
    redis.on("error", () => {});
    try {
      return await run(redis);
    } finally {
      redis.disconnect();
    }
  };
  const running = () => [...processes.keys()];
  /** `CLUSTER SLOTS` of a running node: each range's master port. */
  const slotTable = async () => {
    const reply = await onNode(running()[0]!, (redis) => redis.cluster("SLOTS"));
    return reply.map(([first, last, master]) => ({ first, last, port: Number(master?.[1]) }));
  };
  const masterOf = async (slot: number) => {
    const range = (await slotTable()).find(({ first, last }) => first <= slot && slot <= last);
    if (range === undefined) throw new Error(`no master serves slot ${slot}`);
    return range.port;
  };
  const masters = async () => [...new Set((await slotTable()).map(({ port }) => port))];

  const waitHealthy = async (replicasPerMaster = 0) => {
    const deadline = Date.now() + 30_000;
    let last = "";
    while (Date.now() < deadline) {
      const states = await Promise.all(
        running().map((nodePort) =>
          onNode(nodePort, async (redis) => {
            const info = `${await redis.cluster("INFO")}\n${await redis.info("replication")}`;
            const slots = await redis.cluster("SLOTS");
            return { nodePort, info, slots };
          }).catch((error: Error) => ({ nodePort, info: error.message, slots: [] })),
        ),
      );
      const live = new Set(running());
      const problems = states.flatMap(({ nodePort, info, slots }) => {
        const found: string[] = [];
        if (!/cluster_state:ok/.test(info)) found.push(`${nodePort}: not cluster_state:ok`);
        if (/role:slave/.test(info) && !/master_link_status:up/.test(info)) {
          found.push(`${nodePort}: replica not in sync`);
        }
        const covered = slots.reduce((sum, [first, lastSlot]) => sum + lastSlot - first + 1, 0);
        if (covered !== 16_384) found.push(`${nodePort}: sees ${covered} slots served`);
        for (const [first, , master, ...copies] of slots) {
          if (!live.has(Number(master?.[1])))
            found.push(`${nodePort}: slot ${first} on a dead master`);
          if (copies.length < replicasPerMaster)
            found.push(`${nodePort}: slot ${first} lacks replicas`);
        }
        return found;
      });
      if (problems.length === 0) return;
      last = problems.slice(0, 4).join("; ");
      await new Promise((wake) => setTimeout(wake, 100));
    }
    throw new Error(`Redis Cluster not healthy within 30 s: ${last}`);
  };
  await waitHealthy(replicas);

  const myId = (nodePort: number) =>
    onNode(nodePort, async (redis) => String(await redis.cluster("MYID")));

  return {
    host: HOST,
    password,
    addr: `${HOST}:${ports[0]}`,
    get nodes() {
      return ports.map((nodePort) => ({
        port: nodePort,
        addr: `${HOST}:${nodePort}`,
        running: processes.has(nodePort),
      }));
    },
    client: () => new Cluster([{ host: HOST, port: ports[0]! }], { redisOptions: { password } }),
    nodeClient,
    slotOf: (key) =>
      onNode(running()[0]!, async (redis) => Number(await redis.cluster("KEYSLOT", key))),
    masterOf,
    masters,
    async moveSlot(slot, toPort, betweenBatches) {
      const fromPort = await masterOf(slot);
      if (fromPort === toPort) throw new Error(`slot ${slot} is already on ${toPort}`);
      const [fromId, toId] = await Promise.all([myId(fromPort), myId(toPort)]);
      await onNode(toPort, (redis) => redis.cluster("SETSLOT", slot, "IMPORTING", fromId));
      await onNode(fromPort, (redis) => redis.cluster("SETSLOT", slot, "MIGRATING", toId));
      await onNode(fromPort, async (redis) => {
        for (;;) {
          const keys = (await redis.cluster("GETKEYSINSLOT", slot, 10)) as string[];
          if (keys.length === 0) break;
          for (const key of keys) {
            await redis.call("MIGRATE", HOST, toPort, "", 0, 5000, "AUTH", password, "KEYS", key);
            await betweenBatches?.();
          }
        }
      });
      // The new owner first, then the old one, then everyone else.
      const others = (await masters()).filter((port) => port !== toPort && port !== fromPort);
      for (const nodePort of [toPort, fromPort, ...others]) {
        await onNode(nodePort, (redis) => redis.cluster("SETSLOT", slot, "NODE", toId));
      }
    },
    kill: stop,
    waitHealthy,
    stop: stopAll,
  };
}

/** Runs `redis-cli --cluster create` (password through `REDISCLI_AUTH`, never on the command line). */
function createCluster(addrs: readonly string[], replicas: number, password: string) {
  return new Promise<void>((resolve, reject) => {
    const cli = spawn(
      "redis-cli",
      ["--cluster", "create", ...addrs, "--cluster-replicas", String(replicas), "--cluster-yes"],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, REDISCLI_AUTH: password } },
    );
    let output = "";
    cli.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    cli.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    cli.once("error", reject);
    cli.once("exit", (code) =>
      code === 0
        ? resolve()
        : reject(
            new Error(`redis-cli --cluster create exited with ${code}: ${output.slice(-500)}`),
          ),
    );
  });
}

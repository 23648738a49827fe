/**
 * End-to-end ExecuteCommand over real gRPC: the gateway (authentication,
 * session cache, replay reservation in a real redis-server, the `demo.echo`
 * route, response signing) against a bare nice-grpc server that only echoes.
 *
 *   npx tsx bench/execute-command.ts
 *
 * Each round sends N requests with C in flight; every request has its own
 * request_id and a valid device signature, all signed before the clock
 * starts. Gateway and baseline rounds alternate; medians are reported. The
 * gateway/baseline ratio is what authentication, replay reservation and
 * response signing cost per call.
 */
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import {
  type Channel,
  ChannelCredentials,
  createChannel,
  createClient,
  createServer,
  ServerError,
  Status,
} from "nice-grpc";
import {
  EdgeGatewayServiceDefinition,
  type ExecuteCommandRequest,
} from "../proto/gen/edgegateway/v1/edge_gateway.js";
import {
  importGatewayKey,
  signExecuteCommandRequest,
  verifyExecuteCommandResponse,
} from "../runtime/kit/device-client.js";
import { seedDevices, startGateway } from "../test/support/gateway.js";
import { vectors } from "../test/support/keys.js";
import { startRedis } from "../test/support/redis-server.js";
import { removeTempDirs } from "../test/support/temp-dir.js";
import {
  fmt,
  interleave,
  mainThreadCpuMicros,
  median,
  percentile,
  printReport,
  ratio,
  settle,
  table,
  watchdog,
} from "./report.js";

const REQUESTS = 4_000;
const CONCURRENCY = 32;
const ROUNDS = 5;
/** Client connections; concurrent calls are spread over them. */
const CHANNELS = 4;
/** Device sessions the requests are spread over. */
const SESSIONS = 32;
const MESSAGE_TYPE = "demo.echo";
const PAYLOAD = Buffer.from('{"text":"hello from a device","seq":12345}');

interface RoundResult {
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** CPU time of this process (client, server and the libuv pool) per request. */
  readonly cpuMicrosPerRequest: number;
  /** CPU time of the event-loop thread (client and server) per request; Linux only. */
  readonly mainCpuMicrosPerRequest: number | undefined;
}

const testRedis = await startRedis();
watchdog("execute-command", 180_000, () => testRedis.stop());
// Run last to first: the temporary directories (the signer key) go last.
const cleanups: (() => unknown)[] = [removeTempDirs, () => testRedis.stop()];

try {
  const gateway = await startGateway(testRedis, {
    routes: {
      [MESSAGE_TYPE]: async (command) => ({ resultCode: "ok", payload: command.payload }),
    },
  });
  cleanups.push(() => gateway.stop());

  const seed = testRedis.client();
  cleanups.push(() => seed.quit());
  const devices = await seedDevices(seed, SESSIONS);

  // The baseline: the same service definition, answering with a response of
  // the same shape and size (a constant 64-byte "signature"), doing nothing else.
  const baseline = createServer();
  const fixedSignature = Buffer.alloc(64, 7);
  baseline.add(EdgeGatewayServiceDefinition, {
    async executeCommand(request) {
      return {
        protocolVersion: 1,
        requestId: request.requestId,
        resultCode: "ok",
        payload: request.payload,
        timestampMs: Date.now(),
        keyId: vectors.gateway_key.key_id,
        signature: fixedSignature,
      };
    },
    // biome-ignore lint/correctness/useYield: the baseline does not stream.
    async *subscribeEvents() {
      throw new ServerError(Status.UNIMPLEMENTED, "not part of the baseline");
    },
  });
  const baselinePort = await baseline.listen("127.0.0.1:0");
  cleanups.push(() => baseline.forceShutdown());

  const connect = (address: string) => {
    const channels: Channel[] = Array.from({ length: CHANNELS }, () =>
      createChannel(address, ChannelCredentials.createInsecure(), {
        "grpc.use_local_subchannel_pool": 1,
      }),
    );
    for (const channel of channels) cleanups.push(() => channel.close());
    return channels.map((channel) => createClient(EdgeGatewayServiceDefinition, channel));
  };
  const gatewayClients = connect(gateway.addresses.grpc);
  const baselineClients = connect(`127.0.0.1:${baselinePort}`);
  const gatewayKey = importGatewayKey(vectors.gateway_key.public_key_base64url);

  const runId = randomUUID().slice(0, 8);
  /** Signs `count` requests, each with its own request_id, fresh now. */
  function signRequests(label: string, count: number): ExecuteCommandRequest[] {
    const timestampMs = Date.now();
    return Array.from({ length: count }, (_, i) => {
      const device = devices[i % SESSIONS]!;
      return signExecuteCommandRequest(
        {
          deviceSessionId: device.deviceSessionId,
          messageType: MESSAGE_TYPE,
          requestId: `${runId}-${label}-${i}`,
          timestampMs,
          payload: PAYLOAD,
        },
        device.privateKey,
      );
    });
  }

  async function runRound(
    clients: ReturnType<typeof connect>,
    label: string,
    count: number,
    verifyFirst: boolean,
  ): Promise<RoundResult> {
    const requests = signRequests(label, count);
    const latencies = new Float64Array(count);
    let next = 0;
    await settle(50);
    const cpuBefore = process.cpuUsage();
    const mainBefore = mainThreadCpuMicros();
    const start = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async (_, worker) => {
        const client = clients[worker % CHANNELS]!;
        while (next < count) {
          const index = next++;
          const request = requests[index]!;
          const sent = performance.now();
          const response = await client.executeCommand(request);
          latencies[index] = performance.now() - sent;
          if (response.resultCode !== "ok" || response.requestId !== request.requestId) {
            throw new Error(`unexpected response to ${request.requestId}`);
          }
        }
      }),
    );
    const elapsedMs = performance.now() - start;
    const cpu = process.cpuUsage(cpuBefore);
    const mainAfter = mainThreadCpuMicros();
    if (verifyFirst) {
      // Outside the timed part: one response is checked end to end.
      const probe = signRequests(`${label}-probe`, 1)[0]!;
      const response = await clients[0]!.executeCommand(probe);
      await verifyExecuteCommandResponse(response, probe.deviceSessionId, gatewayKey);
    }
    return {
      requestsPerSecond: count / (elapsedMs / 1000),
      p50Ms: percentile(latencies, 50),
      p99Ms: percentile(latencies, 99),
      cpuMicrosPerRequest: (cpu.user + cpu.system) / count,
      mainCpuMicrosPerRequest:
        mainBefore === undefined || mainAfter === undefined
          ? undefined
          : (mainAfter - mainBefore) / count,
    };
  }

  const variants = [
    {
      name: "gateway",
      round: (round: number) => runRound(gatewayClients, `g${round}`, REQUESTS, true),
    },
    {
      name: "baseline (bare nice-grpc echo)",
      round: (round: number) => runRound(baselineClients, `b${round}`, REQUESTS, false),
    },
  ];

  // Warm-up: connections, JIT, session cache.
  await runRound(gatewayClients, "warm", 500, true);
  await runRound(baselineClients, "warm", 500, false);

  const results = await interleave(variants, ROUNDS, (name, round, result) => {
    console.error(
      `round ${round + 1}/${ROUNDS} ${name}: ${fmt(result.requestsPerSecond)} req/s, p50 ${fmt(result.p50Ms, 2)} ms, p99 ${fmt(result.p99Ms, 2)} ms`,
    );
  });
  const summary = (name: string) => {
    const rounds = results.get(name) ?? [];
    return {
      rps: median(rounds.map((r) => r.requestsPerSecond)),
      p50: median(rounds.map((r) => r.p50Ms)),
      p99: median(rounds.map((r) => r.p99Ms)),
      cpu: median(rounds.map((r) => r.cpuMicrosPerRequest)),
      main: median(rounds.map((r) => r.mainCpuMicrosPerRequest ?? Number.NaN)),
    };
  };
  const g = summary(variants[0]!.name);
  const b = summary(variants[1]!.name);
  const rows = [
    ["gateway", fmt(g.rps), fmt(g.p50, 2), fmt(g.p99, 2), fmt(g.cpu, 1), fmt(g.main, 1)],
    [
      "baseline (bare nice-grpc echo)",
      fmt(b.rps),
      fmt(b.p50, 2),
      fmt(b.p99, 2),
      fmt(b.cpu, 1),
      fmt(b.main, 1),
    ],
    [
      "gateway / baseline",
      ratio(g.rps / b.rps),
      ratio(g.p50 / b.p50),
      ratio(g.p99 / b.p99),
      ratio(g.cpu / b.cpu),
      ratio(g.main / b.main),
    ],
  ];

  printReport(
    "ExecuteCommand end to end over gRPC",
    [
      `${REQUESTS} requests at concurrency ${CONCURRENCY} over ${CHANNELS} connections per round, ${ROUNDS} interleaved rounds per side; medians.`,
      `${SESSIONS} device sessions, unique request_ids, requests signed before timing; client, server and redis-server on one machine.`,
    ],
    table(
      ["server", "req/s", "p50 ms", "p99 ms", "process CPU µs/req", "event-loop CPU µs/req"],
      rows,
    ),
  );
} finally {
  for (const cleanup of cleanups.reverse()) {
    try {
      await cleanup();
    } catch {
      // Best effort: everything else still gets stopped.
    }
  }
}

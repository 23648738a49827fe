/**
 * The operational files: the Redis provisioning script against a real
 * redis-server, and static checks of the container image, the Kubernetes
 * manifests and the compose file with the linters this machine has.
 */
import { spawn, spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { runProvisionCli } from "../runtime/cli/provision-command.js";
import { CONFIG_VARIABLES, loadConfig, parseDuration } from "../runtime/config/config.js";
import { provisionRedis } from "../runtime/redis/provision.js";
import { freePort, startRedis, type TestRedis } from "./support/redis-server.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SCRIPT = join(ROOT, "infra", "provision-redis.ts");
const SESSION_STREAM = "gateway:session_events";
const CLIENT_STREAM = "gateway:client_events";

interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the provisioning command line in this process, with only the given environment. */
async function runCli(args: readonly string[], env: Record<string, string>): Promise<CliResult> {
  let stdout = "";
  let stderr = "";
  const code = await runProvisionCli(args, env, {
    stdout: (line) => {
      stdout += `${line}\n`;
    },
    stderr: (line) => {
      stderr += `${line}\n`;
    },
  });
  return { code, stdout, stderr };
}

/** Runs the provisioning script as its own process, with only the given environment (plus PATH). */
function runScript(args: readonly string[], env: Record<string, string>): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", SCRIPT, ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 25_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** `XINFO STREAM` as a record. */
async function streamInfo(redis: Redis, key: string): Promise<Record<string, unknown>> {
  const reply = (await redis.call("XINFO", "STREAM", key)) as unknown[];
  const record: Record<string, unknown> = {};
  for (let index = 0; index + 1 < reply.length; index += 2) {
    record[String(reply[index])] = reply[index + 1];
  }
  return record;
}

describe("provision-redis", () => {
  let server: TestRedis;
  let redis: Redis;
  let env: Record<string, string>;

  beforeAll(async () => {
    server = await startRedis();
    redis = server.client();
    env = { GATEWAY_REDIS_MASTER_ADDR: server.addr, GATEWAY_REDIS_PASSWORD: server.password };
  });

  afterAll(async () => {
    redis?.disconnect();
    await server?.stop();
  });

  beforeEach(async () => {
    await redis.flushall();
    await redis.config("SET", "maxmemory-policy", "noeviction");
  });

  it("creates both missing streams empty: no entry ever added, no group left, last id 0-0", async () => {
    const result = await runCli([], env);

    expect(result.code, result.stderr).toBe(0);
    for (const key of [SESSION_STREAM, CLIENT_STREAM]) {
      expect(await redis.type(key)).toBe("stream");
      const info = await streamInfo(redis, key);
      expect(info.length).toBe(0);
      expect(info["last-generated-id"]).toBe("0-0");
      expect(info["entries-added"]).toBe(0);
      expect(info.groups).toBe(0);
      expect(await redis.xrange(key, "-", "+")).toEqual([]);
      expect(result.stdout).toContain(`stream ${key}`);
    }
    expect(result.stdout).toMatch(/created; length 0, first -, last -, last generated id 0-0/);
    expect(result.stdout).toContain("maxmemory-policy: noeviction");
  });

  it("is idempotent: a second run changes nothing and reports the existing entries", async () => {
    const first = await redis.xadd(CLIENT_STREAM, "*", "user_id", "u1", "event_type", "a");
    await redis.xadd(CLIENT_STREAM, "*", "user_id", "u1", "event_type", "b");
    const last = await redis.xadd(CLIENT_STREAM, "*", "user_id", "u1", "event_type", "c");
    const before = await redis.xrange(CLIENT_STREAM, "-", "+");

    const once = await runCli([], env);
    const twice = await runCli([], env);

    expect(once.code, once.stderr).toBe(0);
    expect(twice.code, twice.stderr).toBe(0);
    expect(await redis.xrange(CLIENT_STREAM, "-", "+")).toEqual(before);
    expect(await redis.xlen(SESSION_STREAM)).toBe(0);
    expect(twice.stdout).toContain(
      `stream ${CLIENT_STREAM} (client events): exists; length 3, first ${first}, last ${last}, last generated id ${last}`,
    );
    expect(twice.stdout).toContain(`stream ${SESSION_STREAM} (session events): exists; length 0`);
  });

  // --check must be safe to run against production: INFO commandstats shows
  // every command the server executed, so no write may appear there.
  it("--check sends no write command, fails on missing streams and creates nothing", async () => {
    await redis.config("RESETSTAT");

    const result = await runCli(["--check"], env);

    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`stream ${SESSION_STREAM} (session events) does not exist`);
    expect(result.stderr).toContain(`stream ${CLIENT_STREAM} (client events) does not exist`);
    expect(await redis.exists(SESSION_STREAM, CLIENT_STREAM)).toBe(0);
    const stats = await redis.info("commandstats");
    expect(stats).not.toMatch(/cmdstat_(xgroup|xtrim|xadd|xdel|del|unlink|set|config\|set)\b/);
    expect(stats).toContain("cmdstat_type");
  });

  it("--check passes on provisioned streams and leaves even an over-long stream untrimmed", async () => {
    expect((await runCli([], env)).code).toBe(0);
    for (let index = 0; index < 250; index += 1) {
      await redis.xadd(SESSION_STREAM, "*", "device_session_id", `d${index}`);
    }
    await redis.config("RESETSTAT");

    const result = await runCli(["--check", "--max-len", "10"], env);

    expect(result.code, result.stderr).toBe(0);
    expect(await redis.xlen(SESSION_STREAM)).toBe(250);
    expect(result.stderr).toContain("holds 250 entries, well over the ~10 publishers keep");
    expect(await redis.info("commandstats")).not.toMatch(/cmdstat_(xgroup|xtrim|xadd|xdel)\b/);
  });

  it("refuses a key of another type, leaves it as it is and exits non-zero", async () => {
    await redis.set(SESSION_STREAM, "not a stream");

    for (const args of [[], ["--check"]]) {
      const result = await runCli(args, env);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(`key ${SESSION_STREAM} holds a string, not a stream`);
      expect(await redis.get(SESSION_STREAM)).toBe("not a stream");
    }
  });

  it("warns loudly when maxmemory-policy is not noeviction, and not when it is", async () => {
    await redis.config("SET", "maxmemory-policy", "allkeys-lru");
    const evicting = await runCli([], env);

    expect(evicting.code, evicting.stderr).toBe(0);
    expect(evicting.stderr).toMatch(/^WARNING: maxmemory-policy is allkeys-lru, not noeviction/m);
    expect(evicting.stderr).toContain("replay reservations");

    await redis.config("SET", "maxmemory-policy", "noeviction");
    const safe = await runCli([], env);

    expect(safe.code, safe.stderr).toBe(0);
    expect(safe.stderr).not.toContain("WARNING");
    expect(safe.stdout).toContain("maxmemory-policy: noeviction");
  });

  it("reports the retention and applies XTRIM MAXLEN ~ N once with --trim", async () => {
    for (let index = 0; index < 300; index += 1) {
      await redis.xadd(CLIENT_STREAM, "*", "user_id", "u", "event_type", "t");
    }
    const plain = await runCli([], env);
    expect(plain.stdout).toContain("retention: ~100000 entries per stream");
    expect(await redis.xlen(CLIENT_STREAM)).toBe(300);

    const trimmed = await runCli(["--trim", "--max-len", "10"], env);

    expect(trimmed.code, trimmed.stderr).toBe(0);
    const length = await redis.xlen(CLIENT_STREAM);
    // Approximate trimming removes whole radix-tree nodes only.
    expect(length).toBeLessThan(300);
    expect(length).toBeGreaterThanOrEqual(10);
    expect(trimmed.stdout).toContain(`trimmed ${300 - length}`);
  });

  it("reads the gateway's variables by the gateway's rules: stream names, DB, deprecated variables", async () => {
    const custom = {
      ...env,
      GATEWAY_REDIS_DB: "3",
      GATEWAY_SESSION_EVENTS_REDIS_STREAM: "app:sessions",
      GATEWAY_CLIENT_EVENTS_REDIS_STREAM: "app:events",
      // Variables the provisioner does not use cannot fail it.
      GATEWAY_PUBLIC_HTTP_ADDR: "not an address",
    };
    const result = await runCli([], custom);
    expect(result.code, result.stderr).toBe(0);
    await redis.select(3);
    try {
      expect(await redis.type("app:sessions")).toBe("stream");
      expect(await redis.type("app:events")).toBe("stream");
    } finally {
      await redis.select(0);
    }
    expect(await redis.exists(SESSION_STREAM)).toBe(0);

    for (const name of ["GATEWAY_REDIS_TLS_ENABLED", "GATEWAY_REDIS_USERNAME"]) {
      const refused = await runCli([], { ...env, [name]: "" });
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain(`error: ${name}: is no longer accepted`);
    }
    const missing = await runCli([], { GATEWAY_REDIS_PASSWORD: server.password });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("GATEWAY_REDIS_MASTER_ADDR: is required");
    const same = await runCli([], { ...env, GATEWAY_CLIENT_EVENTS_REDIS_STREAM: SESSION_STREAM });
    expect(same.code).toBe(1);
    expect(same.stderr).toContain("both name");
  });

  it("fails promptly with a clear error when Redis is unreachable, and on bad usage", async () => {
    const port = await freePort();
    const started = Date.now();
    const unreachable = await runCli([], {
      ...env,
      GATEWAY_REDIS_MASTER_ADDR: `127.0.0.1:${port}`,
      GATEWAY_REDIS_PING_TIMEOUT: "500ms",
    });
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toContain(`cannot reach Redis at 127.0.0.1:${port}`);
    expect(Date.now() - started).toBeLessThan(10_000);

    const usage = await runCli(["--check", "--trim"], env);
    expect(usage.code).toBe(2);
    const badLength = await runCli(["--max-len", "0"], env);
    expect(badLength.code).toBe(2);
  });

  it("never prints the password, whatever the outcome", async () => {
    const wrongPassword = `${server.password}-wrong`;
    await redis.set(CLIENT_STREAM, "wrong type");
    await redis.config("SET", "maxmemory-policy", "volatile-lru");
    const runs = [
      await runCli([], env),
      await runCli(["--check"], env),
      await runCli(["--trim"], env),
      await runCli([], { ...env, GATEWAY_REDIS_PASSWORD: wrongPassword }),
      await runCli([], { ...env, GATEWAY_REDIS_DB: "99" }),
      await runCli([], { ...env, GATEWAY_REDIS_TLS_ENABLED: "true" }),
      await runCli([], { ...env, GATEWAY_REDIS_MASTER_ADDR: `127.0.0.1:${await freePort()}` }),
    ];

    expect(runs[3]?.code).toBe(1);
    expect(runs[3]?.stderr).toMatch(/WRONGPASS|NOAUTH|invalid/i);
    for (const run of runs) {
      expect(run.stdout + run.stderr).not.toContain(server.password);
    }
  });

  // The same command line as a real process: exit status, stdout for the
  // report, stderr for warnings and errors.
  it("runs as a script: reports on stdout, fails on stderr with a non-zero exit status", async () => {
    await redis.config("SET", "maxmemory-policy", "allkeys-lru");
    const checked = await runScript(["--check"], env);
    const provisioned = await runScript([], env);

    expect(checked.code).toBe(1);
    expect(checked.stderr).toContain(
      `error: stream ${SESSION_STREAM} (session events) does not exist`,
    );
    expect(checked.stderr).toContain("WARNING: maxmemory-policy is allkeys-lru");
    expect(provisioned.code, provisioned.stderr).toBe(0);
    expect(provisioned.stdout).toContain(`stream ${CLIENT_STREAM} (client events): created`);
    expect(provisioned.stdout).toMatch(/^ok, with 1 warning\(s\) above$/m);
    for (const run of [checked, provisioned]) {
      expect(run.stdout + run.stderr).not.toContain(server.password);
    }
  });

  it("provisionRedis reports on a caller's client without closing it", async () => {
    const lines: string[] = [];
    const log = { info: (l: string) => lines.push(l), warn: () => {}, error: () => {} };
    const options = { sessionEventsStream: SESSION_STREAM, clientEventsStream: CLIENT_STREAM, log };

    const created = await provisionRedis(redis, options);
    const checked = await provisionRedis(redis, { ...options, check: true });

    expect(created.ok).toBe(true);
    expect(created.streams.map((stream) => stream.state)).toEqual(["created", "created"]);
    expect(checked.ok).toBe(true);
    expect(checked.streams).toEqual([
      expect.objectContaining({ key: SESSION_STREAM, state: "exists", length: 0 }),
      expect.objectContaining({ key: CLIENT_STREAM, state: "exists", length: 0 }),
    ]);
    expect(checked.maxmemoryPolicy).toBe("noeviction");
    expect(await redis.ping()).toBe("PONG");
    expect(lines.length).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------------------
// Static checks of the image and the manifests.

const requireFromHere = createRequire(import.meta.url);

/** A package the test uses if installed (a devDependency), else `undefined`. */
function optionalPackage<T>(name: string): T | undefined {
  try {
    return requireFromHere(name) as T;
  } catch {
    return undefined;
  }
}

/** Whether a command runs here (`--version` exits 0). */
function hasCommand(command: string, args: readonly string[] = ["--version"]): boolean {
  const result = spawnSync(command, args, { stdio: "ignore", timeout: 20_000 });
  return result.status === 0;
}

function readText(path: string): string {
  return readFileSync(join(ROOT, path), "utf8");
}

interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

/** Dockerfile instructions, continuation lines joined, comments dropped. */
function dockerfileInstructions(text: string): Instruction[] {
  const instructions: Instruction[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (pending === "" && (line === "" || line.startsWith("#"))) continue;
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1).trim()} `;
      continue;
    }
    const full = (pending + line).trim();
    pending = "";
    const space = full.indexOf(" ");
    instructions.push({
      keyword: full.slice(0, space).toUpperCase(),
      args: full.slice(space + 1).trim(),
    });
  }
  return instructions;
}

describe("container image (infra/Dockerfile, .dockerignore)", () => {
  const dockerfile = readText("infra/Dockerfile");
  const instructions = dockerfileInstructions(dockerfile);
  const stageStarts = instructions.flatMap((instruction, index) =>
    instruction.keyword === "FROM" ? [index] : [],
  );
  const runtime = instructions.slice(stageStarts.at(-1));
  const build = instructions.slice(stageStarts[0], stageStarts.at(-1));

  it("passes the dockerfile-utils linter", (context) => {
    const linter = optionalPackage<{ validate(content: string): { message: string }[] }>(
      "dockerfile-utils",
    );
    if (linter === undefined) {
      return context.skip("dockerfile-utils is not installed (npm devDependency dockerfile-utils)");
    }
    expect(linter.validate(dockerfile).map((diagnostic) => diagnostic.message)).toEqual([]);
  });

  it("builds on node:24-slim (npm ci, build, prune) and runs on node:24-slim", () => {
    expect(stageStarts).toHaveLength(2);
    expect(instructions[stageStarts[0]!]?.args).toBe("node:24-slim AS build");
    expect(runtime[0]?.args).toBe("node:24-slim");
    const buildRuns = build
      .filter((instruction) => instruction.keyword === "RUN")
      .map((instruction) => instruction.args)
      .join(" && ");
    expect(buildRuns).toMatch(/npm ci\b.*npm run build\b.*npm prune --omit=dev\b/);
  });

  // The image's Node is one the suite runs on in CI, and package.json admits it.
  it("runs the Node major CI tests (.ci/run) and package.json's engines admits", () => {
    const imageMajor = /^node:(\d+)-slim\b/.exec(runtime[0]?.args ?? "")?.[1];
    const ciMajors = [...readText(".ci/run").matchAll(/\bnode@(\d+)\b/g)].map((match) => match[1]);
    expect(ciMajors).toEqual([imageMajor]);
    const engines = JSON.parse(readText("package.json")).engines.node as string;
    const floor = /^>=(\d+)\.(\d+)$/.exec(engines);
    expect(floor, `engines.node is ${engines}`).not.toBeNull();
    expect(Number(imageMajor)).toBeGreaterThanOrEqual(Number(floor![1]));
  });

  it("ships only dist, production node_modules, package.json and proto", () => {
    const copies = runtime.filter((instruction) => instruction.keyword === "COPY");
    expect(copies.every((copy) => copy.args.startsWith("--from=build "))).toBe(true);
    const sources = copies.map((copy) => copy.args.split(/\s+/)[1]?.replace(/^\/app\//, ""));
    expect(sources.sort()).toEqual(["dist", "node_modules", "package.json", "proto"]);
    expect(runtime.some((instruction) => instruction.keyword === "ADD")).toBe(false);
  });

  it("runs as a numeric non-root user with NODE_ENV=production and the three ports exposed", () => {
    const users = runtime.filter((instruction) => instruction.keyword === "USER");
    const user = users.at(-1)?.args ?? "root";
    expect(user).toMatch(/^[1-9]\d*(:\d+)?$/);
    expect(runtime).toContainEqual({ keyword: "ENV", args: "NODE_ENV=production" });
    const exposed = runtime
      .filter((instruction) => instruction.keyword === "EXPOSE")
      .flatMap((instruction) => instruction.args.split(/\s+/));
    expect(exposed.sort()).toEqual(["8080", "9090", "9464"]);
  });

  // SIGTERM must reach the gateway: tini is PID 1 and execs node directly
  // (exec form, no shell, no npm in between).
  it("starts the bin under tini in exec form, so SIGTERM reaches the gateway", () => {
    const entrypoint = runtime.find((instruction) => instruction.keyword === "ENTRYPOINT");
    expect(JSON.parse(entrypoint?.args ?? "null")).toEqual([
      "/usr/bin/tini",
      "--",
      "node",
      "dist/runtime/bin.js",
    ]);
    expect(runtime.some((instruction) => instruction.keyword === "CMD")).toBe(false);
    expect(dockerfile).toMatch(/apt-get install -y --no-install-recommends tini/);
  });

  it(".dockerignore keeps dependencies, outputs, VCS data and secrets out, and the build's inputs in", () => {
    const patterns = readText(".dockerignore")
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "" && !line.startsWith("#"));
    const ignored = (path: string) =>
      patterns.some((pattern) => {
        const regex = new RegExp(
          `^${pattern
            .replace(/[.+^${}()|[\]\\]/g, "\\$&")
            .replace(/\*\*/g, "\0")
            .replace(/\*/g, "[^/]*")
            .replace(/\0/g, ".*")}(/.*)?$`,
        );
        return regex.test(path);
      });

    for (const path of ["node_modules", "dist/index.js", ".git/HEAD", ".env", "signer-key.pem"]) {
      expect(ignored(path), path).toBe(true);
    }
    for (const path of [
      "package.json",
      "package-lock.json",
      "tsconfig.json",
      "tsconfig.build.json",
      "index.ts",
      "handlers/errors.ts",
      "runtime/bin.ts",
      "runtime/config/config.ts",
      "proto/edgegateway/v1/edge_gateway.proto",
      "infra/provision-redis.ts",
    ]) {
      expect(ignored(path), path).toBe(false);
    }
  });
});

type Manifest = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; annotations?: Record<string, string> };
  // biome-ignore lint/suspicious/noExplicitAny: manifests are checked field by field below
  spec?: any;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
};

const K8S_DIR = join(ROOT, "infra", "k8s");

function loadManifests(file: string): Manifest[] {
  const documents = parseAllDocuments(readFileSync(join(K8S_DIR, file), "utf8"));
  return documents.map((document) => {
    expect(document.errors, file).toEqual([]);
    return document.toJS() as Manifest;
  });
}

const YAMLLINT_CONFIG = "{extends: default, rules: {line-length: {max: 100}}}";

describe("Kubernetes manifests (infra/k8s)", () => {
  const files = readdirSync(K8S_DIR).filter((file) => file.endsWith(".yaml"));
  const objects = files
    .filter((file) => file !== "kustomization.yaml")
    .flatMap((file) => loadManifests(file).map((object) => ({ file, object })));
  const find = (kind: string, name: string): Manifest => {
    const found = objects.find(
      ({ object }) => object.kind === kind && object.metadata.name === name,
    );
    if (found === undefined) throw new Error(`no ${kind} ${name} in infra/k8s`);
    return found.object;
  };
  const deployment = find("Deployment", "edge-gateway");
  const job = find("Job", "edge-gateway-provision");
  const configMap = find("ConfigMap", "edge-gateway-config");
  const container = deployment.spec.template.spec.containers[0];
  const podSpec = deployment.spec.template.spec;

  it("pass yamllint", (context) => {
    if (!hasCommand("yamllint")) {
      return context.skip("yamllint is not installed (Debian package yamllint)");
    }
    const result = spawnSync(
      "yamllint",
      ["-s", "-f", "parsable", "-d", YAMLLINT_CONFIG, K8S_DIR, join(ROOT, "infra", "compose.yaml")],
      { encoding: "utf8" },
    );
    expect(result.stdout + result.stderr).toBe("");
    expect(result.status).toBe(0);
  });

  // kubernetes-models validates each object against the Kubernetes API's
  // OpenAPI schema (types, required fields, enums); it does not flag unknown
  // fields, which the field checks below cover for what matters.
  it("validate against the Kubernetes API schemas (kubernetes-models)", (context) => {
    const modules: Record<string, string> = {
      "v1/ConfigMap": "kubernetes-models/v1/ConfigMap",
      "v1/Secret": "kubernetes-models/v1/Secret",
      "v1/Service": "kubernetes-models/v1/Service",
      "apps/v1/Deployment": "kubernetes-models/apps/v1/Deployment",
      "batch/v1/Job": "kubernetes-models/batch/v1/Job",
      "policy/v1/PodDisruptionBudget": "kubernetes-models/policy/v1/PodDisruptionBudget",
    };
    if (optionalPackage("kubernetes-models") === undefined) {
      return context.skip(
        "kubernetes-models is not installed (npm devDependency kubernetes-models)",
      );
    }
    // The validator is live: a wrongly typed field fails it.
    const { Deployment } = requireFromHere("kubernetes-models/apps/v1/Deployment") as Record<
      string,
      new (
        data: unknown,
      ) => { validate(): void }
    >;
    const broken = structuredClone(deployment);
    broken.spec.template.spec.containers[0].ports[0].containerPort = "eighty";
    expect(() => new Deployment!(broken).validate()).toThrow(/containerPort/);

    for (const { file, object } of objects) {
      const type = `${object.apiVersion}/${object.kind}`;
      const path = modules[type];
      expect(path, `${file}: no schema mapped for ${type}`).toBeDefined();
      const Model = (requireFromHere(path!) as Record<string, new (data: unknown) => unknown>)[
        object.kind
      ]!;
      const model = new Model(object) as { validate(): void };
      expect(() => model.validate(), `${file}: ${type} ${object.metadata.name}`).not.toThrow();
    }
  });

  it("kustomization applies the gateway's manifests, not the secret template or the Job", () => {
    const [kustomization] = loadManifests("kustomization.yaml") as unknown as {
      resources: string[];
    }[];
    expect(kustomization?.resources.sort()).toEqual(
      files
        .filter(
          (file) =>
            !["kustomization.yaml", "secret.example.yaml", "provision-job.yaml"].includes(file),
        )
        .sort(),
    );
  });

  it("probes /healthz for liveness and /readyz for readiness on the public HTTP port", () => {
    const httpPort = container.ports.find((port: { name: string }) => port.name === "http");
    expect(httpPort.containerPort).toBe(8080);
    expect(container.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "http" });
    expect(container.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "http" });
    expect(container.startupProbe.httpGet.path).toBe("/healthz");
  });

  // §10: 7 shutdown steps, each bounded by GATEWAY_SHUTDOWN_TIMEOUT, start
  // only after the preStop hook; the grace period must cover both.
  it("grace period covers the preStop sleep plus 7 × GATEWAY_SHUTDOWN_TIMEOUT", () => {
    const preStop: string[] = container.lifecycle.preStop.exec.command;
    expect(preStop[0]).toBe("sleep");
    const preStopSeconds = Number(preStop[1]);
    expect(preStopSeconds).toBeGreaterThanOrEqual(5);
    const shutdownMs = parseDuration(configMap.data?.GATEWAY_SHUTDOWN_TIMEOUT ?? "");
    expect(shutdownMs).toBe(5000);
    expect(podSpec.terminationGracePeriodSeconds).toBeGreaterThan(
      preStopSeconds + (7 * shutdownMs!) / 1000,
    );
    expect(podSpec.terminationGracePeriodSeconds).toBe(50);
  });

  it("runs gateway and provisioning as non-root, read-only, with every capability dropped", () => {
    for (const spec of [podSpec, job.spec.template.spec]) {
      expect(spec.securityContext.runAsNonRoot).toBe(true);
      expect(spec.securityContext.runAsUser).toBeGreaterThan(0);
      expect(spec.automountServiceAccountToken).toBe(false);
      for (const each of spec.containers) {
        expect(each.securityContext).toMatchObject({
          runAsNonRoot: true,
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          capabilities: { drop: ["ALL"] },
        });
        expect(each.resources.requests).toMatchObject({
          cpu: expect.any(String),
          memory: expect.any(String),
        });
        expect(each.resources.limits).toMatchObject({ memory: expect.any(String) });
      }
    }
  });

  it("takes the password from a Secret and mounts the signer key from a Secret as a file", () => {
    const passwordRef = { secretKeyRef: { name: "edge-gateway-redis", key: "password" } };
    for (const each of [container, job.spec.template.spec.containers[0]]) {
      expect(each.envFrom).toEqual([{ configMapRef: { name: "edge-gateway-config" } }]);
      expect(each.env).toEqual([{ name: "GATEWAY_REDIS_PASSWORD", valueFrom: passwordRef }]);
    }
    const keyPath = configMap.data?.GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH ?? "";
    const mount = container.volumeMounts.find(
      (each: { name: string }) => each.name === "signer-key",
    );
    const volume = podSpec.volumes.find((each: { name: string }) => each.name === "signer-key");
    expect(mount.readOnly).toBe(true);
    expect(volume.secret.secretName).toBe("edge-gateway-signer");
    expect(keyPath).toBe(`${mount.mountPath}/${volume.secret.items[0].path}`);

    const secrets = loadManifests("secret.example.yaml");
    const redisSecret = secrets.find((secret) => secret.metadata.name === "edge-gateway-redis");
    const signerSecret = secrets.find((secret) => secret.metadata.name === "edge-gateway-signer");
    expect(redisSecret?.stringData?.password).toMatch(/^REPLACE_/);
    expect(signerSecret?.stringData?.[volume.secret.items[0].key]).toContain("REPLACE_");
  });

  it("ConfigMap sets every gateway variable at its documented default but the deployment's own", () => {
    const data = configMap.data ?? {};
    expect(Object.keys(data).sort()).toEqual(
      CONFIG_VARIABLES.filter((name) => name !== "GATEWAY_REDIS_PASSWORD").sort(),
    );
    expect(data).not.toHaveProperty("GATEWAY_REDIS_TLS_ENABLED");
    expect(data).not.toHaveProperty("GATEWAY_REDIS_USERNAME");
    expect(data.GATEWAY_ADMIN_HTTP_ADDR).toBe(":9464");

    const deployed = loadConfig({ ...data, GATEWAY_REDIS_PASSWORD: "x" });
    const defaults = loadConfig({
      GATEWAY_REDIS_MASTER_ADDR: data.GATEWAY_REDIS_MASTER_ADDR,
      GATEWAY_REDIS_PASSWORD: "x",
      GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH:
        data.GATEWAY_RESPONSE_SIGNER_PRIVATE_KEY_PEM_PATH,
    });
    expect({ ...deployed, adminHttpAddr: undefined }).toEqual(defaults);
  });

  it("exposes HTTP 8080 and gRPC 9090 (h2c), and the admin port on its own scraped ClusterIP service", () => {
    const containerPorts = Object.fromEntries(
      container.ports.map((port: { name: string; containerPort: number }) => [
        port.name,
        port.containerPort,
      ]),
    );
    expect(containerPorts).toEqual({ http: 8080, grpc: 9090, admin: 9464 });

    const publicService = find("Service", "edge-gateway");
    expect(publicService.spec.ports).toEqual([
      expect.objectContaining({ name: "http", port: 8080, targetPort: "http" }),
      expect.objectContaining({
        name: "grpc",
        port: 9090,
        targetPort: "grpc",
        appProtocol: "kubernetes.io/h2c",
      }),
    ]);
    const admin = find("Service", "edge-gateway-admin");
    expect(admin.spec.type).toBe("ClusterIP");
    expect(admin.spec.ports).toEqual([
      expect.objectContaining({ name: "admin", port: 9464, targetPort: "admin" }),
    ]);
    expect(admin.metadata.annotations).toMatchObject({
      "prometheus.io/scrape": "true",
      "prometheus.io/port": "9464",
      "prometheus.io/path": "/metrics",
    });
    for (const service of [publicService, admin]) {
      expect(service.spec.selector).toEqual(deployment.spec.selector.matchLabels);
    }
  });

  it("Dockerfile EXPOSE matches the container ports", () => {
    const exposed = dockerfileInstructions(readText("infra/Dockerfile"))
      .filter((instruction) => instruction.keyword === "EXPOSE")
      .flatMap((instruction) => instruction.args.split(/\s+/).map(Number));
    expect(exposed.sort()).toEqual(
      container.ports.map((port: { containerPort: number }) => port.containerPort).sort(),
    );
  });

  it("provision Job runs `infra provision` once, without retries forever", () => {
    const spec = job.spec.template.spec;
    expect(spec.restartPolicy).toBe("Never");
    expect(spec.containers[0].args).toEqual(["infra", "provision"]);
    expect(spec.containers[0].image).toBe(container.image);
    expect(job.spec.backoffLimit).toBeLessThanOrEqual(3);
  });
});

describe("compose (infra/compose.yaml)", () => {
  const composeFile = join(ROOT, "infra", "compose.yaml");
  const composeEnv = {
    ...process.env,
    GATEWAY_REDIS_PASSWORD: "compose-check-password",
    GATEWAY_SIGNER_KEY_FILE: "/nonexistent/signer-key.pem",
  };
  const [document] = parseAllDocuments(readFileSync(composeFile, "utf8"), { merge: true });
  // biome-ignore lint/suspicious/noExplicitAny: checked field by field below
  const compose = document?.toJS({ maxAliasCount: 100 }) as any;

  it("passes `docker compose config` (or docker-compose's)", (context) => {
    const command = hasCommand("docker", ["compose", "version"])
      ? ["docker", "compose"]
      : hasCommand("docker-compose", ["version"])
        ? ["docker-compose"]
        : undefined;
    if (command === undefined) {
      return context.skip(
        "neither `docker compose` nor docker-compose is installed (Debian package docker-compose)",
      );
    }
    const [program, ...prefix] = command;
    const result = spawnSync(program!, [...prefix, "-f", composeFile, "config", "-q"], {
      encoding: "utf8",
      env: composeEnv,
      timeout: 60_000,
    });
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
  });

  it("runs Redis with a password and noeviction, not on a command line, without TLS", () => {
    const redis = compose.services.redis;
    const script = redis.command.join(" ");
    expect(script).toContain("requirepass");
    expect(script).toContain("--maxmemory-policy noeviction");
    expect(script).not.toMatch(/--requirepass|--tls/);
    expect(redis.ports).toBeUndefined();
    expect(redis.healthcheck.test.join(" ")).toContain("REDISCLI_AUTH");
  });

  it("provisions the streams before the gateway starts, from the same image and variables", () => {
    const { provision, gateway } = compose.services;
    expect(provision.command).toEqual(["infra", "provision"]);
    expect(provision.build).toEqual({ context: "..", dockerfile: "infra/Dockerfile" });
    expect(gateway.build).toEqual(provision.build);
    expect(gateway.depends_on.provision.condition).toBe("service_completed_successfully");
    expect(gateway.depends_on.redis.condition).toBe("service_healthy");
    for (const [name, value] of Object.entries(provision.environment)) {
      expect(gateway.environment[name], name).toBe(value);
    }
    expect(gateway.environment).not.toHaveProperty("GATEWAY_REDIS_TLS_ENABLED");
    expect(gateway.environment).not.toHaveProperty("GATEWAY_REDIS_USERNAME");
  });

  it("publishes the gateway's three ports on 127.0.0.1 only", () => {
    const published: string[] = Object.values(compose.services).flatMap(
      // biome-ignore lint/suspicious/noExplicitAny: compose service
      (service: any) => service.ports ?? [],
    );
    expect(published.sort()).toEqual([
      "127.0.0.1:8080:8080",
      "127.0.0.1:9090:9090",
      "127.0.0.1:9464:9464",
    ]);
    expect(compose.services.gateway.environment.GATEWAY_ADMIN_HTTP_ADDR).toBe(":9464");
  });

  it("gives the gateway a stop grace period above 7 × GATEWAY_SHUTDOWN_TIMEOUT", () => {
    const gateway = compose.services.gateway;
    const graceMs = parseDuration(gateway.stop_grace_period);
    const stepMs = parseDuration(gateway.environment.GATEWAY_SHUTDOWN_TIMEOUT);
    expect(graceMs).toBeGreaterThan(7 * stepMs!);
  });

  it("keeps the signer key and the password out of the file", () => {
    const text = readFileSync(composeFile, "utf8");
    expect(text).not.toContain("BEGIN PRIVATE KEY");
    expect(compose.services.gateway.environment.GATEWAY_REDIS_PASSWORD).toMatch(/^\$\{/);
    expect(compose.secrets["signer-key"].file).toMatch(/^\$\{GATEWAY_SIGNER_KEY_FILE:\?/);
  });
});

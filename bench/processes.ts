/**
 * What the benchmarks that start processes share: cleanup steps run however
 * the run ends (normally, on a signal, on the watchdog, or at exit after a
 * crash), and CPU time and RSS of a process read from /proc.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { startRedis, type TestRedis } from "../test/support/redis-server.js";
import { removeTempDirs } from "../test/support/temp-dir.js";
import { watchdog } from "./report.js";

/** A benchmark run's cleanups. */
export interface RunCleanup {
  /** Asynchronous steps, run last-added first by {@link RunCleanup.cleanUp}. */
  readonly cleanups: (() => unknown)[];
  /**
   * Synchronous steps run when the process exits however it ends (a crash
   * included): kill what is still running by its PID, remove temporary files.
   */
  readonly atExit: (() => void)[];
  /** Runs the cleanups (each at most once); best effort, never throws. */
  cleanUp(): Promise<void>;
}

/**
 * Sets up the run's cleanups: at exit, on SIGINT/SIGTERM (exit 130), and when
 * the run outlives `watchdogMs`.
 */
export function createRunCleanup(name: string, watchdogMs: number): RunCleanup {
  const cleanups: (() => unknown)[] = [];
  const atExit: (() => void)[] = [];
  process.once("exit", () => {
    for (const step of atExit) {
      try {
        step();
      } catch {
        // Best effort: everything else still gets removed.
      }
    }
  });
  const cleanUp = async () => {
    for (const cleanup of cleanups.splice(0).reverse()) {
      try {
        await cleanup();
      } catch {
        // Best effort: everything else still gets stopped.
      }
    }
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => void cleanUp().finally(() => process.exit(130)));
  }
  watchdog(name, watchdogMs, cleanUp);
  return { cleanups, atExit, cleanUp };
}

const CLOCK_TICKS_PER_SECOND = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }));

/** CPU time (user + system, all threads) `pid` has used so far, in µs, from /proc. */
export function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name, which is in parentheses: utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND) * 1e6;
}

/** VmRSS of `pid` in KiB, from /proc. */
export function rssKiB(pid: number): number {
  const match = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+) kB/m);
  return match ? Number(match[1]) : Number.NaN;
}

/** A server process a benchmark started, pinned to its core. */
export interface PinnedProcess {
  readonly pid: number;
  /** What the `ready` pattern's first group matched (its address). */
  readonly address: string;
}

/**
 * Spawns `node args…` pinned with `taskset -c core`, stopped by the run's
 * cleanups (SIGTERM, then SIGKILL after 3 s) or killed at exit, and resolves
 * once its output matches `ready` (group 1: its address). Its output keeps
 * being drained so it never blocks on a full pipe.
 */
export async function launchPinned(
  run: RunCleanup,
  options: {
    readonly label: string;
    readonly core: string;
    readonly args: readonly string[];
    readonly env: Record<string, string>;
    readonly ready: RegExp;
    readonly cwd?: string;
    /** Receives its output (stdout and stderr), the lines before `ready` included. */
    readonly onOutput?: (text: string) => void;
  },
): Promise<PinnedProcess> {
  const { label } = options;
  const child: ChildProcess = spawn(
    "taskset",
    ["-c", options.core, process.execPath, ...options.args],
    {
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      env: { PATH: process.env.PATH ?? "", NO_COLOR: "1", ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  run.cleanups.push(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(timer);
  });
  run.atExit.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  let output = "";
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${label} did not start:\n${output}`)), 30_000);
    const drain = (chunk: Buffer) => options.onOutput?.(chunk.toString("utf8"));
    const onData = (chunk: Buffer) => {
      output += chunk.toString("utf8");
      drain(chunk);
      const match = options.ready.exec(output);
      if (match) {
        clearTimeout(timer);
        child.stdout?.off("data", onData).on("data", drain);
        child.stderr?.off("data", onData).on("data", drain);
        resolve(match[1]!);
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    void exited.then(() => reject(new Error(`${label} exited:\n${output}`)));
  });
  if (child.pid === undefined) throw new Error(`${label} has no pid`);
  return { pid: child.pid, address };
}

/**
 * The start every server benchmark shares: moves this process (the client)
 * to `clientCore`, builds the bin, and starts a test `redis-server` that the
 * run's cleanups stop (and kill at exit), together with temporary files.
 */
export async function prepareRun(
  run: RunCleanup,
  clientCore: string,
  root: string,
): Promise<TestRedis> {
  execFileSync("taskset", ["-a", "-pc", clientCore, String(process.pid)], { stdio: "ignore" });
  console.error("building the bin…");
  execFileSync("npm", ["run", "-s", "build"], { cwd: root, stdio: "inherit" });
  const testRedis = await startRedis();
  run.cleanups.push(() => testRedis.stop());
  run.atExit.push(() => void testRedis.kill());
  run.cleanups.push(removeTempDirs);
  run.atExit.push(removeTempDirs);
  return testRedis;
}

/**
 * What the benchmarks that start processes share: cleanup steps run however
 * the run ends (normally, on a signal, on the watchdog, or at exit after a
 * crash), and CPU time and RSS of a process read from /proc.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
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

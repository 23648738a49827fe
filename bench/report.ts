/**
 * Shared by the benchmarks: interleaved rounds, medians and percentiles, the
 * machine facts every table is printed with, and plain-text tables.
 */
import { readFileSync } from "node:fs";
import { availableParallelism, cpus, loadavg } from "node:os";

/** One measured variant: a label and a function that runs one timed round. */
export interface Variant<T> {
  readonly name: string;
  /** Runs one round and returns what it measured. */
  readonly round: (round: number) => Promise<T>;
}

/**
 * Runs `rounds` rounds of every variant, alternating them (A B C, A B C, …)
 * so that load from other processes falls on all of them alike, and returns
 * each variant's results in round order.
 */
export async function interleave<T>(
  variants: readonly Variant<T>[],
  rounds: number,
  onRound?: (name: string, round: number, result: T) => void,
): Promise<Map<string, T[]>> {
  const results = new Map<string, T[]>(variants.map((variant) => [variant.name, []]));
  for (let round = 0; round < rounds; round++) {
    for (const variant of variants) {
      const result = await variant.round(round);
      results.get(variant.name)?.push(result);
      onRound?.(variant.name, round, result);
    }
  }
  return results;
}

/** The median of `values` (the mean of the middle two for an even count). */
export function median(values: ArrayLike<number>): number {
  if (values.length === 0) return Number.NaN;
  const sorted = Float64Array.from(values).sort();
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** The `p`-th percentile (0–100, nearest rank) of `values`. */
export function percentile(values: ArrayLike<number>, p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = Float64Array.from(values).sort();
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

/** Formats a number with `digits` decimals and thousands separators. */
export function fmt(value: number, digits = 0): string {
  return value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** Formats a ratio as `1.23×`. */
export function ratio(value: number, digits = 2): string {
  return `${fmt(value, digits)}×`;
}

/** Node version, CPU model and count, thread-pool size and load: printed above every table. */
export function machineFacts(): string {
  const cpu = cpus()[0]?.model.trim() ?? "unknown CPU";
  const pool = process.env.UV_THREADPOOL_SIZE ?? "4 (default)";
  const load = loadavg()
    .map((value) => value.toFixed(2))
    .join(" ");
  return [
    `node ${process.version} (${process.platform}/${process.arch})`,
    `cpu: ${cpu}, ${availableParallelism()} logical core(s)`,
    `UV_THREADPOOL_SIZE=${pool}, load average at start: ${load}`,
  ].join("\n");
}

/** A plain-text table with a header row; numeric-looking cells are right-aligned. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((cell, column) =>
    Math.max(cell.length, ...rows.map((row) => (row[column] ?? "").length)),
  );
  const numeric = /^[-+]?[\d,.]+(?:×|%| ?[µm]?s)?$/;
  const line = (cells: readonly string[]) =>
    `| ${cells
      .map((cell, column) =>
        numeric.test(cell) ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!),
      )
      .join(" | ")} |`;
  const rule = `|${widths.map((width) => "-".repeat(width + 2)).join("|")}|`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}

/** Prints the title, the machine facts and the table. */
export function printReport(title: string, notes: readonly string[], body: string): void {
  console.log(`\n## ${title}\n`);
  console.log(machineFacts());
  for (const note of notes) console.log(note);
  console.log(`\n${body}\n`);
}

/**
 * CPU time the main (event-loop) thread has run so far, in µs, from Linux's
 * per-thread scheduler statistics; `undefined` where they are not available.
 * Unlike `process.cpuUsage()` it leaves out libuv's thread pool.
 */
export function mainThreadCpuMicros(): number | undefined {
  try {
    const [runNs] = readFileSync(`/proc/self/task/${process.pid}/schedstat`, "utf8").split(" ");
    const value = Number(runNs) / 1000;
    return Number.isFinite(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** Lets pending I/O and timers run, so one variant's leftovers do not land in the next. */
export function settle(ms = 50): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Ends a stuck run by itself after `ms`: runs `stop` (e.g. stopping the
 * redis-server it started), then exits non-zero. The timer does not keep the
 * process alive.
 */
export function watchdog(name: string, ms: number, stop: () => Promise<unknown>): void {
  setTimeout(() => {
    console.error(`${name}: gave up after ${ms} ms`);
    void stop().finally(() => process.exit(1));
  }, ms).unref();
}

/**
 * The `--modes` option: a comma-separated list naming each of `known` at
 * most once, and at least one; throws naming the option otherwise.
 */
export function parseModes<M extends string>(text: string, known: readonly M[]): M[] {
  const modes = text.split(",").map((mode) => mode.trim()) as M[];
  for (const mode of modes) {
    if (!known.includes(mode)) {
      throw new Error(`--modes takes a comma-separated list of ${known.join(", ")}`);
    }
  }
  if (modes.length === 0 || new Set(modes).size !== modes.length) {
    throw new Error("--modes must name each mode at most once");
  }
  return modes;
}

/** Each option's text as a whole number ≥ 1; throws naming the first that is not. */
export function wholeNumbers<K extends string>(options: Record<K, string>): Record<K, number> {
  const numbers = {} as Record<K, number>;
  for (const [name, text] of Object.entries(options) as [K, string][]) {
    const value = Number(text);
    if (!(Number.isInteger(value) && value >= 1)) {
      throw new Error(`--${name} must be a whole number ≥ 1`);
    }
    numbers[name] = value;
  }
  return numbers;
}

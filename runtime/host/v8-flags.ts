/**
 * The V8 flags the bin sets for its own process, at startup, before the
 * gateway's code runs. Each is left alone when Node's command line sets it
 * (`node --heap-growing-percent=0 dist/runtime/bin.js` gives V8's own
 * factor back; `--allocation-site-pretenuring` turns pretenuring back on).
 * Node does not accept either flag in `NODE_OPTIONS`.
 *
 * - `--heap-growing-percent=100`: how far the old generation may grow past
 *   its live size before the next full collection. V8's own factor goes up
 *   to 4 when collections are cheap, which they are here: under load
 *   almost all of the heap is per-call garbage, while the live heap (about
 *   20 MiB, mostly the code of the libraries loaded) stays put. At 4 the
 *   peak heap is four times what the gateway needs; at 2 it is half that,
 *   full collections run more often and each pauses for less. V8 allows
 *   itself more than 2 only when the old generation's limit is 2 GiB or
 *   more (below that it scales its ceiling from 1.3 to 2 with the limit),
 *   so on a smaller heap limit the bin leaves the factor to V8.
 * - `--no-allocation-site-pretenuring`: V8 watches how many objects from
 *   each allocation site survive young-generation collections and, past a
 *   threshold, allocates that site's objects straight in the old
 *   generation from then on. A burst of push events that waits in stream
 *   queues is such a survivor, so after one burst every later event was
 *   allocated in the old generation and collected only by full
 *   collections, one every second at steady load, each stalling delivery
 *   for tens of milliseconds.
 *
 * docs/RUNBOOK.md §14 and §15 have the figures.
 */
import { getHeapStatistics, setFlagsFromString } from "node:v8";

const HEAP_GROWTH = "--heap-growing-percent=100";

/** The flags, as given to V8. */
export const GATEWAY_V8_FLAGS: readonly string[] = [
  HEAP_GROWTH,
  "--no-allocation-site-pretenuring",
];

/**
 * The heap size limit (`v8.getHeapStatistics().heap_size_limit`: the old
 * generation's limit plus the young generation's) above which V8's own
 * growing factor can exceed 2.
 */
export const LARGE_HEAP_LIMIT_BYTES = 2 * 1024 ** 3;

/** `--heap-growing-percent=100` → `heap-growing-percent`; `--no-x` → `x`. */
function flagName(flag: string): string {
  return flag
    .replace(/^--(?:no-)?/, "")
    .replace(/=.*$/, "")
    .replaceAll("_", "-");
}

/** Whether Node's command-line options `execArgv` set the V8 flag `flag` (either spelling, on or off). */
export function flagSetByOperator(flag: string, execArgv: readonly string[]): boolean {
  const name = flagName(flag);
  return execArgv.some((arg) => arg.startsWith("--") && flagName(arg) === name);
}

/**
 * The flags of GATEWAY_V8_FLAGS the bin sets for a process started with
 * `execArgv` whose heap size limit is `heapSizeLimit` bytes: those the
 * command line does not set, and the growing factor only on a large heap.
 */
export function gatewayV8Flags(execArgv: readonly string[], heapSizeLimit: number): string[] {
  return GATEWAY_V8_FLAGS.filter(
    (flag) =>
      !flagSetByOperator(flag, execArgv) &&
      (flag !== HEAP_GROWTH || heapSizeLimit > LARGE_HEAP_LIMIT_BYTES),
  );
}

let applied: readonly string[] = [];

/** Sets the flags `gatewayV8Flags` picks for this process; returns them. */
export function applyGatewayV8Flags(
  execArgv: readonly string[] = process.execArgv,
  heapSizeLimit: number = getHeapStatistics().heap_size_limit,
): string[] {
  const flags = gatewayV8Flags(execArgv, heapSizeLimit);
  for (const flag of flags) setFlagsFromString(flag);
  applied = flags;
  return flags;
}

/** The flags `applyGatewayV8Flags` set in this process: none unless the bin runs it. */
export function appliedGatewayV8Flags(): readonly string[] {
  return applied;
}

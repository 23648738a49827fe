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
 *   full collections run more often and each pauses for less.
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
import { setFlagsFromString } from "node:v8";

/** The flags, as given to V8. */
export const GATEWAY_V8_FLAGS: readonly string[] = [
  "--heap-growing-percent=100",
  "--no-allocation-site-pretenuring",
];

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

/** Sets each of GATEWAY_V8_FLAGS that `execArgv` does not set; returns the ones it set. */
export function applyGatewayV8Flags(execArgv: readonly string[] = process.execArgv): string[] {
  const applied = GATEWAY_V8_FLAGS.filter((flag) => !flagSetByOperator(flag, execArgv));
  for (const flag of applied) setFlagsFromString(flag);
  return applied;
}

/**
 * How far V8 lets the gateway's old generation grow past its live size
 * before the next full collection. V8's own factor goes up to 4 when
 * collections are cheap, which they are here: under load, almost all the
 * heap is per-call garbage, while the live heap (about 20 MiB, mostly the
 * code of the libraries loaded) stays put. At 4 the peak heap is four times
 * what the gateway needs; at 2 it is half that, collections run more often
 * and each pauses for less, with no measurable change in CPU per call
 * (docs/RUNBOOK.md §15 has the figures).
 *
 * The bin sets it for its own process only. An operator who runs it as
 * `node --heap-growing-percent=N dist/runtime/bin.js` keeps N (0 gives V8's
 * own factor back). Node does not accept this flag in `NODE_OPTIONS`.
 */
import { setFlagsFromString } from "node:v8";

/** The growing factor the bin sets, as V8's `--heap-growing-percent`: 1 + 100/100 = 2. */
export const HEAP_GROWING_PERCENT = 100;

const FLAG = /^--heap[-_]growing[-_]percent(?:=|$)/;

/** Whether `--heap-growing-percent` is among Node's command-line options `execArgv`. */
export function heapGrowthSetByOperator(execArgv: readonly string[]): boolean {
  return execArgv.some((arg) => FLAG.test(arg));
}

/**
 * Sets V8's old-generation growing factor to 2 for this process unless the
 * operator set one; returns whether it did.
 */
export function limitHeapGrowth(execArgv: readonly string[] = process.execArgv): boolean {
  if (heapGrowthSetByOperator(execArgv)) return false;
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  return true;
}

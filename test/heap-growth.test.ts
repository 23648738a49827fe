/**
 * The bin's bound on how far V8 grows the old generation past its live size
 * (runtime/host/heap-growth.ts). Each process case runs a child Node with
 * `--trace-gc-verbose`, which prints every new old-generation limit
 * ("old size: X KB, new limit: Y KB"), and reads the ratio of the two.
 */
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { HEAP_GROWING_PERCENT, heapGrowthSetByOperator } from "../runtime/host/heap-growth.js";
import { BIN } from "./support/node-process.js";

const MODULE = join(dirname(BIN), "host", "heap-growth.js");

/**
 * A script that keeps about 20 MiB alive and churns objects that live long
 * enough to reach the old generation, so full collections run and V8 sets
 * new limits. With `apply`, it first calls `limitHeapGrowth()` as the bin does.
 */
function churnScript(apply: boolean): string {
  return [
    apply ? `(await import(${JSON.stringify(MODULE)})).limitHeapGrowth();` : "",
    "const live = []; for (let i = 0; i < 300000; i++) live.push({ i, s: 'x' + i });",
    "const keep = [];",
    "for (let i = 0; i < 2000000; i++) { keep.push({ a: i, b: [i] }); if (keep.length > 400000) keep.splice(0, 200000); }",
    "console.log('kept', live.length);",
  ].join("\n");
}

/** The limit/size ratio of every old-generation limit V8 set in a child running `script`. */
async function growthRatios(script: string, flags: readonly string[] = []): Promise<number[]> {
  const child = spawn(
    process.execPath,
    [...flags, "--trace-gc-verbose", "--input-type=module", "--eval", script],
    { env: { PATH: process.env.PATH ?? "" }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8");
  });
  child.stderr.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8");
  });
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  expect(code, output.slice(-2000)).toBe(0);
  expect(output).toContain("kept 300000");
  const ratios = [
    ...output.matchAll(/\[HeapController\] Limit: old size: (\d+) KB, new limit: (\d+) KB/g),
  ].map((match) => Number(match[2]) / Number(match[1]));
  expect(ratios.length, "no full collection set a new limit").toBeGreaterThan(0);
  return ratios;
}

describe("heapGrowthSetByOperator", () => {
  it("finds the flag among Node's options, in either spelling and either form", () => {
    expect(heapGrowthSetByOperator([])).toBe(false);
    expect(heapGrowthSetByOperator(["--max-semi-space-size=4", "--enable-source-maps"])).toBe(
      false,
    );
    expect(heapGrowthSetByOperator(["--heap-growing-percent=300"])).toBe(true);
    expect(heapGrowthSetByOperator(["--enable-source-maps", "--heap_growing_percent=0"])).toBe(
      true,
    );
    expect(heapGrowthSetByOperator(["--heap-growing-percent", "50"])).toBe(true);
    // A different flag that merely starts the same way is not it.
    expect(heapGrowthSetByOperator(["--heap-growing-percentage=1"])).toBe(false);
  });
});

describe("limitHeapGrowth in a process", () => {
  it("sets each old-generation limit at about twice the heap left after a full collection", async () => {
    expect(HEAP_GROWING_PERCENT).toBe(100);
    const ratios = await growthRatios(churnScript(true));
    // Twice the old generation, plus some room V8 adds for the young one.
    for (const ratio of ratios) expect(ratio).toBeLessThan(3);
  }, 60_000);

  it("leaves V8's own factor, about 4 for this script, when it is not called", async () => {
    const ratios = await growthRatios(churnScript(false));
    expect(Math.max(...ratios)).toBeGreaterThan(3.5);
  }, 60_000);

  it("keeps a factor the operator set on Node's command line", async () => {
    const ratios = await growthRatios(churnScript(true), ["--heap-growing-percent=300"]);
    expect(Math.max(...ratios)).toBeGreaterThan(3.5);
  }, 60_000);
});

/**
 * The V8 flags the bin sets for its process (runtime/host/v8-flags.ts). Each
 * process case runs a child Node with a V8 tracing flag and reads what V8
 * did: `--trace-gc-verbose` prints the growing factor of every new
 * old-generation limit; `--trace-pretenuring-statistics` prints a line per
 * allocation site whose pretenuring V8 considered.
 */
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  flagSetByOperator,
  GATEWAY_V8_FLAGS,
  gatewayV8Flags,
  LARGE_HEAP_LIMIT_BYTES,
} from "../runtime/host/v8-flags.js";
import { BIN } from "./support/node-process.js";

const MODULE = join(dirname(BIN), "host", "v8-flags.js");

/**
 * A script that keeps about 20 MiB alive and churns objects that live long
 * enough to reach the old generation, so full collections run and V8 sets
 * new limits and weighs pretenuring. With `apply`, it first calls
 * `applyGatewayV8Flags()` as the bin does, and prints what it set.
 */
function churnScript(apply: boolean): string {
  return [
    apply
      ? `console.log("applied", JSON.stringify((await import(${JSON.stringify(MODULE)})).applyGatewayV8Flags()));`
      : "",
    "const make = (i) => ({ a: i, b: [i] });",
    "const live = []; for (let i = 0; i < 300000; i++) live.push({ i, s: 'x' + i });",
    "const keep = [];",
    "for (let i = 0; i < 2000000; i++) { keep.push(make(i)); if (keep.length > 400000) keep.splice(0, 200000); }",
    "console.log('kept', live.length);",
  ].join("\n");
}

/**
 * Runs `script` in a child Node with `flags`; resolves with its output once
 * it exited 0. The child's heap limit is fixed at 4 GiB: V8 caps its own
 * growing factor below 4 when the limit it derives from the machine's
 * memory is small, and the limit only bounds the heap, it reserves nothing.
 */
async function run(script: string, flags: readonly string[], heapLimitMiB = 4096): Promise<string> {
  const args = [
    `--max-old-space-size=${heapLimitMiB}`,
    ...flags,
    "--input-type=module",
    "--eval",
    script,
  ];
  const child = spawn(process.execPath, args, {
    env: { PATH: process.env.PATH ?? "" },
    stdio: ["ignore", "pipe", "pipe"],
  });
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
  return output;
}

/**
 * The growing factor behind every old-generation limit V8 set while running
 * `script`. Node 20's V8 prints it at the end of each "[HeapController]
 * Limit" line, as "(2.0)"; Node 24's prints a "[HeapController] factor 2.0
 * based on …" line, which Node 20's prints too but before applying the flag.
 */
async function growthFactors(
  script: string,
  flags: readonly string[] = [],
  heapLimitMiB?: number,
): Promise<number[]> {
  const output = await run(script, [...flags, "--trace-gc-verbose"], heapLimitMiB);
  const onLimit = [...output.matchAll(/\[HeapController\] Limit: .*\(([\d.]+)\)$/gm)];
  const computed = [...output.matchAll(/\[HeapController\] factor ([\d.]+) based on/g)];
  const factors = (onLimit.length > 0 ? onLimit : computed).map((match) => Number(match[1]));
  expect(factors.length, "no full collection set a new limit").toBeGreaterThan(0);
  return factors;
}

/** How many pretenuring decisions V8 traced while running `script`. */
async function pretenuringDecisions(script: string, flags: readonly string[] = []) {
  const output = await run(script, [...flags, "--trace-pretenuring-statistics"]);
  return output.match(/pretenuring: AllocationSite/g)?.length ?? 0;
}

describe("flagSetByOperator", () => {
  it("finds a flag among Node's options in either spelling, either form, on or off", () => {
    const growth = "--heap-growing-percent=100";
    expect(flagSetByOperator(growth, [])).toBe(false);
    expect(flagSetByOperator(growth, ["--max-semi-space-size=4", "--enable-source-maps"])).toBe(
      false,
    );
    expect(flagSetByOperator(growth, ["--heap-growing-percent=300"])).toBe(true);
    expect(flagSetByOperator(growth, ["--enable-source-maps", "--heap_growing_percent=0"])).toBe(
      true,
    );
    expect(flagSetByOperator(growth, ["--heap-growing-percent", "50"])).toBe(true);
    // A different flag that merely starts the same way is not it.
    expect(flagSetByOperator(growth, ["--heap-growing-percentage=1"])).toBe(false);

    const pretenuring = "--no-allocation-site-pretenuring";
    expect(flagSetByOperator(pretenuring, ["--allocation-site-pretenuring"])).toBe(true);
    expect(flagSetByOperator(pretenuring, ["--no-allocation_site_pretenuring"])).toBe(true);
    expect(flagSetByOperator(pretenuring, ["--allocation-site-tracking"])).toBe(false);
  });
});

describe("gatewayV8Flags", () => {
  it("sets the growing factor only above a 2 GiB heap limit, and neither flag the operator set", () => {
    const GiB = 1024 ** 3;
    expect(gatewayV8Flags([], 4 * GiB)).toEqual([...GATEWAY_V8_FLAGS]);
    expect(gatewayV8Flags([], LARGE_HEAP_LIMIT_BYTES + 48 * 1024 ** 2)).toEqual([
      ...GATEWAY_V8_FLAGS,
    ]);
    expect(gatewayV8Flags([], 1 * GiB)).toEqual(["--no-allocation-site-pretenuring"]);
    expect(gatewayV8Flags(["--allocation-site-pretenuring"], 4 * GiB)).toEqual([
      "--heap-growing-percent=100",
    ]);
    expect(
      gatewayV8Flags(["--heap-growing-percent=0", "--allocation-site-pretenuring"], 4 * GiB),
    ).toEqual([]);
  });
});

describe("applyGatewayV8Flags in a process", () => {
  it("sets every old-generation limit at twice the heap left after a full collection", async () => {
    const script = churnScript(true);
    const factors = await growthFactors(script);
    for (const factor of factors) expect(factor).toBe(2);
    expect(await run(script, [])).toContain(`applied ${JSON.stringify(GATEWAY_V8_FLAGS)}`);
  }, 60_000);

  it("leaves V8's own factor, above 2 for this script, when it is not called", async () => {
    // 4 with that heap limit; V8 computes below it when collections are slow.
    expect(Math.max(...(await growthFactors(churnScript(false))))).toBeGreaterThan(2);
  }, 60_000);

  it("leaves the factor to V8 under a 1 GiB heap limit, where V8 keeps it below 2", async () => {
    const script = churnScript(true);
    expect(await run(script, [], 1024)).toContain('applied ["--no-allocation-site-pretenuring"]');
    for (const factor of await growthFactors(script, [], 1024)) expect(factor).toBeLessThan(2);
  }, 60_000);

  it("turns off pretenuring by allocation site, which V8 weighs for this script otherwise", async () => {
    expect(await pretenuringDecisions(churnScript(false))).toBeGreaterThan(0);
    expect(await pretenuringDecisions(churnScript(true))).toBe(0);
  }, 60_000);

  it("keeps what the operator set on Node's command line", async () => {
    const script = churnScript(true);
    const flags = ["--heap-growing-percent=300", "--allocation-site-pretenuring"];
    expect(await run(script, flags)).toContain("applied []");
    // 1 + 300/100.
    for (const factor of await growthFactors(script, flags)) expect(factor).toBe(4);
    expect(await pretenuringDecisions(script, flags)).toBeGreaterThan(0);
  }, 60_000);
});

/**
 * The test command's closing line (test/summary.mjs, as test/run.mjs uses
 * it): vitest runs for real on the fixture files of test/fixtures/runner/,
 * and the line a person reads last, and the exit code, count every failure,
 * including a file that cannot load, an error outside any test, and a vitest
 * that stops before it reports.
 */
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { tempDir } from "./support/temp-dir.js";

const SUMMARY = new URL("./summary.mjs", import.meta.url).href;
const FIXTURES = fileURLToPath(new URL("./fixtures/runner/", import.meta.url));

/**
 * Runs `call` (an expression over the summary module, `summary`) in a Node
 * process of its own in the fixture project and exits with its value, as
 * test/run.mjs does; returns that process's output lines, its exit status,
 * and what it left in its temp dir.
 */
function runSummary(call: string) {
  const tmp = tempDir("runner-tmp");
  const result = spawnSync(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `import * as summary from ${JSON.stringify(SUMMARY)}; process.exit(${call});`,
    ],
    { cwd: FIXTURES, env: { ...process.env, TMPDIR: tmp }, encoding: "utf8" },
  );
  const lines = result.stdout.trimEnd().split("\n");
  return { lines, last: lines.at(-1), status: result.status, leftInTmp: readdirSync(tmp) };
}

/** The test command's vitest step in the fixture project, `args` (file name filters, options) added. */
function runVitest(...args: string[]) {
  return runSummary(`summary.runVitest(${JSON.stringify(args)})`);
}

describe("the test command's closing line", () => {
  it("counts a test file that throws at import as failed, and exits 1", () => {
    const run = runVitest("passes", "throws-at-import");
    expect(run.last).toBe("1 passed, 1 failed, 0 skipped");
    expect(run.lines).toContain(
      "throws-at-import.fixture.ts failed outside its tests: cannot load this file",
    );
    expect(run.status).toBe(1);
    expect(run.leftInTmp).toEqual([]);
  });

  it("exits 0 when nothing failed", () => {
    const run = runVitest("passes", "skipped");
    expect(run.last).toBe("1 passed, 0 failed, 1 skipped");
    expect(run.status).toBe(0);
    expect(run.leftInTmp).toEqual([]);
  });

  it("counts failed tests, broken hooks and errors outside any test, one each", () => {
    const run = runVitest("passes", "fails", "failing-hook", "late-error", "throws-at-import");
    expect(run.last).toBe("3 passed, 4 failed, 0 skipped");
    expect(run.lines).toContain("failing-hook.fixture.ts failed outside its tests: afterAll broke");
    expect(run.lines).toContain("error outside any test: thrown by a timer");
    expect(run.status).toBe(1);
  });

  it("counts a vitest that stops before it reports as a failure", () => {
    const run = runVitest("--no-such-option");
    expect(run.last).toBe("0 passed, 1 failed, 0 skipped");
    expect(run.lines.some((line) => line.startsWith("vitest stopped before it reported"))).toBe(
      true,
    );
    expect(run.status).toBe(1);
    expect(run.leftInTmp).toEqual([]);
  });

  it("counts a run in which no test file ran as a failure", () => {
    const run = runVitest("no-fixture-has-this-name");
    expect(run.last).toBe("0 passed, 1 failed, 0 skipped");
    expect(run.status).toBe(1);
  });

  it("counts a step that failed before vitest, naming it", () => {
    const run = runSummary(
      'summary.reportStepFailure("build", "npm run -s build (exit status 2)")',
    );
    expect(run.lines).toEqual([
      "build failed: npm run -s build (exit status 2); no test ran",
      "build: 0 passed, 1 failed, 0 skipped",
    ]);
    expect(run.status).toBe(1);
  });
});

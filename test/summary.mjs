// The test command's closing line, `N passed, M failed, K skipped`, and its
// exit code, which is non-zero exactly when M is. Every failure counts: a
// failed test, a test file that failed to load or broke outside its tests, an
// error outside the test files, vitest exiting non-zero with nothing counted
// failed, vitest stopping before it reported (a crash), and a step before
// vitest that failed.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** vitest's CLI in this project's node_modules, run with the Node running this. */
const VITEST = fileURLToPath(new URL("../node_modules/vitest/vitest.mjs", import.meta.url));
/** The reporter that writes the counts (test/summary-reporter.mjs). */
const REPORTER = fileURLToPath(new URL("./summary-reporter.mjs", import.meta.url));

/**
 * The counts of a run given what the reporter wrote (`undefined` when it wrote
 * nothing) and vitest's exit status (or the signal that ended it), with one line per failure the counts
 * would not otherwise explain, and the exit code the closing line stands for.
 */
export function summarize(counts, status) {
  if (counts === undefined) {
    return {
      passed: 0,
      failed: 1,
      skipped: 0,
      problems: [`vitest stopped before it reported (exit status ${status ?? "none"})`],
      exitCode: 1,
    };
  }
  const { passed, skipped, problems } = counts;
  let { failed } = counts;
  if (status !== 0 && failed === 0) {
    failed = 1;
    problems.push(
      `vitest exited with status ${status ?? "none"} with nothing counted failed` +
        " (no test file ran, or an error before the run)",
    );
  }
  return { passed, failed, skipped, problems, exitCode: failed > 0 ? 1 : 0 };
}

/** The closing line of a summary, with `step:` before it when the run stopped at that step. */
export function closingLine({ passed, failed, skipped }, step) {
  const line = `${passed} passed, ${failed} failed, ${skipped} skipped`;
  return step === undefined ? line : `${step}: ${line}`;
}

/**
 * Prints why `step` (one word: setup, check, build) stopped the run and the
 * closing line counting it as one failure; returns the exit code (1).
 */
export function reportStepFailure(step, reason) {
  console.log(`${step} failed: ${reason}; no test ran`);
  console.log(closingLine({ passed: 0, failed: 1, skipped: 0 }, step));
  return 1;
}

/** What the reporter wrote, or undefined when it wrote nothing whole. */
function readCounts(path) {
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch {
    return undefined;
  }
}

/**
 * Runs `vitest run` in `cwd` with `args` added, its default reporter on this
 * process's output, then prints the failures the counts would not otherwise
 * explain and the closing line; returns the exit code.
 */
export function runVitest(args, { cwd = process.cwd() } = {}) {
  const countsDir = mkdtempSync(join(tmpdir(), "edge-gateway-tests-"));
  const countsFile = join(countsDir, "counts.json");
  try {
    const vitest = spawnSync(
      process.execPath,
      [VITEST, "run", "--reporter=default", `--reporter=${REPORTER}`, ...args],
      { cwd, stdio: "inherit", env: { ...process.env, EDGE_GATEWAY_TEST_SUMMARY: countsFile } },
    );
    const summary = summarize(readCounts(countsFile), vitest.status ?? vitest.signal);
    for (const problem of summary.problems) console.log(problem);
    console.log(closingLine(summary));
    return summary.exitCode;
  } finally {
    rmSync(countsDir, { recursive: true, force: true });
  }
}

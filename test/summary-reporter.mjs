// A vitest reporter that writes the counts behind the test command's closing
// line to the JSON file named by EDGE_GATEWAY_TEST_SUMMARY. vitest's own JSON
// report has no place for errors thrown outside any test, so the counts come
// from here: every test's state, every test file that failed outside its tests
// (it could not load, or a hook or its collection threw), and every error
// vitest caught outside any test (a timer's, a promise nobody awaited).
import { writeFileSync } from "node:fs";

/** The first line of a serialized error's message. */
function firstLine(error) {
  return String(error?.message ?? error ?? "").split("\n")[0] || "no message";
}

/** Counts tests and failures at the end of a run; test/summary.mjs prints them. */
export default class SummaryReporter {
  onTestRunEnd(testModules, unhandledErrors, reason) {
    const counts = { passed: 0, failed: 0, skipped: 0, problems: [] };
    for (const testModule of testModules) {
      let failedTests = 0;
      for (const test of testModule.children.allTests()) {
        const { state } = test.result();
        if (state === "passed") counts.passed += 1;
        else if (state === "skipped") counts.skipped += 1;
        // A test still pending at the end never finished: its worker died.
        else failedTests += 1;
      }
      counts.failed += failedTests;
      const errors = [
        ...testModule.errors(),
        ...[...testModule.children.allSuites()].flatMap((suite) => suite.errors()),
      ];
      if (errors.length > 0 || (testModule.state() === "failed" && failedTests === 0)) {
        counts.failed += 1;
        counts.problems.push(
          `${testModule.relativeModuleId} failed outside its tests: ${firstLine(errors[0])}`,
        );
      }
    }
    for (const error of unhandledErrors) {
      counts.failed += 1;
      counts.problems.push(`error outside any test: ${firstLine(error)}`);
    }
    if (reason === "interrupted") {
      counts.failed += 1;
      counts.problems.push("the run was interrupted before every test file ran");
    }
    writeFileSync(process.env.EDGE_GATEWAY_TEST_SUMMARY, JSON.stringify(counts));
  }
}

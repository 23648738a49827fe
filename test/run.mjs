#!/usr/bin/env node
// The whole test suite: makes sure redis-server is present (installing
// Debian's package when it is missing and we may), then lint + typecheck,
// build, and every vitest file. Extra arguments go to vitest.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: "inherit", ...options });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

function has(command) {
  return spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
}

// Debian packages the suite needs: redis-server, and promtool (prometheus).
const missing = [
  ["redis-server", "redis-server"],
  ["promtool", "prometheus"],
].filter(([command]) => !has(command));
if (missing.length > 0) {
  const packages = missing.map(([, pkg]) => pkg);
  const apt = process.getuid?.() === 0 ? ["apt-get"] : ["sudo", "apt-get"];
  if (!has("apt-get") || (apt[0] === "sudo" && !has("sudo"))) {
    console.error(
      `missing: ${packages.join(", ")} (Debian: apt-get install -y ${packages.join(" ")})`,
    );
    process.exit(1);
  }
  console.log(`installing Debian's ${packages.join(", ")}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const [command, ...prefix] = apt;
  run(command, [...prefix, "update", "-qq"], { env });
  run(command, [...prefix, "install", "-y", "-qq", "--no-install-recommends", ...packages], {
    env,
  });
}

run("npm", ["run", "-s", "check"]);
run("npm", ["run", "-s", "build"]);
// The JSON report gives the one-line summary printed last.
const report = join(mkdtempSync(join(tmpdir(), "edge-gateway-tests-")), "report.json");
const vitest = spawnSync(
  "npx",
  [
    "vitest",
    "run",
    "--reporter=default",
    "--reporter=json",
    `--outputFile.json=${report}`,
    ...process.argv.slice(2),
  ],
  { stdio: "inherit" },
);
if (existsSync(report)) {
  const { numPassedTests, numFailedTests, numPendingTests } = JSON.parse(
    readFileSync(report, "utf8"),
  );
  console.log(`${numPassedTests} passed, ${numFailedTests} failed, ${numPendingTests} skipped`);
}
process.exit(vitest.status ?? 1);

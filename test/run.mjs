#!/usr/bin/env node
// The whole test suite, the README's one command. It first installs what is
// missing: Debian's packages for the commands the tests run (with apt-get, as
// root or through sudo) and the npm packages of package-lock.json (`npm ci`,
// only when node_modules is missing or holds other versions than the
// lockfile). Then lint + typecheck, build, and every vitest file; extra
// arguments go to vitest.
// The last line is always `N passed, M failed, K skipped`, and the exit code
// is non-zero exactly when M is (a step that fails counts as one failure).
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { reportStepFailure, runVitest } from "./summary.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));

/**
 * Commands the tests run, each with the Debian package that provides it and
 * another command that may stand in for it. Without a required one many tests
 * fail; without an optional one the tests that use it skip, saying why.
 */
const TOOLS = [
  { command: ["redis-server", "--version"], pkg: "redis-server", required: true },
  // promtool checks the /metrics output.
  { command: ["promtool", "--version"], pkg: "prometheus", required: true },
  // The TLS tests make a self-signed certificate.
  { command: ["openssl", "version"], pkg: "openssl", required: true },
  // The browser tests drive Debian's Chromium through playwright-core.
  { command: ["/usr/bin/chromium", "--version"], pkg: "chromium", required: true },
  // infra/ checks: the YAML files and the compose file.
  { command: ["yamllint", "--version"], pkg: "yamllint", required: false },
  {
    command: ["docker-compose", "version"],
    or: ["docker", "compose", "version"],
    pkg: "docker-compose",
    required: false,
  },
];

function runs([command, ...args]) {
  return spawnSync(command, args, { stdio: "ignore", timeout: 20_000 }).status === 0;
}

/** Runs a step's command; on failure prints why and the closing line, and exits. */
function step(name, [command, ...args]) {
  const result = spawnSync(command, args, { cwd: root, stdio: "inherit" });
  if (result.status !== 0) {
    const status = result.error?.message ?? `exit status ${result.status ?? result.signal}`;
    process.exit(reportStepFailure(name, `${[command, ...args].join(" ")} (${status})`));
  }
}

/** The command prefix that runs apt-get here, or undefined when this user cannot. */
function aptGet() {
  if (!runs(["apt-get", "--version"])) return undefined;
  const apt = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"];
  if (process.getuid?.() === 0) return apt;
  // Not root: sudo, which may ask for a password only where someone can type it.
  if (process.stdin.isTTY === true) {
    return runs(["sudo", "--version"]) ? ["sudo", ...apt] : undefined;
  }
  return runs(["sudo", "-n", "true"]) ? ["sudo", "-n", ...apt] : undefined;
}

function missingTools() {
  return TOOLS.filter(({ command, or }) => !runs(command) && !(or && runs(or)));
}

/**
 * Installs the Debian packages of missing commands when this user may; stops
 * the run (one failure) when a required command is still missing.
 */
function installDebianPackages() {
  const missing = missingTools();
  if (missing.length === 0) return;
  const packages = missing.map(({ pkg }) => pkg);
  const apt = aptGet();
  if (apt === undefined) {
    console.log(`missing ${packages.join(", ")}, and this user cannot install Debian packages`);
  } else {
    console.log(`installing Debian's ${packages.join(", ")}`);
    const install = ["install", "-y", "-qq", "--no-install-recommends", ...packages];
    for (const args of [["update", "-qq"], install]) {
      const [command, ...prefix] = apt;
      if (spawnSync(command, [...prefix, ...args], { stdio: "inherit" }).status !== 0) break;
    }
  }
  const still = missingTools();
  const optional = still.filter((tool) => !tool.required).map(({ pkg }) => pkg);
  const required = still.filter((tool) => tool.required).map(({ pkg }) => pkg);
  if (optional.length > 0) {
    console.log(`not installed: ${optional.join(", ")}; the tests that use them will skip`);
  }
  if (required.length > 0) {
    process.exit(
      reportStepFailure(
        "setup",
        `${required.join(", ")} not installed (as root: apt-get install -y ${required.join(" ")})`,
      ),
    );
  }
}

/**
 * Whether node_modules holds the lockfile's packages at its versions: npm records
 * what it installed in node_modules/.package-lock.json. Optional packages
 * (other platforms' binaries) may be absent.
 */
function npmPackagesCurrent() {
  const installedPath = join(root, "node_modules", ".package-lock.json");
  if (!existsSync(installedPath)) return false;
  const wanted = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8")).packages;
  const installed = JSON.parse(readFileSync(installedPath, "utf8")).packages;
  return Object.entries(wanted).every(
    ([path, entry]) => path === "" || entry.optional || installed[path]?.version === entry.version,
  );
}

installDebianPackages();
if (!npmPackagesCurrent()) {
  console.log("installing the npm packages of package-lock.json (npm ci)");
  step("setup", ["npm", "ci", "--no-audit", "--no-fund"]);
}
step("check", ["npm", "run", "-s", "check"]);
step("build", ["npm", "run", "-s", "build"]);
process.exit(runVitest(process.argv.slice(2), { cwd: root }));

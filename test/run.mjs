#!/usr/bin/env node
// The whole test suite: makes sure redis-server is present (installing
// Debian's package when it is missing and we may), then lint + typecheck,
// build, and every vitest file. Extra arguments go to vitest.
import { spawnSync } from "node:child_process";

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: "inherit", ...options });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

function has(command) {
  return spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
}

if (!has("redis-server")) {
  const apt = process.getuid?.() === 0 ? ["apt-get"] : ["sudo", "apt-get"];
  if (!has("apt-get") || (apt[0] === "sudo" && !has("sudo"))) {
    console.error("redis-server is missing: install it (Debian: apt-get install -y redis-server)");
    process.exit(1);
  }
  console.log("redis-server is missing: installing Debian's redis-server");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const [command, ...prefix] = apt;
  run(command, [...prefix, "update", "-qq"], { env });
  run(command, [...prefix, "install", "-y", "-qq", "redis-server"], { env });
}

run("npm", ["run", "-s", "check"]);
run("npm", ["run", "-s", "build"]);
run("npx", ["vitest", "run", ...process.argv.slice(2)]);

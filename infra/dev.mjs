#!/usr/bin/env node
// `npm run dev`: installs dependencies when they are missing, builds, and runs
// the gateway in dev mode (see runtime/dev/dev.ts). Signals reach the gateway,
// which stops everything it started.
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";

const npm = process.platform === "win32" ? "npm.cmd" : "npm";
function run(args) {
  const result = spawnSync(npm, args, { stdio: "inherit" });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

if (!existsSync("node_modules/.package-lock.json")) run(["ci", "--no-audit", "--no-fund"]);
run(["run", "-s", "build"]);

const child = spawn(process.execPath, ["dist/runtime/bin.js", "dev", ...process.argv.slice(2)], {
  // The IPC channel lets the gateway notice when this launcher goes away.
  stdio: ["inherit", "inherit", "inherit", "ipc"],
});
// The terminal sends Ctrl-C to the whole process group; forward other signals.
process.on("SIGINT", () => {});
process.on("SIGTERM", () => child.kill("SIGTERM"));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));

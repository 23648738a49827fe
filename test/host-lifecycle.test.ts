/**
 * The host's one lifecycle: start order, the §10 stop order, and a failed
 * start stopping what it started through the same path.
 */
import { describe, expect, it } from "vitest";
import { type Component, createLifecycle } from "../runtime/host/lifecycle.js";
import { createMemoryLogger } from "./support/logger.js";

function recorder() {
  const calls: string[] = [];
  const component = (name: string, shutdownStep: number, fail?: "preflight" | "start") =>
    ({
      stopped: `${name} stopped`,
      shutdownStep,
      async preflight() {
        calls.push(`preflight ${name}`);
        if (fail === "preflight") throw new Error(`${name} preflight failed`);
      },
      async start() {
        calls.push(`start ${name}`);
        if (fail === "start") throw new Error(`${name} failed`);
      },
      async stop() {
        calls.push(`stop ${name}`);
      },
    }) satisfies Component;
  return { calls, component };
}

describe("createLifecycle", () => {
  it("runs every preflight, then starts in list order and stops in shutdown-step order, logging each step", async () => {
    const { calls, component } = recorder();
    const logger = createMemoryLogger();
    const lifecycle = createLifecycle(
      [component("redis", 3), component("readers", 1), component("grpc", 2)],
      { logger, budgetMs: () => 1000, mayStopOnFailure: () => true },
    );
    await lifecycle.start();
    await lifecycle.stop();
    await lifecycle.stop();
    expect(calls).toEqual([
      "preflight redis",
      "preflight readers",
      "preflight grpc",
      "start redis",
      "start readers",
      "start grpc",
      "stop readers",
      "stop grpc",
      "stop redis",
    ]);
    expect(logger.lines.filter((line) => line.includes("shutdown:"))).toEqual([
      "info shutdown: readers stopped",
      "info shutdown: grpc stopped",
      "info shutdown: redis stopped",
    ]);
  });

  it("stops everything quietly, once, when a start fails, and rejects with that failure", async () => {
    const { calls, component } = recorder();
    const logger = createMemoryLogger();
    const lifecycle = createLifecycle(
      [component("redis", 2), component("grpc", 1, "start"), component("http", 3)],
      { logger, budgetMs: () => 1000, mayStopOnFailure: () => true },
    );
    await expect(lifecycle.start()).rejects.toThrow("grpc failed");
    await lifecycle.stop();
    expect(calls.slice(3)).toEqual([
      "start redis",
      "start grpc",
      "stop grpc",
      "stop redis",
      "stop http",
    ]);
    expect(logger.lines.some((line) => line.includes("shutdown:"))).toBe(false);
  });

  it("starts nothing when a preflight fails", async () => {
    const { calls, component } = recorder();
    const lifecycle = createLifecycle(
      [component("signer", 1, "preflight"), component("redis", 2)],
      {
        logger: createMemoryLogger(),
        budgetMs: () => 1000,
        mayStopOnFailure: () => true,
      },
    );
    await expect(lifecycle.start()).rejects.toThrow("signer preflight failed");
    expect(calls.filter((call) => call.startsWith("start"))).toEqual([]);
  });

  it("leaves the stop to a running shutdown when a start fails after shutdown began", async () => {
    const { calls, component } = recorder();
    const lifecycle = createLifecycle([component("redis", 1, "start")], {
      logger: createMemoryLogger(),
      budgetMs: () => 1000,
      mayStopOnFailure: () => false,
    });
    await expect(lifecycle.start()).rejects.toThrow("redis failed");
    expect(calls).not.toContain("stop redis");
    await lifecycle.stop();
    expect(calls).toContain("stop redis");
  });

  it("bounds each stop step by the budget and goes on with the next", async () => {
    const logger = createMemoryLogger();
    const stopped: string[] = [];
    const lifecycle = createLifecycle(
      [
        { stopped: "hung stopped", shutdownStep: 1, stop: () => new Promise<void>(() => {}) },
        { stopped: "next stopped", shutdownStep: 2, stop: async () => void stopped.push("next") },
      ],
      { logger, budgetMs: () => 50, mayStopOnFailure: () => true },
    );
    await lifecycle.start();
    await lifecycle.stop();
    expect(stopped).toEqual(["next"]);
    expect(logger.lines).toContain("warn shutdown: hung stopped did not finish within 50 ms");
  });
});

/**
 * The public listener loads Connect only when a browser first calls: its
 * CORS header lists and Connect paths are written out, and these tests keep
 * them equal to what @connectrpc/connect and the generated service say. A
 * fresh process (a loader hook counting @connectrpc modules) shows that
 * making the app loads none and the first Connect call loads them.
 */
import { fileURLToPath } from "node:url";
import { cors } from "@connectrpc/connect";
import { expect, it } from "vitest";
import { EdgeGatewayService } from "../proto/gen-es/edgegateway/v1/edge_gateway_pb.js";
import { CORS_ALLOWED_HEADERS, CORS_EXPOSED_HEADERS } from "../runtime/http/cors.js";
import { CONNECT_PATHS } from "../runtime/http/public.js";
import { spawnNode } from "./support/node-process.js";

it("allows and exposes exactly Connect's CORS headers (plus the W3C trace context)", () => {
  expect(CORS_ALLOWED_HEADERS).toEqual([
    ...cors.allowedHeaders.map((name) => name.toLowerCase()),
    "traceparent",
    "tracestate",
  ]);
  expect(CORS_EXPOSED_HEADERS).toEqual(cors.exposedHeaders.map((name) => name.toLowerCase()));
});

it("mounts a Connect path for every method of the service", () => {
  expect([...CONNECT_PATHS]).toEqual(
    EdgeGatewayService.methods.map((method) => `/${EdgeGatewayService.typeName}/${method.name}`),
  );
});

it("loads no @connectrpc module until the first Connect call", async () => {
  const fixture = fileURLToPath(new URL("./fixtures/connect-lazy/main.mjs", import.meta.url));
  const child = spawnNode("--import", ["tsx", fixture], { waitTimeoutMs: 30_000 });
  try {
    expect(await child.exited).toBe(0);
    const output = child.output();
    expect(output).toContain("loaded at start 0\n");
    // The request does not decode: Connect itself answered it.
    expect(output).toContain("answered 400\n");
    const after = Number(/loaded after a call (\d+)/.exec(output)?.[1]);
    expect(after).toBeGreaterThan(0);
  } finally {
    await child.kill();
  }
});

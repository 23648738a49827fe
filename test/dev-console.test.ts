/**
 * The dev console's routes (contract §15): the page with every control the
 * contract names, the gateway key it verifies against, and `404` at `/_dev/`
 * on a public listener that dev mode did not put the console in front of.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { keyIdOf } from "../handlers/ed25519.js";
import { createDevConsole } from "../runtime/dev/dev-console.js";
import { createPublicHttpApp, toNodeListener } from "../runtime/http/public.js";
import { vectors } from "./support/keys.js";
import { captureLogger } from "./support/logger.js";

const servers: Server[] = [];

async function serve(listener: Parameters<typeof createServer>[1] & object): Promise<string> {
  const server = createServer(listener);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

afterEach(async () => {
  for (const server of servers.splice(0)) {
    await new Promise((resolve) => server.close(resolve));
  }
});

const gatewayKey = Buffer.from(vectors.gateway_key.public_key_base64url, "base64url");

describe("dev console", () => {
  it("serves the page with the contract's controls and the gateway key", async () => {
    const devConsole = createDevConsole(gatewayKey);
    const baseUrl = await serve((request, response) => {
      if (!devConsole(request, response)) response.writeHead(418).end();
    });

    const page = await fetch(`${baseUrl}/_dev/`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    const html = await page.text();
    for (const id of [
      "email",
      "send-code",
      "code",
      "confirm",
      "session",
      "message-type",
      "payload",
      "send",
      "result",
      "subscribe",
      "events",
      "stream-status",
    ]) {
      expect(html).toContain(`data-testid="${id}"`);
    }

    const key = await fetch(`${baseUrl}/_dev/gateway-key`);
    expect(await key.json()).toEqual({
      public_key: vectors.gateway_key.public_key_base64url,
      key_id: keyIdOf(gatewayKey),
    });

    const bare = await fetch(`${baseUrl}/_dev`, { redirect: "manual" });
    expect(bare.status).toBe(308);
    expect(bare.headers.get("location")).toBe("/_dev/");
    const unknown = await fetch(`${baseUrl}/_dev/nope`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({
      error: { code: "not_found", message: "no route for this path" },
    });
    const post = await fetch(`${baseUrl}/_dev/`, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
    // Every other path is left to the gateway's app.
    expect((await fetch(`${baseUrl}/healthz`)).status).toBe(418);
  });

  it("is not served by the public listener outside dev mode", async () => {
    const { logger } = captureLogger();
    const app = createPublicHttpApp({ authUpstream: undefined, isReady: () => true, logger });
    const baseUrl = await serve(toNodeListener(app));
    const response = await fetch(`${baseUrl}/_dev/`);
    expect(response.status).toBe(404);
    expect(await response.json()).toEqual({
      error: { code: "not_found", message: "no route for this path" },
    });
  });
});

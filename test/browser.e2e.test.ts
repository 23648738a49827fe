/**
 * Browsers as devices (contract §14, §15), in real headless Chromium: a page
 * on another origin uses the browser kit against the gateway across origins
 * (WebCrypto key, signed calls over Connect and gRPC-Web, verified events, a
 * revoke ending the stream), and the dev console's whole journey runs against `bin.js dev`.
 */
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../runtime/cli/cli.js";
import { createDevAuthUpstream } from "../runtime/dev/dev-auth-upstream.js";
import { createFetchHandler, type FetchHandler } from "../runtime/host/fetch-handler.js";
import type * as BrowserKit from "../runtime/kit/browser/index.js";
import { publishClientEvent, publishSessionSnapshot } from "../runtime/kit/publishers.js";
import { createCleanup } from "./support/cleanup.js";
import { cuttableProxy } from "./support/cuttable-proxy.js";
import { gatewayEnv, startGateway } from "./support/gateway.js";
import { vectors } from "./support/keys.js";
import { silentLogger } from "./support/logger.js";
import { BIN, type NodeProcess, spawnNode } from "./support/node-process.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";
import { tempDir } from "./support/temp-dir.js";
import { waitFor } from "./support/wait.js";

const CHROMIUM = "/usr/bin/chromium";
const BUNDLE = fileURLToPath(new URL("../dist/browser/edge-gateway-device.js", import.meta.url));
const SCREENSHOT = fileURLToPath(new URL("../docs/dev-console.png", import.meta.url));
const chromiumMissing = !existsSync(CHROMIUM);

/**
 * What the test pages keep on `globalThis` between evaluations. Functions
 * passed to `page.evaluate` run in the page, so each casts `globalThis`
 * itself (the test's TypeScript has no DOM types).
 */
interface PageGlobals {
  kit: typeof BrowserKit;
  device: BrowserKit.BrowserDeviceClient;
  deviceKey: BrowserKit.DeviceKey;
  events: string[];
  streamStatus: string;
  /** The status names that ended each stream of a following subscription. */
  reconnects: string[];
}

/** Serves a page on its own origin that loads the browser kit bundle with `<script type="module">`. */
async function startPageServer(): Promise<{ server: Server; origin: string }> {
  const html = `<!doctype html><meta charset="utf-8"><title>device</title>
<script type="module">
import * as kit from "./edge-gateway-device.js";
globalThis.kit = kit;
</script>`;
  const server = createServer((request, response) => {
    if (request.url === "/edge-gateway-device.js") {
      response.writeHead(200, { "content-type": "text/javascript" });
      response.end(readFileSync(BUNDLE));
    } else {
      response.writeHead(200, { "content-type": "text/html" });
      response.end(html);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function openKitPage(browser: Browser, origin: string): Promise<Page> {
  const page = await browser.newPage();
  await page.goto(`${origin}/`);
  await page.waitForFunction(() => "kit" in globalThis);
  return page;
}

/**
 * Publishes a revoke of the session whose stream `page` holds open, waits for
 * the stream to end, expects `FAILED_PRECONDITION`, and closes the page.
 */
async function expectRevokeEndsStream(
  page: Page,
  admin: Redis,
  session: { deviceSessionId: string; userId: string; clientPublicKey: string },
): Promise<void> {
  await publishSessionSnapshot(admin, { ...session, status: "revoked", revokedAtMs: Date.now() });
  await page.waitForFunction(() => (globalThis as unknown as PageGlobals).streamStatus !== "OPEN");
  expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).streamStatus)).toBe(
    "FAILED_PRECONDITION",
  );
  await page.close();
}

function closeServer(server: Server | undefined): Promise<void> {
  return new Promise((resolve) => (server ? server.close(() => resolve()) : resolve()));
}

let browser: Browser | undefined;

beforeAll(async () => {
  if (chromiumMissing) return;
  if (!existsSync(BUNDLE)) throw new Error(`${BUNDLE} is missing: run npm run build first`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

afterAll(async () => {
  await browser?.close();
});

const skipReason = `${CHROMIUM} is not installed and could not be (Debian: apt-get install -y chromium)`;

describe.skipIf(chromiumMissing)(
  chromiumMissing ? `browser device kit (skipped: ${skipReason})` : "browser device kit",
  () => {
    let redis: TestRedis;
    let admin: Redis;
    let gateway: Awaited<ReturnType<typeof startGateway>>;
    let allowed: Awaited<ReturnType<typeof startPageServer>>;
    let denied: Awaited<ReturnType<typeof startPageServer>>;

    beforeAll(async () => {
      redis = await startRedis();
      admin = redis.client();
      allowed = await startPageServer();
      denied = await startPageServer();
      gateway = await startGateway(redis, {
        env: { GATEWAY_CORS_ALLOWED_ORIGINS: allowed.origin },
        routes: {
          "demo.echo": async (command) => ({ resultCode: "ok", payload: command.payload }),
        },
      });
    });

    afterAll(async () => {
      await gateway?.stop();
      admin?.disconnect();
      await redis?.stop();
      await closeServer(allowed?.server);
      await closeServer(denied?.server);
    });

    it.each(["connect", "grpc-web"] as const)(
      "over %s: a WebCrypto key's session calls and subscribes across origins, everything verified, and a revoke ends the stream",
      async (protocol) => {
        const page = await openKitPage(browser!, allowed.origin);
        const baseUrl = `http://${gateway.addresses.publicHttp}`;
        const publicKey = await page.evaluate(async () => {
          const g = globalThis as unknown as PageGlobals;
          g.deviceKey = await g.kit.generateDeviceKey();
          return {
            text: g.deviceKey.publicKeyBase64Url,
            extractable: g.deviceKey.keyPair.privateKey.extractable,
          };
        });
        expect(publicKey.extractable).toBe(false);
        const session = { deviceSessionId: `ds-browser-${protocol}`, userId: `user-${protocol}` };
        await publishSessionSnapshot(admin, {
          ...session,
          clientPublicKey: publicKey.text,
          status: "active",
        });

        const result = await page.evaluate(
          async ({ baseUrl, deviceSessionId, gatewayPublicKey, protocol }) => {
            const g = globalThis as unknown as PageGlobals;
            g.device = g.kit.createBrowserDeviceClient({
              baseUrl,
              deviceSessionId,
              devicePrivateKey: g.deviceKey.keyPair.privateKey,
              gatewayPublicKey,
              // Connect (the default) or gRPC-Web, both binary.
              ...(protocol === "grpc-web"
                ? { transport: g.kit.createGrpcWebTransport({ baseUrl, useBinaryFormat: true }) }
                : {}),
            });
            const response = await g.device.execute("demo.echo", new TextEncoder().encode("hi"));
            return {
              resultCode: response.resultCode,
              payload: new TextDecoder().decode(response.payload),
            };
          },
          {
            baseUrl,
            deviceSessionId: session.deviceSessionId,
            gatewayPublicKey: vectors.gateway_key.public_key_base64url,
            protocol,
          },
        );
        // execute() resolves only once the response's signature verified.
        expect(result).toEqual({ resultCode: "ok", payload: "hi" });

        await page.evaluate(() => {
          const g = globalThis as unknown as PageGlobals;
          g.events = [];
          g.streamStatus = "OPEN";
          void (async () => {
            try {
              for await (const event of g.device.subscribe()) {
                g.events.push(`${event.eventType} ${new TextDecoder().decode(event.payload)}`);
              }
              g.streamStatus = "ENDED";
            } catch (error) {
              g.streamStatus = g.kit.statusNameOf(error);
            }
          })();
        });
        // The bootstrap event, or the status that ended the stream instead.
        await page.waitForFunction(() => {
          const g = globalThis as unknown as PageGlobals;
          return g.events.length >= 1 || g.streamStatus !== "OPEN";
        });
        expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).streamStatus)).toBe(
          "OPEN",
        );
        await publishClientEvent(admin, {
          userId: session.userId,
          eventType: "demo.note",
          payload: "hello browser",
        });
        await page.waitForFunction(() => (globalThis as unknown as PageGlobals).events.length >= 2);
        expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).events)).toEqual([
          "gateway.server_time ",
          "demo.note hello browser",
        ]);

        await expectRevokeEndsStream(page, admin, { ...session, clientPublicKey: publicKey.text });
      },
      60_000,
    );

    // A dropped connection surfaces in the browser as a network error
    // (Connect: UNKNOWN) or a missing trailer (gRPC-Web: INTERNAL), not as a
    // gateway status; a following subscription reconnects after it.
    it.each(["connect", "grpc-web"] as const)(
      "over %s: a following subscription resumes after its connection is cut, replaying what it missed",
      async (protocol) => {
        const cleanup = createCleanup();
        try {
          const proxy = await cuttableProxy(gateway.addresses.publicHttp, cleanup);
          const page = await openKitPage(browser!, allowed.origin);
          cleanup.defer(() => page.close());
          const publicKey = await page.evaluate(async () => {
            const g = globalThis as unknown as PageGlobals;
            g.deviceKey = await g.kit.generateDeviceKey();
            return g.deviceKey.publicKeyBase64Url;
          });
          const session = {
            deviceSessionId: `ds-cut-${protocol}`,
            userId: `user-cut-${protocol}`,
            clientPublicKey: publicKey,
          };
          await publishSessionSnapshot(admin, { ...session, status: "active" });
          // Events published before any history router ran are not in history.
          await waitFor("a history router", async () => {
            return (await admin.keys("gateway:history-router:*")).length > 0;
          });

          await page.evaluate(
            ({ baseUrl, deviceSessionId, gatewayPublicKey, protocol }) => {
              const g = globalThis as unknown as PageGlobals;
              const device = g.kit.createBrowserDeviceClient({
                baseUrl,
                deviceSessionId,
                devicePrivateKey: g.deviceKey.keyPair.privateKey,
                gatewayPublicKey,
                ...(protocol === "grpc-web"
                  ? { transport: g.kit.createGrpcWebTransport({ baseUrl, useBinaryFormat: true }) }
                  : {}),
              });
              g.events = [];
              g.reconnects = [];
              g.streamStatus = "OPEN";
              void (async () => {
                try {
                  const follow = {
                    minDelayMs: 20,
                    maxDelayMs: 400,
                    onReconnect: (info: { error: unknown }) =>
                      g.reconnects.push(g.kit.statusNameOf(info.error)),
                  };
                  for await (const item of device.subscribe({ follow })) {
                    g.events.push(
                      item.kind === "event"
                        ? `${item.event.eventType} ${item.event.eventId}`
                        : `lost after ${item.lastEventId}`,
                    );
                  }
                  g.streamStatus = "ENDED";
                } catch (error) {
                  g.streamStatus = g.kit.statusNameOf(error);
                }
              })();
            },
            {
              baseUrl: `http://${proxy.address}`,
              deviceSessionId: session.deviceSessionId,
              gatewayPublicKey: vectors.gateway_key.public_key_base64url,
              protocol,
            },
          );
          const events = () => page.evaluate(() => (globalThis as unknown as PageGlobals).events);
          await page.waitForFunction(
            () => (globalThis as unknown as PageGlobals).events.length >= 1,
          );
          const received = await publishClientEvent(admin, {
            userId: session.userId,
            eventType: "demo.note",
          });
          await page.waitForFunction(
            () => (globalThis as unknown as PageGlobals).events.length >= 2,
          );

          proxy.cut();
          await page.waitForFunction(() => {
            const g = globalThis as unknown as PageGlobals;
            return g.reconnects.length >= 1 || g.streamStatus !== "OPEN";
          });
          // Not ended by the cut: the subscription is reconnecting.
          expect(
            await page.evaluate(() => (globalThis as unknown as PageGlobals).streamStatus),
          ).toBe("OPEN");
          const missed = await publishClientEvent(admin, {
            userId: session.userId,
            eventType: "demo.note",
          });
          await page.waitForFunction(
            (id) =>
              (globalThis as unknown as PageGlobals).events.includes(`demo.note ${id}`) ||
              (globalThis as unknown as PageGlobals).streamStatus !== "OPEN",
            missed,
          );

          const seen = await events();
          expect(seen.slice(0, 2)).toEqual([
            expect.stringMatching(/^gateway\.server_time /),
            `demo.note ${received}`,
          ]);
          // Each new stream resumes after the last event received: its
          // bootstrap echoes that id (recovered), then the missed event comes.
          expect(seen.slice(2)).toEqual([
            ...seen.slice(2, -2).map(() => `gateway.server_time ${received}`),
            `gateway.server_time ${received}`,
            `demo.note ${missed}`,
          ]);
          expect(
            await page.evaluate(() => (globalThis as unknown as PageGlobals).streamStatus),
          ).toBe("OPEN");
          const reconnects = await page.evaluate(
            () => (globalThis as unknown as PageGlobals).reconnects,
          );
          expect(["UNKNOWN", "INTERNAL", "UNAVAILABLE"]).toContain(reconnects[0]);
        } finally {
          await cleanup.run();
        }
      },
      60_000,
    );

    it("is refused by the browser for an origin not in GATEWAY_CORS_ALLOWED_ORIGINS", async () => {
      const page = await openKitPage(browser!, denied.origin);
      const outcome = await page.evaluate(
        async ({ baseUrl, gatewayPublicKey }) => {
          const g = globalThis as unknown as PageGlobals;
          const key = await g.kit.generateDeviceKey();
          const device = g.kit.createBrowserDeviceClient({
            baseUrl,
            deviceSessionId: "ds-elsewhere",
            devicePrivateKey: key.keyPair.privateKey,
            gatewayPublicKey,
          });
          try {
            await device.execute("demo.echo");
            return "answered";
          } catch (error) {
            return String(error);
          }
        },
        {
          baseUrl: `http://${gateway.addresses.publicHttp}`,
          gatewayPublicKey: vectors.gateway_key.public_key_base64url,
        },
      );
      // The browser withholds the answer: the call fails before any status reaches the page.
      expect(outcome).toMatch(/Failed to fetch/);
      await page.close();
    });
  },
);

describe.skipIf(chromiumMissing)(
  chromiumMissing ? `dev console (skipped: ${skipReason})` : "dev console",
  () => {
    let dev: NodeProcess | undefined;

    afterAll(async () => {
      if (dev === undefined) return;
      // SIGTERM: dev mode stops its own redis-server; SIGKILL would orphan it.
      const redisPid = /local redis-server \(pid (\d+)\)/.exec(dev.output())?.[1];
      if (dev.child.exitCode === null && dev.child.signalCode === null) {
        dev.child.kill("SIGTERM");
        const timer = setTimeout(() => void dev?.kill(), 15_000);
        await dev.exited;
        clearTimeout(timer);
      }
      if (redisPid !== undefined) {
        try {
          process.kill(Number(redisPid), "SIGKILL");
        } catch {
          // Already gone, as it should be.
        }
      }
    });

    it("signs in by email code, sends a command, shows verified events and a revoke ending the stream", async () => {
      const cwd = tempDir("browser-dev");
      dev = spawnNode(BIN, ["dev"], {
        cwd,
        env: {
          GATEWAY_PUBLIC_HTTP_ADDR: "127.0.0.1:0",
          GATEWAY_AUTHENTICATED_GRPC_ADDR: "127.0.0.1:0",
          GATEWAY_ADMIN_HTTP_ADDR: "127.0.0.1:0",
        },
        waitTimeoutMs: 30_000,
      });
      const [, consoleUrl] = await dev.waitFor(/Device console: (http:\/\/\S+\/_dev\/)/);
      await dev.waitFor(/Ctrl-C stops the gateway/);
      const cliEnv = Object.fromEntries(
        readFileSync(join(cwd, ".dev", "env"), "utf8")
          .split("\n")
          .filter((line) => line.includes("="))
          .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
      );
      const cli = async (args: string[]) => {
        const out: string[] = [];
        const code = await runCli(args, cliEnv, {
          stdout: (line) => out.push(line),
          stderr: (line) => out.push(line),
        });
        expect(code, out.join("\n")).toBe(0);
      };

      const page = await browser!.newPage({ viewport: { width: 1100, height: 740 } });
      const byId = (id: string) => page.getByTestId(id);
      await page.goto(consoleUrl!);

      const email = "ada@example.com";
      await byId("email").fill(email);
      await byId("send-code").click();
      const [, code] = await dev.waitFor(/email code for ada@example\.com: (\d+)/);
      await byId("code").fill(code!);
      await byId("confirm").click();
      await expectText(page, "session", /^dev-device-/);
      const deviceSessionId = (await byId("session").textContent()) ?? "";
      const userId = (await byId("user").textContent()) ?? "";

      await byId("message-type").fill("demo.echo");
      await byId("payload").fill('{"text":"hello"}');
      await byId("send").click();
      await expectText(page, "result", /^ok$/);

      await byId("subscribe").click();
      await expectText(page, "stream-status", /^OPEN$/);
      await cli(["event", "publish", "--user", userId, "--type", "demo.note", "--payload", "hi"]);
      const note = byId("events").locator("li", { hasText: "demo.note" });
      await note.waitFor();
      expect(await note.textContent()).toContain("verified");
      expect(await byId("events").locator("li").count()).toBe(2);

      await cli(["session", "revoke", "--session", deviceSessionId]);
      await expectText(page, "stream-status", /^FAILED_PRECONDITION$/);

      // The README's screenshot; written only when asked, so a test run leaves the tree clean.
      const screenshot = await page.screenshot({ fullPage: true });
      expect(screenshot.length).toBeGreaterThan(0);
      if (process.env.EDGE_GATEWAY_WRITE_SCREENSHOT === "1") {
        await page.screenshot({ path: SCREENSHOT, fullPage: true });
      }
      await page.close();
    }, 60_000);
  },
);

/** Serves a fetch handler on a loopback port, as a fetch-style runtime would (whole bodies). */
async function serveFetchHandler(
  handler: FetchHandler,
): Promise<{ server: Server; baseUrl: string }> {
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", async () => {
      const headers = new Headers();
      for (const [name, value] of Object.entries(request.headers)) {
        if (typeof value === "string") headers.set(name, value);
      }
      const body =
        request.method === "GET" || request.method === "HEAD" ? undefined : Buffer.concat(chunks);
      const answer = await handler.fetch(
        new Request(`http://${request.headers.host}${request.url}`, {
          method: request.method,
          headers,
          ...(body === undefined ? {} : { body }),
        }),
      );
      response.writeHead(answer.status, Object.fromEntries(answer.headers));
      response.end(Buffer.from(await answer.arrayBuffer()));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe.skipIf(chromiumMissing)(
  chromiumMissing
    ? `a web app signs in (skipped: ${skipReason})`
    : "a web app on another origin signs in",
  () => {
    let redis: TestRedis;
    let admin: Redis;
    let page: Awaited<ReturnType<typeof startPageServer>>;
    const printed: string[] = [];
    const authUpstream = () =>
      createDevAuthUpstream({
        publishSession: (snapshot) => publishSessionSnapshot(admin, snapshot),
        print: (line) => printed.push(line),
      });
    const echo = {
      "demo.echo": async (command: { payload: Uint8Array }) => ({
        resultCode: "ok",
        payload: command.payload,
      }),
    };

    beforeAll(async () => {
      redis = await startRedis();
      admin = redis.client();
      page = await startPageServer();
    });

    afterAll(async () => {
      admin?.disconnect();
      await redis?.stop();
      await closeServer(page?.server);
    });

    /** In the page: a WebCrypto key, sign-in by email code (read from `printed`), one command. */
    async function signInAndExecute(app: Page, baseUrl: string, email: string) {
      await app.evaluate(
        async ({ baseUrl, email }) => {
          const g = globalThis as unknown as PageGlobals & { challenge: string };
          g.deviceKey = await g.kit.generateDeviceKey();
          g.challenge = await g.kit.sendEmailCode(baseUrl, email);
        },
        { baseUrl, email },
      );
      const line = printed.find((one) => one.startsWith(`email code for ${email}: `));
      expect(line).toBeDefined();
      const code = line!.slice(line!.lastIndexOf(" ") + 1);
      return app.evaluate(
        async ({ baseUrl, code, gatewayPublicKey }) => {
          const g = globalThis as unknown as PageGlobals & { challenge: string };
          const session = await g.kit.confirmEmailCode(baseUrl, {
            challengeId: g.challenge,
            code,
            clientPublicKey: g.deviceKey.publicKeyBase64Url,
          });
          g.device = g.kit.createBrowserDeviceClient({
            baseUrl,
            deviceSessionId: session.deviceSessionId,
            devicePrivateKey: g.deviceKey.keyPair.privateKey,
            gatewayPublicKey,
          });
          const response = await g.device.execute("demo.echo", new TextEncoder().encode("hi"));
          return { ...session, resultCode: response.resultCode };
        },
        { baseUrl, code, gatewayPublicKey: vectors.gateway_key.public_key_base64url },
      );
    }

    it("against the gateway: signs in, sends a command, receives a verified event, sees a revoke", async () => {
      const gateway = await startGateway(redis, {
        env: { GATEWAY_CORS_ALLOWED_ORIGINS: page.origin },
        routes: echo,
        authUpstream: authUpstream(),
      });
      try {
        const app = await openKitPage(browser!, page.origin);
        const baseUrl = `http://${gateway.addresses.publicHttp}`;
        const session = await signInAndExecute(app, baseUrl, "grace@example.com");
        expect(session.resultCode).toBe("ok");

        await app.evaluate(() => {
          const g = globalThis as unknown as PageGlobals;
          g.events = [];
          g.streamStatus = "OPEN";
          void (async () => {
            try {
              for await (const event of g.device.subscribe()) g.events.push(event.eventType);
              g.streamStatus = "ENDED";
            } catch (error) {
              g.streamStatus = g.kit.statusNameOf(error);
            }
          })();
        });
        await app.waitForFunction(() => (globalThis as unknown as PageGlobals).events.length >= 1);
        await publishClientEvent(admin, { userId: session.userId, eventType: "demo.note" });
        await app.waitForFunction(() => (globalThis as unknown as PageGlobals).events.length >= 2);
        expect(await app.evaluate(() => (globalThis as unknown as PageGlobals).events)).toEqual([
          "gateway.server_time",
          "demo.note",
        ]);
        const stored = await admin.hget(
          `gateway:session:${session.deviceSessionId}`,
          "client_public_key",
        );
        await expectRevokeEndsStream(app, admin, {
          deviceSessionId: session.deviceSessionId,
          userId: session.userId,
          clientPublicKey: stored!,
        });
      } finally {
        await gateway.stop();
      }
    }, 60_000);

    it("against the fetch handler: signs in, sends a command, and is refused once revoked", async () => {
      const handler = createFetchHandler({
        env: gatewayEnv(redis, { GATEWAY_CORS_ALLOWED_ORIGINS: page.origin }),
        routes: echo,
        authUpstream: authUpstream(),
        logger: silentLogger,
      });
      const served = await serveFetchHandler(handler);
      try {
        const app = await openKitPage(browser!, page.origin);
        const session = await signInAndExecute(app, served.baseUrl, "hopper@example.com");
        expect(session.resultCode).toBe("ok");

        const stored = await admin.hget(
          `gateway:session:${session.deviceSessionId}`,
          "client_public_key",
        );
        await publishSessionSnapshot(admin, {
          deviceSessionId: session.deviceSessionId,
          userId: session.userId,
          clientPublicKey: stored!,
          status: "revoked",
          revokedAtMs: Date.now(),
        });
        const refused = await app.evaluate(async () => {
          const g = globalThis as unknown as PageGlobals;
          try {
            await g.device.execute("demo.echo");
            return "answered";
          } catch (error) {
            return `${g.kit.statusNameOf(error)}: ${(error as Error).message}`;
          }
        });
        expect(refused).toMatch(/^FAILED_PRECONDITION: .*device session is revoked/);
        await app.close();
      } finally {
        await closeServer(served.server);
        await handler.close();
      }
    }, 60_000);
  },
);

/** Waits until the element with `testId` shows text matching `pattern`. */
async function expectText(page: Page, testId: string, pattern: RegExp): Promise<void> {
  const element = page.getByTestId(testId);
  const deadline = Date.now() + 20_000;
  for (;;) {
    const text = ((await element.textContent()) ?? "").trim();
    if (pattern.test(text)) return;
    if (Date.now() > deadline) {
      throw new Error(`${testId} shows ${JSON.stringify(text)}, expected ${pattern}`);
    }
    await new Promise((wake) => setTimeout(wake, 50));
  }
}

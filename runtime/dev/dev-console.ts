/**
 * Serves the dev device console under `/_dev/` (contract §15): the page, the
 * browser kit bundle it loads, and the gateway's public key it verifies
 * against. Dev mode puts it in front of the public listener's app; outside dev
 * mode nothing mounts it, so `/_dev/` is the app's `404`.
 */
import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { keyIdOf } from "../../handlers/ed25519.js";
import { CONSOLE_HTML } from "./console-page.js";

/** The path prefix the console answers. */
export const DEV_CONSOLE_PATH = "/_dev/";

/**
 * The browser kit bundle the build writes (`dist/browser/`), found from this
 * module's place in `dist/runtime/dev/`.
 */
const BUNDLE_URL = new URL("../../browser/edge-gateway-device.js", import.meta.url);

/** Answers a request when it is the console's; false for every other path. */
export type DevConsoleHandler = (request: IncomingMessage, response: ServerResponse) => boolean;

function send(
  response: ServerResponse,
  status: number,
  type: string,
  body: string | Buffer,
  head: boolean,
): void {
  response.writeHead(status, {
    "content-type": type,
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
  });
  response.end(head ? undefined : body);
}

function sendError(response: ServerResponse, status: number, code: string, message: string) {
  send(
    response,
    status,
    "application/json; charset=utf-8",
    JSON.stringify({ error: { code, message } }),
    false,
  );
}

/**
 * Creates the console's handler. `/_dev` redirects to `/_dev/`; `GET /_dev/`
 * is the page, `/_dev/edge-gateway-device.js` the browser kit (with its source
 * map), `/_dev/gateway-key` `{"public_key","key_id"}` (base64url raw key);
 * other `/_dev/` paths answer `404`, other methods `405`, in the public
 * listener's error envelope.
 */
export function createDevConsole(gatewayPublicKey: Uint8Array): DevConsoleHandler {
  const gatewayKey = JSON.stringify({
    public_key: Buffer.from(gatewayPublicKey).toString("base64url"),
    key_id: keyIdOf(gatewayPublicKey),
  });
  const files: Readonly<Record<string, () => Promise<{ type: string; body: string | Buffer }>>> = {
    "": async () => ({ type: "text/html; charset=utf-8", body: CONSOLE_HTML }),
    "gateway-key": async () => ({ type: "application/json; charset=utf-8", body: gatewayKey }),
    "edge-gateway-device.js": async () => ({
      type: "text/javascript; charset=utf-8",
      body: await readFile(BUNDLE_URL),
    }),
    "edge-gateway-device.js.map": async () => ({
      type: "application/json; charset=utf-8",
      body: await readFile(new URL(`${BUNDLE_URL.href}.map`)),
    }),
  };
  return (request, response) => {
    const path = (request.url ?? "/").split("?", 1)[0]!;
    if (path === "/_dev") {
      response.writeHead(308, { location: DEV_CONSOLE_PATH, "content-length": 0 });
      response.end();
      return true;
    }
    if (!path.startsWith(DEV_CONSOLE_PATH)) return false;
    const file = files[path.slice(DEV_CONSOLE_PATH.length)];
    if (file === undefined) {
      sendError(response, 404, "not_found", "no route for this path");
    } else if (request.method !== "GET" && request.method !== "HEAD") {
      response.setHeader("allow", "GET, HEAD");
      sendError(response, 405, "method_not_allowed", "method not allowed; use GET, HEAD");
    } else {
      file().then(
        ({ type, body }) => send(response, 200, type, body, request.method === "HEAD"),
        () =>
          sendError(
            response,
            503,
            "service_unavailable",
            "the browser kit bundle is missing; run npm run build",
          ),
      );
    }
    return true;
  };
}

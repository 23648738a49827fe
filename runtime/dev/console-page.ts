/**
 * The dev device console (contract §15), served at `/_dev/` in dev mode: one
 * static page that acts as a browser device through the browser kit. Its
 * controls carry the `data-testid`s the contract lists, for browser tests.
 */

/** The page's HTML; it loads the browser kit from `./edge-gateway-device.js` and the key from `./gateway-key`. */
export const CONSOLE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-gateway dev console</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #1d2433; background: #f4f6fa; }
  body { max-width: 980px; margin: 24px auto; padding: 0 16px; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  .hint { color: #5b6477; font-size: 13px; margin: 0 0 16px; }
  .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
  section { background: #fff; border: 1px solid #dde2ec; border-radius: 8px; padding: 14px 16px; }
  h2 { font-size: 14px; text-transform: uppercase; letter-spacing: .04em; color: #5b6477; margin: 0 0 10px; }
  label { display: block; font-size: 12px; color: #5b6477; margin: 8px 0 2px; }
  input, textarea { width: 100%; box-sizing: border-box; font: 13px ui-monospace, monospace; padding: 6px 8px; border: 1px solid #c8cfdc; border-radius: 5px; }
  textarea { height: 64px; resize: vertical; }
  button { margin-top: 8px; padding: 6px 14px; border: 0; border-radius: 5px; background: #2f6fec; color: #fff; font-weight: 600; cursor: pointer; }
  button:disabled { background: #a9b6d3; cursor: default; }
  output, .value { display: block; font: 13px ui-monospace, monospace; min-height: 18px; margin-top: 4px; word-break: break-all; }
  .wide { grid-column: 1 / -1; }
  ol { list-style: none; margin: 8px 0 0; padding: 0; max-height: 260px; overflow: auto; }
  ol li { font: 13px ui-monospace, monospace; padding: 4px 6px; border-bottom: 1px solid #eef1f6; display: flex; gap: 12px; }
  ol li .type { font-weight: 600; min-width: 180px; }
  ol li .check { color: #1b8a4b; }
  ol li .id, ol li .payload { color: #5b6477; }
  .status { font-weight: 700; }
  .error { color: #b3261e; }
</style>
</head>
<body>
<h1>edge-gateway dev console</h1>
<p class="hint">A browser device: a non-extractable WebCrypto Ed25519 key, sign-in by email code (printed on the dev terminal), signed commands and verified events over Connect.</p>
<div class="grid">
  <section>
    <h2>1 · Sign in</h2>
    <label for="email">Email</label>
    <input id="email" data-testid="email" type="email" value="dev@example.com" autocomplete="off">
    <button data-testid="send-code">Send code</button>
    <label for="code">Code (see the terminal)</label>
    <input id="code" data-testid="code" inputmode="numeric" autocomplete="off">
    <button data-testid="confirm" disabled>Confirm</button>
    <label>Device session</label>
    <output data-testid="session"></output>
    <label>User</label>
    <output data-testid="user"></output>
    <label>Device public key</label>
    <output data-testid="device-key"></output>
    <output data-testid="auth-status" class="error"></output>
  </section>
  <section>
    <h2>2 · ExecuteCommand</h2>
    <label for="message-type">Message type</label>
    <input id="message-type" data-testid="message-type" value="demo.echo">
    <label for="payload">JSON payload</label>
    <textarea id="payload" data-testid="payload">{"text":"hello from the browser"}</textarea>
    <button data-testid="send" disabled>Send</button>
    <label>Result code</label>
    <output data-testid="result" class="status"></output>
    <label>Response payload</label>
    <output data-testid="result-payload"></output>
  </section>
  <section class="wide">
    <h2>3 · SubscribeEvents</h2>
    <button data-testid="subscribe" disabled>Subscribe</button>
    <label>Stream status</label>
    <output data-testid="stream-status" class="status"></output>
    <output data-testid="stream-detail"></output>
    <ol data-testid="events"></ol>
  </section>
</div>
<script type="module">
import {
  confirmEmailCode,
  createBrowserDeviceClient,
  generateDeviceKey,
  sendEmailCode,
  statusNameOf,
} from "./edge-gateway-device.js";

const el = (id) => document.querySelector('[data-testid="' + id + '"]');
const baseUrl = location.origin;
const text = new TextDecoder();
const messageOf = (error) => error.rawMessage ?? error.message ?? String(error);
const gatewayKey = (await (await fetch("./gateway-key")).json()).public_key;
const deviceKey = await generateDeviceKey();
el("device-key").textContent = deviceKey.publicKeyBase64Url;
let challengeId;
let device;
let subscription;

function failed(target, error) {
  target.textContent = statusNameOf(error) === "UNKNOWN" ? messageOf(error) : statusNameOf(error) + ": " + messageOf(error);
}

el("send-code").addEventListener("click", async () => {
  el("auth-status").textContent = "";
  try {
    challengeId = await sendEmailCode(baseUrl, el("email").value.trim());
    el("confirm").disabled = false;
    el("code").focus();
  } catch (error) {
    failed(el("auth-status"), error);
  }
});

el("confirm").addEventListener("click", async () => {
  el("auth-status").textContent = "";
  try {
    const session = await confirmEmailCode(baseUrl, {
      challengeId,
      code: el("code").value.trim(),
      clientPublicKey: deviceKey.publicKeyBase64Url,
    });
    device = createBrowserDeviceClient({
      baseUrl,
      deviceSessionId: session.deviceSessionId,
      devicePrivateKey: deviceKey.keyPair.privateKey,
      gatewayPublicKey: gatewayKey,
    });
    el("session").textContent = session.deviceSessionId;
    el("user").textContent = session.userId;
    el("send").disabled = false;
    el("subscribe").disabled = false;
  } catch (error) {
    failed(el("auth-status"), error);
  }
});

el("send").addEventListener("click", async () => {
  el("result").textContent = "";
  el("result-payload").textContent = "";
  let payload;
  try {
    payload = new TextEncoder().encode(JSON.stringify(JSON.parse(el("payload").value)));
  } catch {
    el("result-payload").textContent = "the payload is not JSON";
    return;
  }
  try {
    const response = await device.execute(el("message-type").value.trim(), payload);
    el("result").textContent = response.resultCode;
    el("result-payload").textContent = text.decode(response.payload) + "  (signature verified)";
  } catch (error) {
    el("result").textContent = statusNameOf(error);
    el("result-payload").textContent = messageOf(error);
  }
});

// The device client yields an event only after its gateway signature verified.
function showEvent(event) {
  const item = document.createElement("li");
  const fields = [["type", event.eventType], ["check", "verified"], ["id", event.eventId], ["payload", text.decode(event.payload)]];
  for (const [name, value] of fields) {
    const span = document.createElement("span");
    span.className = name;
    span.textContent = value;
    item.append(span);
  }
  el("events").append(item);
  item.scrollIntoView({ block: "nearest" });
}

el("subscribe").addEventListener("click", async () => {
  subscription?.abort();
  const controller = new AbortController();
  subscription = controller;
  el("stream-status").textContent = "CONNECTING";
  el("stream-detail").textContent = "";
  const onReconnect = ({ error }) => {
    el("stream-status").textContent = "RECONNECTING after " + (error === undefined ? "end of stream" : statusNameOf(error));
  };
  try {
    for await (const item of device.subscribe({ follow: { onReconnect }, signal: controller.signal })) {
      if (item.kind === "continuity_lost") {
        el("stream-detail").textContent = "continuity lost after " + item.lastEventId + ": events may be missing; resumed at " + item.position;
        continue;
      }
      el("stream-status").textContent = "OPEN";
      showEvent(item.event);
    }
    if (subscription === controller) el("stream-status").textContent = "CLOSED";
  } catch (error) {
    if (subscription !== controller) return;
    el("stream-status").textContent = statusNameOf(error);
    el("stream-detail").textContent = messageOf(error);
  }
});
</script>
</body>
</html>
`;

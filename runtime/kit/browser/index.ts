/**
 * The browser device kit (`edge-gateway/browser`): WebCrypto Ed25519 device
 * keys, sign-in by email code, and a device client over Connect that signs
 * requests and verifies every response and event. Free of Node-only APIs; the
 * build also bundles it into `dist/browser/edge-gateway-device.js` for a plain
 * `<script type="module">`.
 */
// The transports, so a page loading only the bundle can pick gRPC-Web.
export { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
export * from "../resumable-subscription.js";
export * from "./device-client.js";
export * from "./sign-in.js";
export * from "./signed-bytes.js";
export * from "./status-name.js";
export * from "./web-ed25519.js";

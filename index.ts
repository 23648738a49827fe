/**
 * The edge gateway kit: the host, the stateless handlers and their ports,
 * signing and key helpers, route factories, publisher helpers and a device
 * client.
 */
export * from "./handlers/authenticate.js";
export * from "./handlers/ed25519.js";
export * from "./handlers/errors.js";
export * from "./handlers/execute-command.js";
export * from "./handlers/identifiers.js";
export type * from "./handlers/ports.js";
export * from "./handlers/public-auth.js";
export * from "./handlers/signing.js";
export * from "./handlers/subscribe-events.js";
export {
  ConfigError,
  type GatewayConfig,
  loadConfig,
  loadRedisToolConfig,
  parseAddress,
  parseDuration,
} from "./runtime/config.js";
export * from "./runtime/device-client.js";
export {
  createGateway,
  type Gateway,
  type GatewayAddresses,
  type GatewayOptions,
  type PublicHttpListener,
} from "./runtime/gateway.js";
export {
  createHttpAuthUpstream,
  type HttpAuthUpstreamOptions,
} from "./runtime/http-auth-upstream.js";
export { createHttpRoute, HttpRouteHeaders, type HttpRouteOptions } from "./runtime/http-route.js";
export * from "./runtime/publishers.js";
export { createStaticRouter, defineRoutes } from "./runtime/router.js";
export { createResponseSigner, loadResponseSigner, parseSignerKeyPem } from "./runtime/signer.js";

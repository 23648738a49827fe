/**
 * The edge gateway kit: the host, the stateless handlers, ports, signing and
 * key helpers, and the publisher and device client helpers.
 */
export * from "./handlers/authenticate.js";
export * from "./handlers/ed25519.js";
export * from "./handlers/errors.js";
export * from "./handlers/execute-command.js";
export * from "./handlers/identifiers.js";
export type * from "./handlers/ports.js";
export * from "./handlers/signing.js";
export {
  ConfigError,
  type GatewayConfig,
  loadConfig,
  parseAddress,
  parseDuration,
} from "./runtime/config.js";
export {
  createGateway,
  type Gateway,
  type GatewayAddresses,
  type GatewayOptions,
} from "./runtime/gateway.js";
export { createStaticRouter, defineRoutes } from "./runtime/router.js";
export { createResponseSigner, loadResponseSigner, parseSignerKeyPem } from "./runtime/signer.js";

// A routes module for GATEWAY_ROUTES_MODULE: maps message types to handlers.
// Each handler gets the authenticated command and a context with an
// AbortSignal, the deadline and a logger, and returns { resultCode, payload }.

/** @type {import("edge-gateway").Routes} */
export const routes = {
  "demo.echo": async (command) => ({ resultCode: "ok", payload: command.payload }),
};

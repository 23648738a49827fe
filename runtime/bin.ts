#!/usr/bin/env node
/**
 * The `edge-gateway` bin: with no command it runs the gateway; `dev` runs dev
 * mode; anything else is a CLI command. Everything loads through dynamic
 * imports so that telemetry's loader hook is in place before ioredis loads.
 * Both ways of running a gateway first set the V8 flags of
 * runtime/host/v8-flags.ts.
 */
const [command, ...args] = process.argv.slice(2);
const runsGateway = command === undefined || command === "serve" || command === "dev";
if (runsGateway) (await import("./host/v8-flags.js")).applyGatewayV8Flags();
if (command === undefined || command === "serve") {
  await import("./telemetry/register.js");
  const { serve } = await import("./host/serve.js");
  await serve();
} else if (command === "dev") {
  const { runDev } = await import("./dev/dev.js");
  await runDev().catch(async (error: unknown) => {
    const { createLogger } = await import("./telemetry/logger.js");
    createLogger("info").error(`dev mode failed: ${(error as Error).message}`);
    process.exit(1);
  });
} else {
  const { runCli } = await import("./cli/cli.js");
  process.exit(await runCli([command, ...args]));
}

// Embedding the gateway: inject routes in code instead of a routes module.
// Run with the same GATEWAY_* environment as the bin:
//   node docs/examples/embed.mjs
import { createGateway } from "edge-gateway";

const gateway = createGateway({
  routes: {
    "demo.echo": async (command, ctx) => {
      ctx.logger.debug(`demo.echo from ${command.userId}`);
      return { resultCode: "ok", payload: command.payload };
    },
  },
});

await gateway.start();
console.log(`embedded gateway ready: ${JSON.stringify(gateway.addresses)}`);

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.once(signal, async () => {
    await gateway.stop();
    process.exit(0);
  });
}

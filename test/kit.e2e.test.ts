/**
 * The package entry as embedding code uses it: `import { createGateway } from
 * "edge-gateway"` with routes injected in code (docs/examples/embed.mjs),
 * driven by the kit's device client and publisher helpers.
 */
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDeviceClient } from "../runtime/kit/device-client.js";
import { publishSessionSnapshot } from "../runtime/kit/publishers.js";
import { gatewayEnv } from "./support/gateway.js";
import { newDeviceKey, vectors } from "./support/keys.js";
import { spawnNode } from "./support/node-process.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";

const root = fileURLToPath(new URL("..", import.meta.url));
let redis: TestRedis;

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  await redis?.stop();
});

describe("the kit through the package entry", () => {
  it("exports the host, handlers, helpers and types", async () => {
    const kit = await import(new URL("../dist/index.js", import.meta.url).href);
    for (const name of [
      "createGateway",
      "createFetchHandler",
      "createFetchHandlerFromPorts",
      "createExecuteCommandHandler",
      "createSubscribeEventsAuthenticator",
      "sendEmailCode",
      "confirmEmailCode",
      "createStaticRouter",
      "createHttpRoute",
      "createHttpAuthUpstream",
      "publishSessionSnapshot",
      "publishClientEvent",
      "createDeviceClient",
      "resumableSubscription",
      "isRecoverableStreamEnd",
      "GatewayError",
      "ERROR_TABLE",
    ]) {
      expect(typeof kit[name], name).not.toBe("undefined");
    }
  });

  it("runs an embedded gateway whose injected route answers a signed device call", async () => {
    const device = newDeviceKey();
    const admin = redis.client();
    await publishSessionSnapshot(admin, {
      deviceSessionId: "ds-kit",
      userId: "u-kit",
      clientPublicKey: device.publicKeyText,
      status: "active",
    });
    admin.disconnect();

    const embedded = spawnNode("docs/examples/embed.mjs", [], {
      cwd: root,
      env: gatewayEnv(redis),
    });
    const { child, exited } = embedded;
    try {
      const [, ready] = await embedded.waitFor(/embedded gateway ready: (\{.*\})/);
      const addresses = JSON.parse(ready!) as { grpc: string };
      const client = createDeviceClient({
        address: addresses.grpc,
        deviceSessionId: "ds-kit",
        devicePrivateKey: device.privateKey,
        gatewayPublicKey: vectors.gateway_key.public_key_base64url,
      });
      try {
        const response = await client.execute("demo.echo", Buffer.from("embedded"));
        expect(response.resultCode).toBe("ok");
        expect(Buffer.from(response.payload).toString()).toBe("embedded");
      } finally {
        client.close();
      }
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    } finally {
      await embedded.kill();
    }
  });
});

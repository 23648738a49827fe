/**
 * The gRPC listener's operational surface on the real gateway host: native
 * TLS on and off, and gRPC health following readiness through shutdown.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ChannelCredentials, ClientError, createChannel, createClient, Status } from "nice-grpc";
import { HealthDefinition } from "nice-grpc-server-health";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDeviceClient } from "../runtime/kit/device-client.js";
import { startGateway, storeSession } from "./support/gateway.js";
import { newDeviceKey, vectors } from "./support/keys.js";
import { startRedis, type TestRedis } from "./support/redis-server.js";
import { tempDir } from "./support/temp-dir.js";

/** `grpc.health.v1.HealthCheckResponse.ServingStatus` values. */
const SERVING = 1;
const NOT_SERVING = 2;

let redis: TestRedis;
const device = newDeviceKey();

beforeAll(async () => {
  redis = await startRedis();
  await storeSession(redis, {
    deviceSessionId: "ds-ops",
    userId: "u-ops",
    publicKeyText: device.publicKeyText,
  });
});

afterAll(async () => {
  await redis?.stop();
});

function selfSignedCertificate(): { certPath: string; keyPath: string; cert: Buffer } {
  const dir = tempDir("tls");
  const certPath = join(dir, "cert.pem");
  const keyPath = join(dir, "key.pem");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      keyPath,
      "-out",
      certPath,
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ],
    { stdio: "ignore" },
  );
  return { certPath, keyPath, cert: readFileSync(certPath) };
}

/** A client acting as the stored device, over cleartext unless `credentials` say otherwise. */
function deviceClient(address: string, credentials?: ChannelCredentials) {
  return createDeviceClient({
    address,
    deviceSessionId: "ds-ops",
    devicePrivateKey: device.privateKey,
    gatewayPublicKey: vectors.gateway_key.public_key_base64url,
    ...(credentials === undefined ? {} : { credentials }),
  });
}

const echo = {
  "demo.echo": async (command: { payload: Uint8Array }) => ({
    resultCode: "ok",
    payload: command.payload,
  }),
};

describe("gRPC TLS", () => {
  it("serves cleartext h2c by default", async () => {
    const gateway = await startGateway(redis, { routes: echo });
    const client = deviceClient(gateway.addresses.grpc);
    try {
      expect((await client.execute("demo.echo", Buffer.from("h2c"))).resultCode).toBe("ok");
    } finally {
      client.close();
      await gateway.stop();
    }
  });

  it("serves TLS when both certificate and key paths are set, and refuses cleartext clients", async () => {
    const tls = selfSignedCertificate();
    const gateway = await startGateway(redis, {
      routes: echo,
      env: { GATEWAY_GRPC_TLS_CERT_PATH: tls.certPath, GATEWAY_GRPC_TLS_KEY_PATH: tls.keyPath },
    });
    expect(
      gateway.logger.lines.some((line) => /authenticated gRPC listening on .* \(TLS\)/.test(line)),
    ).toBe(true);
    const secure = deviceClient(gateway.addresses.grpc, ChannelCredentials.createSsl(tls.cert));
    const cleartext = deviceClient(gateway.addresses.grpc);
    try {
      const response = await secure.execute("demo.echo", Buffer.from("tls"));
      expect(Buffer.from(response.payload).toString()).toBe("tls");
      const error = await cleartext
        .execute("demo.echo", Buffer.from("plain"), { deadline: new Date(Date.now() + 3000) })
        .then(
          () => undefined,
          (caught: unknown) => caught,
        );
      expect(error).toBeInstanceOf(ClientError);
      expect((error as ClientError).code).toBe(Status.UNAVAILABLE);
    } finally {
      secure.close();
      cleartext.close();
      await gateway.stop();
    }
  });
});

describe("gRPC health", () => {
  // A Watch opened while ready sees SERVING, then NOT_SERVING once shutdown
  // begins, then ends with the shutdown status.
  it("reports SERVING while ready and NOT_SERVING once shutdown begins", async () => {
    const gateway = await startGateway(redis, { routes: echo });
    const channel = createChannel(gateway.addresses.grpc);
    const health = createClient(HealthDefinition, channel);
    try {
      for (const service of ["", "edgegateway.v1.EdgeGatewayService"]) {
        const { status } = await health.check({ service });
        expect(status).toBe(SERVING);
      }
      const seen: number[] = [];
      const watching = (async () => {
        for await (const update of health.watch({ service: "" })) {
          seen.push(update.status);
          if (update.status === SERVING) void gateway.stop();
        }
      })().then(
        () => undefined,
        (error: unknown) => error,
      );
      const ended = await watching;
      expect(seen).toEqual([SERVING, NOT_SERVING]);
      expect(ended).toBeInstanceOf(ClientError);
      expect((ended as ClientError).code).toBe(Status.UNAVAILABLE);
    } finally {
      channel.close();
      await gateway.stop();
    }
  });
});

/**
 * The revoke probe of `bench/push-idle.ts`: the devices whose revocation is
 * timed, in a process of their own. The bench's main process holds thousands
 * of connections, and its event loop stalls for up to 40 ms at times (its
 * garbage collections), which would be counted as the gateway's revoke
 * latency. Here a few hundred connections keep the client's share small.
 *
 *   fork("bench/peer/revoke-probe.ts", { execArgv: ["--import", "tsx"] })
 *
 * Driven over the IPC channel, one message at a time, each answered:
 * `open` (devices with their keys as PKCS#8 DER, base64) → `opened`;
 * `ends` → the streams that ended so far; `revoke` → the revoke times
 * (`revokeOneByOne`, the first `warmUp` untimed); `close` → `closed`, then the process exits. A failure
 * answers `error` with its message.
 */
import { createPrivateKey } from "node:crypto";
import { Redis } from "ioredis";
import { closeDevices, type Device, openDevices, revokeOneByOne } from "../push-devices.js";

/** A device as the main process hands it over. */
export interface ProbeDevice {
  readonly index: number;
  readonly userId: string;
  readonly deviceSessionId: string;
  /** The private key, PKCS#8 DER, base64. */
  readonly privateKeyDer: string;
  readonly publicKeyText: string;
}

/** What the main process sends. */
export type ProbeCommand =
  | {
      readonly type: "open";
      readonly address: string;
      readonly label: string;
      readonly batch: number;
      /** The Redis the snapshots are published to: `host:port` and its password. */
      readonly redis: { readonly addr: string; readonly password: string };
      readonly devices: readonly ProbeDevice[];
    }
  /** Revokes every device, one after another; the first `warmUp` are not timed. */
  | { readonly type: "revoke"; readonly warmUp: number }
  | { readonly type: "ends" | "close" };

const send = (message: unknown) => process.send?.(message);

let devices: Device[] = [];
let redis: Redis | undefined;

async function handle(command: ProbeCommand): Promise<unknown> {
  switch (command.type) {
    case "open": {
      const [host, port] = command.redis.addr.split(":");
      redis = new Redis({ host, port: Number(port), password: command.redis.password });
      devices = command.devices.map((device) => ({
        index: device.index,
        userId: device.userId,
        deviceSessionId: device.deviceSessionId,
        publicKeyText: device.publicKeyText,
        privateKey: createPrivateKey({
          key: Buffer.from(device.privateKeyDer, "base64"),
          format: "der",
          type: "pkcs8",
        }),
        open: false,
        events: [],
      }));
      const openRetries = await openDevices(devices, command.address, command.label, command.batch);
      return { type: "opened", openRetries };
    }
    case "ends":
      return {
        type: "ends",
        ended: devices
          .filter((device) => device.end !== undefined)
          .map((device) => `${device.deviceSessionId}: ${device.end!.code} ${device.end!.message}`),
      };
    case "revoke":
      if (redis === undefined) throw new Error("revoke before open");
      return { type: "revoked", ...(await revokeOneByOne(redis, devices, command.warmUp)) };
    case "close":
      await closeDevices(devices);
      await redis?.quit();
      return { type: "closed" };
  }
}

process.on("message", (command: ProbeCommand) => {
  handle(command).then(
    (answer) => {
      send(answer);
      if (command.type === "close") process.disconnect();
    },
    (error: unknown) => send({ type: "error", message: (error as Error).stack ?? String(error) }),
  );
});
// The main process went away: nothing left to measure for.
process.on("disconnect", () => process.exit(0));

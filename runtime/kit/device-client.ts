/**
 * A device-side client: signs requests with the device session's key and
 * verifies the gateway's signature on every response and pushed event.
 */
import { createPrivateKey, type KeyObject, randomUUID, sign } from "node:crypto";
import { type ChannelCredentials, createChannel, createClientFactory } from "nice-grpc";
import { deadlineMiddleware } from "nice-grpc-client-middleware-deadline";
import { importRawPublicKey, keyIdOf, verifySignature } from "../../handlers/ed25519.js";
import {
  eventSignedBytes,
  executeCommandResponseSignedBytes,
  executeCommandSignedBytes,
  subscribeEventsSignedBytes,
} from "../../handlers/signing.js";
import {
  EdgeGatewayServiceDefinition,
  type ExecuteCommandRequest,
  type ExecuteCommandResponse,
  type SubscribeEventsRequest,
  type SubscribeEventsResponse,
} from "../../proto/gen/edgegateway/v1/edge_gateway.js";
import {
  type FollowOptions,
  type ResumableItem,
  type SubscribeCall,
  subscribeOrFollow,
} from "./resumable-subscription.js";

/** A response or event whose gateway signature did not verify. */
export class GatewaySignatureError extends Error {
  override readonly name = "GatewaySignatureError";
}

function toPrivateKey(key: KeyObject | string): KeyObject {
  return typeof key === "string" ? createPrivateKey(key) : key;
}

/** Builds a signed ExecuteCommand request. */
export function signExecuteCommandRequest(
  fields: {
    deviceSessionId: string;
    messageType: string;
    requestId: string;
    timestampMs: number;
    payload?: Uint8Array;
  },
  devicePrivateKey: KeyObject | string,
): ExecuteCommandRequest {
  const payload = Buffer.from(fields.payload ?? new Uint8Array());
  const signed = { ...fields, payload };
  return {
    protocolVersion: 1,
    ...signed,
    signature: sign(null, executeCommandSignedBytes(signed), toPrivateKey(devicePrivateKey)),
  };
}

/** Builds a signed SubscribeEvents request. */
export function signSubscribeEventsRequest(
  fields: { deviceSessionId: string; requestId: string; timestampMs: number; lastEventId?: string },
  devicePrivateKey: KeyObject | string,
): SubscribeEventsRequest {
  const signed = { ...fields, lastEventId: fields.lastEventId ?? "" };
  return {
    protocolVersion: 1,
    ...signed,
    signature: sign(null, subscribeEventsSignedBytes(signed), toPrivateKey(devicePrivateKey)),
  };
}

/** A gateway public key ready for verification. */
export interface GatewayKey {
  readonly keyId: string;
  readonly key: KeyObject;
}

/** Imports the gateway's raw 32-byte public key (or its base64/base64url text). */
export function importGatewayKey(raw: Uint8Array | string): GatewayKey {
  const bytes = typeof raw === "string" ? Buffer.from(raw, "base64url") : raw;
  const parsed = importRawPublicKey(bytes);
  if (!parsed.ok) throw new TypeError(`gateway public key refused (${parsed.problem})`);
  return { keyId: keyIdOf(parsed.raw), key: parsed.key };
}

/** Verifies an ExecuteCommand response's key id and signature; throws GatewaySignatureError. */
export async function verifyExecuteCommandResponse(
  response: ExecuteCommandResponse,
  deviceSessionId: string,
  gateway: GatewayKey,
): Promise<void> {
  const bytes = executeCommandResponseSignedBytes({ ...response, deviceSessionId });
  if (
    response.keyId !== gateway.keyId ||
    !(await verifySignature(gateway.key, bytes, response.signature))
  ) {
    throw new GatewaySignatureError(
      `response ${response.requestId} has an invalid gateway signature`,
    );
  }
}

/** Verifies a pushed event's key id and signature; throws GatewaySignatureError. */
export async function verifyEvent(
  event: SubscribeEventsResponse,
  gateway: GatewayKey,
): Promise<void> {
  if (
    event.keyId !== gateway.keyId ||
    !(await verifySignature(gateway.key, eventSignedBytes(event), event.signature))
  ) {
    throw new GatewaySignatureError(`event ${event.eventId} has an invalid gateway signature`);
  }
}

/** Options of {@link createDeviceClient}. */
export interface DeviceClientOptions {
  /** Gateway gRPC address, `host:port`. */
  readonly address: string;
  readonly deviceSessionId: string;
  /** The device session's Ed25519 private key (KeyObject or PKCS#8 PEM). */
  readonly devicePrivateKey: KeyObject | string;
  /** The gateway's raw public key (bytes or base64url). */
  readonly gatewayPublicKey: Uint8Array | string;
  /** TLS credentials; cleartext h2c when absent. */
  readonly credentials?: ChannelCredentials;
  /** Device clock; `Date.now` by default. */
  readonly now?: () => number;
}

/** One item of a following subscription: a verified event, or continuity lost. */
export type FollowedItem = ResumableItem<SubscribeEventsResponse>;

export type { FollowOptions, SubscribeCall } from "./resumable-subscription.js";

/**
 * Creates a device client.
 *
 * @example
 * const device = createDeviceClient({ address: "127.0.0.1:9090", deviceSessionId: "ds-1",
 *   devicePrivateKey: pem, gatewayPublicKey: "PUAXw-hDiVqStwqnTRt-vJyYLM8uxJaMwM1V8Sr0Zgw" });
 * const { resultCode, payload } = await device.execute("demo.echo", Buffer.from("hi"));
 * for await (const event of device.subscribe()) console.log(event.eventType);
 * for await (const item of device.subscribe({ follow: true })) {
 *   if (item.kind === "continuity_lost") console.log("resync from the backend");
 *   else console.log(item.event.eventType);
 * }
 * device.close();
 */
export function createDeviceClient(options: DeviceClientOptions) {
  const channel = createChannel(options.address, options.credentials);
  const client = createClientFactory()
    .use(deadlineMiddleware)
    .create(EdgeGatewayServiceDefinition, channel);
  const privateKey = toPrivateKey(options.devicePrivateKey);
  const gateway = importGatewayKey(options.gatewayPublicKey);
  const now = options.now ?? (() => Date.now());

  /** One push stream: yields verified events, the bootstrap event first. */
  async function* openStream(
    requestId: string,
    lastEventId: string,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<SubscribeEventsResponse> {
    const request = signSubscribeEventsRequest(
      { deviceSessionId: options.deviceSessionId, requestId, timestampMs: now(), lastEventId },
      privateKey,
    );
    for await (const event of client.subscribeEvents(request, signal ? { signal } : {})) {
      await verifyEvent(event, gateway);
      yield event;
    }
  }

  /**
   * Opens a push stream; yields verified events, the bootstrap event first,
   * and ends with the stream's status.
   */
  function subscribe(
    call?: SubscribeCall & { follow?: false },
  ): AsyncGenerator<SubscribeEventsResponse>;
  /**
   * Follows the device's events across streams (contract §12): reconnects
   * after a recoverable end (`isRecoverableStreamEnd`: `UNAVAILABLE`,
   * `RESOURCE_EXHAUSTED`, a reset stream, a dropped connection), each
   * time with a freshly signed request resuming after the last `event_id`
   * received, and yields a `continuity_lost` item, before the new stream's
   * bootstrap event, when the gateway could not resume without a gap. Throws
   * the status that ends it otherwise (a revoke: `FAILED_PRECONDITION`); ends
   * without an error when `signal` aborts.
   */
  function subscribe(
    call: SubscribeCall & { follow: true | FollowOptions },
  ): AsyncGenerator<FollowedItem>;
  /** Either of the above, as `follow` says. */
  function subscribe(
    call: SubscribeCall & { follow?: boolean | FollowOptions },
  ): AsyncGenerator<SubscribeEventsResponse> | AsyncGenerator<FollowedItem>;
  function subscribe(
    call: SubscribeCall & { follow?: boolean | FollowOptions } = {},
  ): AsyncGenerator<SubscribeEventsResponse> | AsyncGenerator<FollowedItem> {
    return subscribeOrFollow(openStream, call, randomUUID);
  }

  return {
    /** Signs and sends a command; resolves the verified response. */
    async execute(
      messageType: string,
      payload: Uint8Array = new Uint8Array(),
      call: { requestId?: string; signal?: AbortSignal; deadline?: Date | number } = {},
    ): Promise<ExecuteCommandResponse> {
      const request = signExecuteCommandRequest(
        {
          deviceSessionId: options.deviceSessionId,
          messageType,
          requestId: call.requestId ?? randomUUID(),
          timestampMs: now(),
          payload,
        },
        privateKey,
      );
      const response = await client.executeCommand(request, {
        ...(call.signal ? { signal: call.signal } : {}),
        ...(call.deadline !== undefined ? { deadline: call.deadline } : {}),
      });
      await verifyExecuteCommandResponse(response, options.deviceSessionId, gateway);
      return response;
    },
    subscribe,
    /** Closes the channel. */
    close(): void {
      channel.close();
    },
  };
}

/** A device client. */
export type DeviceClient = ReturnType<typeof createDeviceClient>;

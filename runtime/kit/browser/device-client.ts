/**
 * The device client for browsers and other Web runtimes (contract §14): the
 * Node kit's device client over the Connect protocol instead of gRPC, with
 * WebCrypto Ed25519 instead of `node:crypto`. It signs every request with the
 * device's (non-extractable) private key, verifies the gateway's signature on
 * every response and pushed event, and follows a device's events across
 * reconnects with `last_event_id`.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Client, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import {
  EdgeGatewayService,
  type ExecuteCommandRequestSchema,
  type ExecuteCommandResponse,
  type SubscribeEventsRequestSchema,
  type SubscribeEventsResponse,
} from "../../../proto/gen-es/edgegateway/v1/edge_gateway_pb.js";
import {
  type FollowOptions,
  type ResumableItem,
  type SubscribeCall,
  subscribeOrFollow,
} from "../resumable-subscription.js";
import {
  eventSignedBytes,
  executeCommandResponseSignedBytes,
  executeCommandSignedBytes,
  subscribeEventsSignedBytes,
} from "./signed-bytes.js";
import {
  importGatewayKey,
  signEd25519,
  verifyEd25519,
  type WebCryptoKey,
  type WebGatewayKey,
} from "./web-ed25519.js";

/** A response or event whose gateway signature did not verify. */
export class GatewaySignatureError extends Error {
  override readonly name = "GatewaySignatureError";
}

/** A signed ExecuteCommand request, ready for the generated Connect client. */
export type SignedExecuteCommandRequest = MessageInitShape<typeof ExecuteCommandRequestSchema>;

/** A signed SubscribeEvents request, ready for the generated Connect client. */
export type SignedSubscribeEventsRequest = MessageInitShape<typeof SubscribeEventsRequestSchema>;

/** Builds a signed ExecuteCommand request. */
export async function signExecuteCommandRequest(
  fields: {
    deviceSessionId: string;
    messageType: string;
    requestId: string;
    timestampMs: number;
    payload?: Uint8Array;
  },
  devicePrivateKey: WebCryptoKey,
): Promise<SignedExecuteCommandRequest> {
  const signed = { ...fields, payload: fields.payload ?? new Uint8Array() };
  const signature = await signEd25519(devicePrivateKey, await executeCommandSignedBytes(signed));
  return { protocolVersion: 1, ...signed, timestampMs: BigInt(signed.timestampMs), signature };
}

/** Builds a signed SubscribeEvents request. */
export async function signSubscribeEventsRequest(
  fields: { deviceSessionId: string; requestId: string; timestampMs: number; lastEventId?: string },
  devicePrivateKey: WebCryptoKey,
): Promise<SignedSubscribeEventsRequest> {
  const signed = { ...fields, lastEventId: fields.lastEventId ?? "" };
  const signature = await signEd25519(devicePrivateKey, await subscribeEventsSignedBytes(signed));
  return { protocolVersion: 1, ...signed, timestampMs: BigInt(signed.timestampMs), signature };
}

/** Verifies an ExecuteCommand response's key id and signature; rejects with GatewaySignatureError. */
export async function verifyExecuteCommandResponse(
  response: ExecuteCommandResponse,
  deviceSessionId: string,
  gateway: WebGatewayKey,
): Promise<void> {
  const bytes = await executeCommandResponseSignedBytes({ ...response, deviceSessionId });
  if (
    response.keyId !== gateway.keyId ||
    !(await verifyEd25519(gateway.key, bytes, response.signature))
  ) {
    throw new GatewaySignatureError(
      `response ${response.requestId} has an invalid gateway signature`,
    );
  }
}

/** Verifies a pushed event's key id and signature; rejects with GatewaySignatureError. */
export async function verifyEvent(
  event: SubscribeEventsResponse,
  gateway: WebGatewayKey,
): Promise<void> {
  if (
    event.keyId !== gateway.keyId ||
    !(await verifyEd25519(gateway.key, await eventSignedBytes(event), event.signature))
  ) {
    throw new GatewaySignatureError(`event ${event.eventId} has an invalid gateway signature`);
  }
}

/** Options of {@link createBrowserDeviceClient}. */
export interface BrowserDeviceClientOptions {
  /** The gateway's public HTTP URL, e.g. `https://gateway.example.com`; the page's origin in dev. */
  readonly baseUrl: string;
  /** The device session every request is signed for. */
  readonly deviceSessionId: string;
  /** The device session's Ed25519 private key (from {@link generateDeviceKey}, say). */
  readonly devicePrivateKey: WebCryptoKey;
  /** The gateway's raw public key (bytes, or base64/base64url text). */
  readonly gatewayPublicKey: Uint8Array | string;
  /** Another transport (gRPC-Web, say); Connect with the binary codec on `baseUrl` by default. */
  readonly transport?: Transport;
  /** Device clock; `Date.now` by default. */
  readonly now?: () => number;
}

/** One item of a following subscription: a verified event, or continuity lost. */
export type BrowserFollowedItem = ResumableItem<SubscribeEventsResponse>;

/** The options of a browser device client's `subscribe`. */
export type BrowserSubscribeCall = SubscribeCall;

/** How a following browser subscription reconnects. */
export type BrowserFollowOptions = FollowOptions;

/**
 * Creates a device client for a browser. Errors are Connect's `ConnectError`
 * with the gateway's status (`code`, numerically the gRPC status) and message.
 *
 * @example
 * const device = createBrowserDeviceClient({ baseUrl: "https://gateway.example.com",
 *   deviceSessionId, devicePrivateKey: key.keyPair.privateKey, gatewayPublicKey });
 * const response = await device.execute("demo.echo", new TextEncoder().encode("hi"));
 * for await (const item of device.subscribe({ follow: true })) {
 *   if (item.kind === "continuity_lost") console.log("resync from the backend");
 *   else console.log(item.event.eventType);
 * }
 */
export function createBrowserDeviceClient(options: BrowserDeviceClientOptions) {
  const transport =
    options.transport ??
    createConnectTransport({ baseUrl: options.baseUrl, useBinaryFormat: true });
  const client: Client<typeof EdgeGatewayService> = createClient(EdgeGatewayService, transport);
  // Imported once, on first use: the import is asynchronous in WebCrypto.
  const gateway = importGatewayKey(options.gatewayPublicKey);
  // A rejected import surfaces at the first call, not as an unhandled rejection.
  gateway.catch(() => {});
  const now = options.now ?? (() => Date.now());
  const { deviceSessionId, devicePrivateKey } = options;

  /** One push stream: yields verified events, the bootstrap event first. */
  async function* openStream(
    requestId: string,
    lastEventId: string,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<SubscribeEventsResponse> {
    const key = await gateway;
    const request = await signSubscribeEventsRequest(
      { deviceSessionId, requestId, timestampMs: now(), lastEventId },
      devicePrivateKey,
    );
    for await (const event of client.subscribeEvents(request, signal ? { signal } : {})) {
      await verifyEvent(event, key);
      yield event;
    }
  }

  /**
   * Opens a push stream; yields verified events, the bootstrap event first,
   * and ends with the stream's status (a revoke: `FAILED_PRECONDITION`).
   */
  function subscribe(
    call?: BrowserSubscribeCall & { follow?: false },
  ): AsyncGenerator<SubscribeEventsResponse>;
  /**
   * Follows the device's events across streams (contract §12): reconnects
   * after a recoverable end (`isRecoverableStreamEnd`: `UNAVAILABLE`,
   * `RESOURCE_EXHAUSTED`, a reset stream, a dropped connection), each
   * time with a freshly signed request resuming after the last `event_id`
   * received, and yields a `continuity_lost` item, before the new stream's
   * bootstrap event, when the gateway could not resume without a gap. Throws
   * the status that ends it otherwise; ends without an error when `signal`
   * aborts.
   */
  function subscribe(
    call: BrowserSubscribeCall & { follow: true | BrowserFollowOptions },
  ): AsyncGenerator<BrowserFollowedItem>;
  function subscribe(
    call: BrowserSubscribeCall & { follow?: boolean | BrowserFollowOptions } = {},
  ): AsyncGenerator<SubscribeEventsResponse> | AsyncGenerator<BrowserFollowedItem> {
    return subscribeOrFollow(openStream, call, () => crypto.randomUUID());
  }

  return {
    /** Signs and sends a command; resolves the verified response. */
    async execute(
      messageType: string,
      payload: Uint8Array = new Uint8Array(),
      call: { requestId?: string; signal?: AbortSignal; timeoutMs?: number } = {},
    ): Promise<ExecuteCommandResponse> {
      const key = await gateway;
      const request = await signExecuteCommandRequest(
        {
          deviceSessionId,
          messageType,
          requestId: call.requestId ?? crypto.randomUUID(),
          timestampMs: now(),
          payload,
        },
        devicePrivateKey,
      );
      const response = await client.executeCommand(request, {
        ...(call.signal ? { signal: call.signal } : {}),
        ...(call.timeoutMs !== undefined ? { timeoutMs: call.timeoutMs } : {}),
      });
      await verifyExecuteCommandResponse(response, deviceSessionId, key);
      return response;
    },
    subscribe,
  };
}

/** A browser device client. */
export type BrowserDeviceClient = ReturnType<typeof createBrowserDeviceClient>;

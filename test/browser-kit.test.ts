/**
 * The browser device kit's crypto, run on Node's WebCrypto (the same API as
 * the browser's): its signed bytes are the contract's (§4) byte for byte, its
 * keys and signatures interoperate with the gateway's Node side, and it
 * refuses the keys the gateway refuses.
 */
import { createPrivateKey, createPublicKey, sign } from "node:crypto";
import { describe, expect, it } from "vitest";
import { parseDevicePublicKey, verifySignature } from "../handlers/ed25519.js";
import * as nodeSigning from "../handlers/signing.js";
import {
  eventSignedBytes,
  executeCommandResponseSignedBytes,
  executeCommandSignedBytes,
  fromBase64,
  generateDeviceKey,
  importGatewayKey,
  isLowOrderPublicKey,
  keyIdOf,
  signExecuteCommandRequest,
  signSubscribeEventsRequest,
  subscribeEventsSignedBytes,
  toHex,
  verifyEd25519,
  verifyEvent,
} from "../runtime/kit/browser/index.js";
import { lowOrderKeys, vectors } from "./support/keys.js";

type Fields = Record<string, string | number>;

const str = (fields: Fields, name: string) => String(fields[name]);
const hexBytes = (hex: string) => Uint8Array.from(Buffer.from(hex, "hex"));

/** The browser builder's bytes for a vector case, fields spelled as in the vectors. */
function browserBytes(name: string, f: Fields): Promise<Uint8Array> {
  const timestampMs = Number(f.timestamp_ms);
  const payload = hexBytes(str(f, "payload_hex"));
  if (name.startsWith("execute_command_request")) {
    return executeCommandSignedBytes({
      deviceSessionId: str(f, "device_session_id"),
      messageType: str(f, "message_type"),
      requestId: str(f, "request_id"),
      timestampMs,
      payload,
    });
  }
  if (name === "subscribe_events_request") {
    return subscribeEventsSignedBytes({
      deviceSessionId: str(f, "device_session_id"),
      requestId: str(f, "request_id"),
      timestampMs,
      lastEventId: str(f, "last_event_id"),
    });
  }
  if (name === "execute_command_response") {
    return executeCommandResponseSignedBytes({
      keyId: str(f, "key_id"),
      deviceSessionId: str(f, "device_session_id"),
      requestId: str(f, "request_id"),
      resultCode: str(f, "result_code"),
      timestampMs,
      payload,
    });
  }
  return eventSignedBytes({
    keyId: str(f, "key_id"),
    eventId: str(f, "event_id"),
    eventType: str(f, "event_type"),
    requestId: str(f, "request_id"),
    timestampMs,
    payload,
  });
}

describe("browser kit signed bytes (contract §4)", () => {
  it.each(vectors.cases.map((vector) => [vector.name, vector] as const))(
    "%s: builds exactly the vector's bytes, and the vector's signature verifies with WebCrypto",
    async (name, vector) => {
      const bytes = await browserBytes(name, vector.fields);
      expect(toHex(bytes)).toBe(vector.signed_bytes_hex);
      const signer =
        name.startsWith("execute_command_request") || name.startsWith("subscribe")
          ? vectors.device_key
          : vectors.gateway_key;
      const { key } = await importGatewayKey(signer.public_key_base64url);
      expect(await verifyEd25519(key, bytes, hexBytes(vector.signature_hex))).toBe(true);
      const tampered = hexBytes(vector.signature_hex);
      tampered[0] = (tampered[0] ?? 0) ^ 1;
      expect(await verifyEd25519(key, bytes, tampered)).toBe(false);
    },
  );

  // Multi-byte UTF-8 and large timestamps are where a hand-written encoder drifts.
  it("matches the Node builders for non-ASCII text, a bigint timestamp and a large payload", async () => {
    const fields = {
      deviceSessionId: "ds-ü",
      messageType: "chat/send",
      requestId: "r:é😀",
      timestampMs: 2 ** 53 - 1,
      payload: new Uint8Array(70_000).fill(7),
    };
    expect(toHex(await executeCommandSignedBytes(fields))).toBe(
      nodeSigning.executeCommandSignedBytes(fields).toString("hex"),
    );
    expect(
      toHex(
        await executeCommandSignedBytes({ ...fields, timestampMs: BigInt(fields.timestampMs) }),
      ),
    ).toBe(nodeSigning.executeCommandSignedBytes(fields).toString("hex"));
  });
});

describe("browser kit keys", () => {
  it("derives the vectors' gateway key_id", async () => {
    const raw = fromBase64(vectors.gateway_key.public_key_base64url);
    expect(await keyIdOf(raw)).toBe(vectors.gateway_key.key_id);
    expect((await importGatewayKey(raw)).keyId).toBe(vectors.gateway_key.key_id);
  });

  it("refuses every low-order key and keys of another length, as the gateway does", async () => {
    expect(lowOrderKeys.length).toBe(14);
    for (const hex of lowOrderKeys) {
      const raw = hexBytes(hex);
      expect(isLowOrderPublicKey(raw)).toBe(true);
      expect(parseDevicePublicKey(Buffer.from(raw).toString("base64url"))).toMatchObject({
        ok: false,
        problem: "low_order",
      });
      await expect(importGatewayKey(raw)).rejects.toThrow("gateway public key refused (low_order)");
    }
    await expect(importGatewayKey(new Uint8Array(31))).rejects.toThrow(
      "gateway public key refused (length)",
    );
    await expect(importGatewayKey("not base64!")).rejects.toThrow(TypeError);
  });

  it("generates a non-extractable device key whose raw public key and signatures the gateway accepts", async () => {
    const device = await generateDeviceKey();
    expect(device.keyPair.privateKey.extractable).toBe(false);
    await expect(crypto.subtle.exportKey("pkcs8", device.keyPair.privateKey)).rejects.toThrow();
    expect(device.publicKey.length).toBe(32);
    const parsed = parseDevicePublicKey(device.publicKeyBase64Url);
    if (!parsed.ok) throw new Error(`device key refused: ${parsed.problem}`);

    const request = await signExecuteCommandRequest(
      {
        deviceSessionId: "ds-1",
        messageType: "demo.echo",
        requestId: "req-1",
        timestampMs: 1764028800000,
        payload: new TextEncoder().encode("hi"),
      },
      device.keyPair.privateKey,
    );
    expect(request.timestampMs).toBe(1764028800000n);
    const signed = nodeSigning.executeCommandSignedBytes({
      deviceSessionId: "ds-1",
      messageType: "demo.echo",
      requestId: "req-1",
      timestampMs: 1764028800000,
      payload: Buffer.from("hi"),
    });
    expect(await verifySignature(parsed.key, signed, request.signature as Uint8Array)).toBe(true);

    const subscribe = await signSubscribeEventsRequest(
      { deviceSessionId: "ds-1", requestId: "sub-1", timestampMs: 1764028800000 },
      device.keyPair.privateKey,
    );
    const subscribeSigned = nodeSigning.subscribeEventsSignedBytes({
      deviceSessionId: "ds-1",
      requestId: "sub-1",
      timestampMs: 1764028800000,
      lastEventId: "",
    });
    expect(
      await verifySignature(parsed.key, subscribeSigned, subscribe.signature as Uint8Array),
    ).toBe(true);
  });

  it("verifies an event the gateway key signed, and refuses another key id or a changed field", async () => {
    const gatewayPrivate = createPrivateKey(vectors.gateway_key.private_key_pkcs8_pem);
    const gateway = await importGatewayKey(
      createPublicKey(gatewayPrivate).export({ format: "jwk" }).x ?? "",
    );
    const fields = {
      eventId: "1-0",
      eventType: "demo.note",
      requestId: "",
      timestampMs: 1764028801003,
      payload: Buffer.from("hi"),
      keyId: gateway.keyId,
    };
    const signature = sign(null, nodeSigning.eventSignedBytes(fields), gatewayPrivate);
    const event = { ...fields, timestampMs: BigInt(fields.timestampMs), signature };
    type Event = Parameters<typeof verifyEvent>[0];
    await expect(verifyEvent(event as unknown as Event, gateway)).resolves.toBeUndefined();
    await expect(
      verifyEvent({ ...event, eventType: "demo.other" } as unknown as Event, gateway),
    ).rejects.toThrow("event 1-0 has an invalid gateway signature");
    await expect(
      verifyEvent({ ...event, keyId: "0000000000000000" } as unknown as Event, gateway),
    ).rejects.toThrow("invalid gateway signature");
  });
});

/**
 * The signed bytes of contract §4, pinned to the signing vectors (test/vectors/): the builders
 * reproduce each vector's bytes, the vector keys reproduce each signature, and
 * the verifier accepts them.
 */
import { createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { keyIdOf, nodeEd25519, parseDevicePublicKey } from "../handlers/ed25519.js";
import {
  eventSignedBytes,
  executeCommandResponseSignedBytes,
  executeCommandSignedBytes,
  type Sha256Into,
  subscribeEventsSignedBytes,
} from "../handlers/signing.js";
import { createResponseSigner } from "../runtime/config/signer.js";
import { createSodiumEd25519 } from "../runtime/config/sodium-ed25519.js";

/** Every Ed25519 implementation the gateway may run with must match the vectors. */
const IMPLEMENTATIONS = [nodeEd25519, createSodiumEd25519()].map(
  (ed25519) => [ed25519.name, ed25519] as const,
);

interface VectorKey {
  readonly public_key_base64url: string;
  readonly private_key_pkcs8_pem: string;
  readonly key_id?: string;
}

interface VectorCase {
  readonly name: string;
  readonly fields: Readonly<Record<string, string | number>>;
  readonly signed_bytes_hex: string;
  readonly signature_hex: string;
}

interface SigningVectors {
  readonly device_key: VectorKey;
  readonly gateway_key: VectorKey & { readonly key_id: string };
  readonly cases: readonly VectorCase[];
}

const vectors = JSON.parse(
  readFileSync(new URL("./vectors/signing-vectors.json", import.meta.url), "utf8"),
) as SigningVectors;

type Message = "executeCommand" | "subscribeEvents" | "executeCommandResponse" | "event";

/** Which builder and which key each vector case belongs to. */
const CASES: Readonly<Record<string, { message: Message; signer: "device" | "gateway" }>> = {
  execute_command_request: { message: "executeCommand", signer: "device" },
  execute_command_request_empty_payload: { message: "executeCommand", signer: "device" },
  subscribe_events_request: { message: "subscribeEvents", signer: "device" },
  execute_command_response: { message: "executeCommandResponse", signer: "gateway" },
  event_server_time_bootstrap: { message: "event", signer: "gateway" },
  event_client: { message: "event", signer: "gateway" },
};

type Fields = Readonly<Record<string, string | number>>;

function text(fields: Fields, name: string): string {
  const value = fields[name];
  if (typeof value !== "string") throw new Error(`vector field ${name} is not a string`);
  return value;
}

function number(fields: Fields, name: string): number {
  const value = fields[name];
  if (typeof value !== "number") throw new Error(`vector field ${name} is not a number`);
  return value;
}

/** The signed bytes of `message` for fields spelled as in the vectors (snake_case, hex payload). */
function signedBytes(message: Message, fields: Fields, sha256Into?: Sha256Into): Buffer {
  const payload = (): Buffer => Buffer.from(text(fields, "payload_hex"), "hex");
  switch (message) {
    case "executeCommand":
      return executeCommandSignedBytes(
        {
          deviceSessionId: text(fields, "device_session_id"),
          messageType: text(fields, "message_type"),
          requestId: text(fields, "request_id"),
          timestampMs: number(fields, "timestamp_ms"),
          payload: payload(),
        },
        sha256Into,
      );
    case "subscribeEvents":
      return subscribeEventsSignedBytes({
        deviceSessionId: text(fields, "device_session_id"),
        requestId: text(fields, "request_id"),
        timestampMs: number(fields, "timestamp_ms"),
        lastEventId: text(fields, "last_event_id"),
      });
    case "executeCommandResponse":
      return executeCommandResponseSignedBytes(
        {
          keyId: text(fields, "key_id"),
          deviceSessionId: text(fields, "device_session_id"),
          requestId: text(fields, "request_id"),
          resultCode: text(fields, "result_code"),
          timestampMs: number(fields, "timestamp_ms"),
          payload: payload(),
        },
        sha256Into,
      );
    case "event":
      return eventSignedBytes(
        {
          keyId: text(fields, "key_id"),
          eventId: text(fields, "event_id"),
          eventType: text(fields, "event_type"),
          requestId: text(fields, "request_id"),
          timestampMs: number(fields, "timestamp_ms"),
          payload: payload(),
        },
        sha256Into,
      );
  }
}

function keyOf(signer: "device" | "gateway"): VectorKey {
  return signer === "device" ? vectors.device_key : vectors.gateway_key;
}

function specOf(vector: VectorCase): { message: Message; signer: "device" | "gateway" } {
  const spec = CASES[vector.name];
  if (spec === undefined) throw new Error(`no builder known for vector ${vector.name}`);
  return spec;
}

/** Another value of the same field, for the "every field is signed" checks. */
function changed(name: string, value: string | number): string | number {
  if (typeof value === "number") return value + 1;
  if (name === "payload_hex") {
    if (value === "") return "00";
    const bytes = Buffer.from(value, "hex");
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0x01;
    return bytes.toString("hex");
  }
  return value === "" ? "x" : `${value}x`;
}

describe("signed bytes (contract §4)", () => {
  it("covers every case of the signing vectors", () => {
    expect(vectors.cases.map((vector) => vector.name).sort()).toEqual(Object.keys(CASES).sort());
  });

  describe.each(vectors.cases.map((vector) => [vector.name, vector] as const))(
    "%s",
    (_, vector) => {
      const { message, signer } = specOf(vector);
      const key = keyOf(signer);

      it("builds exactly the vector's signed bytes", () => {
        expect(signedBytes(message, vector.fields).toString("hex")).toBe(vector.signed_bytes_hex);
      });

      it("builds the same bytes hashing with libsodium's SHA-256, as the gateway's signer does", () => {
        const signerHash = createResponseSigner(
          createPrivateKey(vectors.gateway_key.private_key_pkcs8_pem),
          createSodiumEd25519(),
        ).sha256Into;
        expect(signerHash).toBeDefined();
        expect(signedBytes(message, vector.fields, signerHash).toString("hex")).toBe(
          vector.signed_bytes_hex,
        );
      });

      describe.each(IMPLEMENTATIONS)("with %s", (_, ed25519) => {
        it(`signed with the ${signer} key, gives exactly the vector's signature`, () => {
          const privateKey = createPrivateKey(key.private_key_pkcs8_pem);
          const signature = ed25519.signerOf(privateKey)(
            Buffer.from(vector.signed_bytes_hex, "hex"),
          );
          expect(signature.toString("hex")).toBe(vector.signature_hex);
        });

        it(`verifies under the ${signer} public key and not under the other one`, async () => {
          const data = signedBytes(message, vector.fields);
          const signature = Buffer.from(vector.signature_hex, "hex");
          const own = parseDevicePublicKey(key.public_key_base64url);
          const other = parseDevicePublicKey(
            keyOf(signer === "device" ? "gateway" : "device").public_key_base64url,
          );
          if (!own.ok || !other.ok) throw new Error("vector public keys must parse");
          expect(await ed25519.verify(own.key, data, signature)).toBe(true);
          expect(await ed25519.verify(other.key, data, signature)).toBe(false);
        });
      });

      it.each(Object.keys(vector.fields))("changes when %s changes", (name) => {
        const value = vector.fields[name] as string | number;
        const before = signedBytes(message, vector.fields);
        const after = signedBytes(message, { ...vector.fields, [name]: changed(name, value) });
        expect(after.equals(before)).toBe(false);
      });
    },
  );

  it("gives the gateway key the vector's key_id", () => {
    const parsed = parseDevicePublicKey(vectors.gateway_key.public_key_base64url);
    if (!parsed.ok) throw new Error("gateway public key must parse");
    expect(keyIdOf(parsed.raw)).toBe(vectors.gateway_key.key_id);
    expect(keyIdOf(parsed.raw)).toMatch(/^[0-9a-f]{16}$/);
  });

  describe("length-prefixed framing", () => {
    // Plain concatenation would make ("ab", "c") and ("a", "bc") sign the same
    // bytes; lp() must keep the field boundary in the signed bytes.
    const base = {
      deviceSessionId: "ds-1",
      requestId: "req-1",
      timestampMs: 1_764_028_800_000,
      payload: new Uint8Array(),
    };

    it("separates device_session_id from message_type in ExecuteCommand requests", () => {
      const left = executeCommandSignedBytes({
        ...base,
        deviceSessionId: "ds-1a",
        messageType: "b",
      });
      const right = executeCommandSignedBytes({
        ...base,
        deviceSessionId: "ds-1",
        messageType: "ab",
      });
      expect(left.length).toBe(right.length);
      expect(left.equals(right)).toBe(false);
    });

    it("separates message_type from request_id in ExecuteCommand requests", () => {
      const left = executeCommandSignedBytes({ ...base, messageType: "a.b", requestId: "c" });
      const right = executeCommandSignedBytes({ ...base, messageType: "a.", requestId: "bc" });
      expect(left.equals(right)).toBe(false);
    });

    it("separates request_id from last_event_id in SubscribeEvents requests", () => {
      const left = subscribeEventsSignedBytes({ ...base, requestId: "req-10", lastEventId: "" });
      const right = subscribeEventsSignedBytes({ ...base, requestId: "req-1", lastEventId: "0" });
      expect(left.equals(right)).toBe(false);
    });

    it("separates key_id, device_session_id, request_id and result_code in responses", () => {
      const fields = {
        keyId: "k",
        deviceSessionId: "d",
        requestId: "r",
        resultCode: "ok",
        timestampMs: 1,
        payload: new Uint8Array(),
      };
      const variants = [
        fields,
        { ...fields, keyId: "kd", deviceSessionId: "" },
        { ...fields, deviceSessionId: "dr", requestId: "" },
        { ...fields, requestId: "ro", resultCode: "k" },
      ].map((m) => executeCommandResponseSignedBytes(m).toString("hex"));
      expect(new Set(variants).size).toBe(variants.length);
    });

    it("separates event_id, event_type and request_id in pushed events", () => {
      const fields = {
        keyId: "k",
        eventId: "1-0",
        eventType: "chat.message",
        requestId: "",
        timestampMs: 1,
        payload: new Uint8Array(),
      };
      const variants = [
        fields,
        { ...fields, eventId: "1-0c", eventType: "hat.message" },
        { ...fields, eventType: "chat.messag", requestId: "e" },
      ].map((m) => eventSignedBytes(m).toString("hex"));
      expect(new Set(variants).size).toBe(variants.length);
    });

    it("prefixes each string with its UTF-8 byte length, not its character count", () => {
      const bytes = subscribeEventsSignedBytes({ ...base, deviceSessionId: "é", lastEventId: "" });
      // lp(domain) is 4 + 32 bytes; then lp("é") = 00000002 c3a9.
      expect(bytes.subarray(36, 42).toString("hex")).toBe("00000002c3a9");
    });
  });
});

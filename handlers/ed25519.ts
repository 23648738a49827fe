/**
 * Ed25519 keys: parsing device public keys (rejecting wrong lengths and every
 * low-order encoding), deriving key ids, and verifying signatures; the
 * node:crypto implementation of signing and verifying, the default wherever
 * the runtime supplies no other.
 */
import { createHash, createPublicKey, type KeyObject, sign, verify } from "node:crypto";
import { isLowOrderKeyHex } from "./low-order-keys.js";
import type { SignatureVerifier } from "./ports.js";
import type { Sha256Into } from "./signing.js";

const BASE64_KEY = /^[A-Za-z0-9+/_-]{43}={0,1}$/;

/** Why a public key was refused. */
export type PublicKeyProblem = "encoding" | "length" | "low_order";

/** The raw key, or why it was refused. */
export type ParsedPublicKey =
  | { readonly ok: true; readonly raw: Buffer; readonly key: KeyObject }
  | { readonly ok: false; readonly problem: PublicKeyProblem };

/** True for any of the 14 low-order encodings. */
export function isLowOrderPublicKey(raw: Uint8Array): boolean {
  return isLowOrderKeyHex(Buffer.from(raw).toString("hex"));
}

/**
 * Imports a raw 32-byte Ed25519 public key, refusing other lengths and
 * low-order points. Import goes through JWK, the cheap path in Node.
 */
export function importRawPublicKey(raw: Uint8Array): ParsedPublicKey {
  if (raw.length !== 32) return { ok: false, problem: "length" };
  if (isLowOrderPublicKey(raw)) return { ok: false, problem: "low_order" };
  const bytes = Buffer.from(raw);
  try {
    const key = createPublicKey({
      key: { kty: "OKP", crv: "Ed25519", x: bytes.toString("base64url") },
      format: "jwk",
    });
    return { ok: true, raw: bytes, key };
  } catch {
    return { ok: false, problem: "encoding" };
  }
}

/**
 * Parses a device public key given as base64 or base64url of its raw 32 bytes
 * (padding optional) and imports it.
 */
export function parseDevicePublicKey(text: string): ParsedPublicKey {
  if (!BASE64_KEY.test(text)) {
    // A string of the wrong size that is otherwise base64 is a length problem.
    return /^[A-Za-z0-9+/_-]*={0,2}$/.test(text)
      ? { ok: false, problem: "length" }
      : { ok: false, problem: "encoding" };
  }
  const raw = Buffer.from(text.replace(/-/g, "+").replace(/_/g, "/"), "base64");
  return importRawPublicKey(raw);
}

/** `key_id`: first 16 lowercase hex chars of SHA-256 of the raw 32-byte public key. */
export function keyIdOf(rawPublicKey: Uint8Array): string {
  return createHash("sha256").update(rawPublicKey).digest("hex").slice(0, 16);
}

/** The raw 32 bytes of an Ed25519 KeyObject (public or private). */
export function rawPublicKeyOf(key: KeyObject): Buffer {
  const jwk = (key.type === "private" ? createPublicKey(key) : key).export({ format: "jwk" });
  return Buffer.from(jwk.x ?? "", "base64url");
}

/**
 * Verifies an Ed25519 signature. Runs on libuv's thread pool so verification
 * does not hold the event loop; resolves false for any malformed input.
 */
export function verifySignature(
  key: KeyObject,
  data: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  if (signature.length !== 64) return Promise.resolve(false);
  return new Promise((resolve) => {
    verify(null, data, key, signature, (error, ok) => resolve(!error && ok));
  });
}

/**
 * One Ed25519 implementation: verification for the authentication pipeline
 * and signing with the gateway's key. Every implementation gives the same
 * answers, pinned by the signing and CCTV vectors.
 */
export interface Ed25519 extends SignatureVerifier {
  /** A short name for logs, such as `node:crypto` or `libsodium`. */
  readonly name: string;
  /** Signs with `privateKey` (an Ed25519 private KeyObject): a 64-byte signature of `data`. */
  signerOf(privateKey: KeyObject): (data: Uint8Array) => Buffer;
  /** The library's SHA-256 into a buffer, when it has one (the signer passes it on). */
  readonly sha256Into?: Sha256Into;
}

/** Ed25519 through node:crypto: verification on libuv's pool, signing on the caller's thread. */
export const nodeEd25519: Ed25519 = {
  name: "node:crypto",
  verify: verifySignature,
  signerOf: (privateKey) => (data) => sign(null, data, privateKey),
};

/**
 * Ed25519 with WebCrypto, for browsers and other Web runtimes: device keys
 * that never leave the runtime (non-extractable private keys), the gateway's
 * public key with its key id, and verification. The same key rules as
 * `handlers/ed25519.ts`: raw 32-byte keys only, low-order encodings refused.
 */
import type { webcrypto } from "node:crypto";
import { isLowOrderKeyHex } from "../../../handlers/low-order-keys.js";

/** A WebCrypto key (the browser's `CryptoKey`). */
export type WebCryptoKey = webcrypto.CryptoKey;

const ED25519 = { name: "Ed25519" } as const;

/** Lowercase hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** base64url without padding, as the auth routes accept `client_public_key`. */
export function toBase64Url(bytes: Uint8Array): string {
  const binary = Array.from(bytes, (byte) => String.fromCharCode(byte)).join("");
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Decodes base64 or base64url, padding optional; throws a TypeError for anything else. */
export function fromBase64(text: string): Uint8Array {
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(text)) throw new TypeError("not base64 or base64url");
  const standard = text.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  const binary = atob(standard.padEnd(Math.ceil(standard.length / 4) * 4, "="));
  return Uint8Array.from(binary, (char) => char.charCodeAt(0));
}

/** True for any of the 14 low-order encodings. */
export function isLowOrderPublicKey(raw: Uint8Array): boolean {
  return isLowOrderKeyHex(toHex(raw));
}

/** `key_id`: first 16 lowercase hex chars of SHA-256 of the raw 32-byte public key. */
export async function keyIdOf(rawPublicKey: Uint8Array): Promise<string> {
  return toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", rawPublicKey))).slice(0, 16);
}

/** A device key pair whose private key cannot be exported, and its raw public key. */
export interface DeviceKey {
  /** The key pair; its private key signs requests and never leaves the runtime. */
  readonly keyPair: { readonly privateKey: WebCryptoKey; readonly publicKey: WebCryptoKey };
  /** The raw 32-byte public key. */
  readonly publicKey: Uint8Array;
  /** The raw public key as base64url: the `client_public_key` of confirm-email-code. */
  readonly publicKeyBase64Url: string;
}

/**
 * Generates a device key pair with a non-extractable private key (it can be
 * kept in IndexedDB, never read out), and exports the public half raw.
 */
export async function generateDeviceKey(): Promise<DeviceKey> {
  const keyPair = (await crypto.subtle.generateKey(ED25519, false, [
    "sign",
    "verify",
  ])) as webcrypto.CryptoKeyPair;
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", keyPair.publicKey));
  return { keyPair, publicKey, publicKeyBase64Url: toBase64Url(publicKey) };
}

/** Signs `data` with an Ed25519 private key; resolves the 64-byte signature. */
export async function signEd25519(privateKey: WebCryptoKey, data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign(ED25519, privateKey, data));
}

/** A gateway public key ready for verification. */
export interface WebGatewayKey {
  /** The key id responses and events must carry. */
  readonly keyId: string;
  /** The imported public key. */
  readonly key: WebCryptoKey;
}

/**
 * Imports the gateway's raw 32-byte public key (bytes, or base64/base64url
 * text). Rejects with a TypeError for another length or a low-order key.
 */
export async function importGatewayKey(raw: Uint8Array | string): Promise<WebGatewayKey> {
  const bytes = typeof raw === "string" ? fromBase64(raw) : raw;
  if (bytes.length !== 32) throw new TypeError("gateway public key refused (length)");
  if (isLowOrderPublicKey(bytes)) throw new TypeError("gateway public key refused (low_order)");
  const key = await crypto.subtle.importKey("raw", bytes, ED25519, false, ["verify"]);
  return { keyId: await keyIdOf(bytes), key };
}

/** Verifies an Ed25519 signature; resolves false for any malformed input. */
export async function verifyEd25519(
  key: WebCryptoKey,
  data: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  if (signature.length !== 64) return false;
  try {
    return await crypto.subtle.verify(ED25519, key, signature, data);
  } catch {
    return false;
  }
}

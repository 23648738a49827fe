/** Fixed test keys from the signing vectors (test/vectors/), and fresh device keys. */
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { rawPublicKeyOf } from "../../handlers/ed25519.js";
import { tempDir } from "./temp-dir.js";

interface Vectors {
  device_key: { private_key_pkcs8_pem: string; public_key_base64url: string };
  gateway_key: { private_key_pkcs8_pem: string; public_key_base64url: string; key_id: string };
  cases: {
    name: string;
    fields: Record<string, string | number>;
    signed_bytes_hex: string;
    signature_hex: string;
  }[];
}

/** The signing vectors: the contract's pinned signed bytes and their keys. */
export const vectors: Vectors = JSON.parse(
  readFileSync(new URL("../vectors/signing-vectors.json", import.meta.url), "utf8"),
);

/** Every distinct key flagged `low_order_A` in the CCTV Ed25519 vectors. */
export const lowOrderKeys: string[] = [
  ...new Set(
    (
      JSON.parse(
        readFileSync(new URL("../vectors/ed25519-cctv-vectors.json", import.meta.url), "utf8"),
      ) as { key: string; flags?: string[] }[]
    )
      .filter((vector) => vector.flags?.includes("low_order_A"))
      .map((vector) => vector.key),
  ),
];

/** A fresh device key pair: the private KeyObject and the base64url raw public key. */
export function newDeviceKey(): { privateKey: KeyObject; publicKeyText: string } {
  const { privateKey } = generateKeyPairSync("ed25519");
  return { privateKey, publicKeyText: rawPublicKeyOf(privateKey).toString("base64url") };
}

/**
 * Writes the vectors' gateway key to a PEM file in a temporary directory
 * (removed after the test file) and returns its path.
 */
export function writeGatewayKeyFile(pem = vectors.gateway_key.private_key_pkcs8_pem): string {
  const dir = tempDir("test");
  const path = join(dir, "signer.pem");
  writeFileSync(path, pem, { mode: 0o600 });
  return path;
}

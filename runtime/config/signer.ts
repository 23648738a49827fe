/**
 * The gateway's response signer: a PKCS#8 PEM Ed25519 private key, loaded
 * once at startup, signing through node:crypto unless given another Ed25519
 * implementation.
 */
import { createPrivateKey, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import { type Ed25519, keyIdOf, nodeEd25519, rawPublicKeyOf } from "../../handlers/ed25519.js";
import type { ResponseSigner } from "../../handlers/ports.js";

/** The signer key could not be loaded; the message says why, never the key. */
export class SignerKeyError extends Error {
  override readonly name = "SignerKeyError";
}

/** Creates a signer from an Ed25519 private KeyObject, signing with `ed25519` (node:crypto by default). */
export function createResponseSigner(
  privateKey: KeyObject,
  ed25519: Ed25519 = nodeEd25519,
): ResponseSigner {
  const publicKey = rawPublicKeyOf(privateKey);
  return {
    keyId: keyIdOf(publicKey),
    publicKey,
    sign: ed25519.signerOf(privateKey),
    ...(ed25519.sha256Into === undefined ? {} : { sha256Into: ed25519.sha256Into }),
  };
}

/** Parses a PKCS#8 PEM Ed25519 private key; throws SignerKeyError with a clear reason. */
export function parseSignerKeyPem(pem: string, source = "signer key"): KeyObject {
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----/.test(pem) || /Proc-Type:\s*4,ENCRYPTED/.test(pem)) {
    throw new SignerKeyError(`${source} is encrypted; an unencrypted PKCS#8 PEM is required`);
  }
  if (/-----BEGIN (?:[A-Z]+ )?PUBLIC KEY-----/.test(pem) && !/PRIVATE KEY-----/.test(pem)) {
    throw new SignerKeyError(
      `${source} holds a public key; a PKCS#8 Ed25519 private key is required`,
    );
  }
  if (!/-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/.test(pem)) {
    throw new SignerKeyError(`${source} is not a PEM-encoded private key`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: "pem" });
  } catch {
    throw new SignerKeyError(`${source} is not a valid PEM-encoded private key`);
  }
  if (key.asymmetricKeyType !== "ed25519") {
    throw new SignerKeyError(
      `${source} is a ${key.asymmetricKeyType ?? "unknown"} key; an Ed25519 key is required`,
    );
  }
  return key;
}

/**
 * Reads and parses the signer key file; throws SignerKeyError naming the path.
 * The signer signs with `ed25519` (node:crypto by default).
 */
export async function loadResponseSigner(
  path: string,
  ed25519: Ed25519 = nodeEd25519,
): Promise<ResponseSigner> {
  let pem: string;
  try {
    pem = await readFile(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "unreadable";
    throw new SignerKeyError(`cannot read signer key file ${path} (${code})`);
  }
  return createResponseSigner(parseSignerKeyPem(pem, `signer key file ${path}`), ed25519);
}

/**
 * The one reader of HTTP bodies that must not grow past a byte limit: the
 * public listener's JSON requests, the auth upstream's answers and the
 * downstream routes' answers.
 */

/** A body longer than the limit it was read under. */
export class BodyTooLargeError extends Error {
  override readonly name = "BodyTooLargeError";
  /** @param maxBytes the limit the body went past */
  constructor(readonly maxBytes: number) {
    super(`body exceeds ${maxBytes} bytes`);
  }
}

/** Options of {@link readBoundedBody}. */
export interface BoundedBodyOptions {
  /** Largest body accepted, in bytes. */
  readonly maxBytes: number;
  /**
   * What happens to the rest of a body past the limit: `cancel` (the default)
   * drops it and frees its connection; `leave` only stops reading, for a server
   * that still has to answer on the request's connection (cancelling a request
   * body destroys the socket before the answer is written).
   */
  readonly onTooLarge?: "cancel" | "leave";
}

/**
 * Reads the whole body of a Request or Response, refusing more than
 * `maxBytes`: a `Content-Length` over the limit fails before anything is
 * read, and the bytes that arrive are counted whatever the header says.
 * Rejects with {@link BodyTooLargeError} past the limit; a failed read rejects
 * with the stream's own error. A message without a body reads as empty.
 */
export async function readBoundedBody(
  message: Pick<Request | Response, "body" | "headers">,
  options: BoundedBodyOptions,
): Promise<Buffer> {
  const { maxBytes } = options;
  const cancel = options.onTooLarge !== "leave";
  const declared = Number(message.headers.get("content-length") ?? Number.NaN);
  if (declared > maxBytes) {
    if (cancel) await message.body?.cancel().catch(() => {});
    throw new BodyTooLargeError(maxBytes);
  }
  if (message.body === null) return Buffer.alloc(0);

  const reader = message.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      if (cancel) await reader.cancel().catch(() => {});
      else reader.releaseLock();
      throw new BodyTooLargeError(maxBytes);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}

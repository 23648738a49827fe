/**
 * The bounded body reader behind the public listener, the auth upstream
 * adapter and the HTTP route factory.
 */
import { describe, expect, it } from "vitest";
import { BodyTooLargeError, readBoundedBody } from "../runtime/http/bounded-body.js";

/** A body stream of `chunks` that records whether it was cancelled. */
function chunkedBody(chunks: readonly string[], options: { failAfter?: number } = {}) {
  let cancelled = false;
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (options.failAfter !== undefined && sent === options.failAfter) {
        controller.error(new Error("connection reset"));
        return;
      }
      const chunk = chunks[sent++];
      if (chunk === undefined) controller.close();
      else controller.enqueue(new TextEncoder().encode(chunk));
    },
    cancel() {
      cancelled = true;
    },
  });
  return { stream, cancelled: () => cancelled };
}

describe("readBoundedBody", () => {
  it("reads a body up to the limit, whole and in order", async () => {
    const { stream } = chunkedBody(["ab", "cd", "ef"]);
    const bytes = await readBoundedBody(new Response(stream), { maxBytes: 6 });
    expect(bytes.toString("utf8")).toBe("abcdef");
  });

  it("reads a message without a body as empty", async () => {
    const bytes = await readBoundedBody(new Response(null, { status: 204 }), { maxBytes: 1 });
    expect(bytes.byteLength).toBe(0);
  });

  it("refuses a body past the limit counting the bytes that arrive, and cancels the rest", async () => {
    const { stream, cancelled } = chunkedBody(["abc", "def", "never read"]);
    const error = await readBoundedBody(new Response(stream), { maxBytes: 5 }).catch((e) => e);
    expect(error).toBeInstanceOf(BodyTooLargeError);
    expect((error as BodyTooLargeError).maxBytes).toBe(5);
    expect(cancelled()).toBe(true);
  });

  it("refuses a declared Content-Length over the limit before reading", async () => {
    const { stream, cancelled } = chunkedBody(["abc"]);
    const response = new Response(stream, { headers: { "content-length": "10" } });
    await expect(readBoundedBody(response, { maxBytes: 5 })).rejects.toBeInstanceOf(
      BodyTooLargeError,
    );
    expect(cancelled()).toBe(true);
  });

  // A server still answering on the request's connection must not cancel its body.
  it("leaves the rest of the body alone with onTooLarge: leave", async () => {
    const { stream, cancelled } = chunkedBody(["abc", "def"]);
    const request = new Request("http://gateway.test/", {
      method: "POST",
      body: stream,
      duplex: "half",
    } as RequestInit);
    await expect(
      readBoundedBody(request, { maxBytes: 4, onTooLarge: "leave" }),
    ).rejects.toBeInstanceOf(BodyTooLargeError);
    expect(cancelled()).toBe(false);
    expect(request.body?.locked).toBe(false);
  });

  it("rejects with the stream's own error when a read fails", async () => {
    const { stream } = chunkedBody(["abc"], { failAfter: 1 });
    await expect(readBoundedBody(new Response(stream), { maxBytes: 10 })).rejects.toThrow(
      "connection reset",
    );
  });
});

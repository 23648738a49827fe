/** Stream entries built in memory, as a stream reader hands them to its handler. */
import type { StreamEntry } from "../../runtime/streams/stream-reader.js";

/** An entry with `fields` (text as its UTF-8 bytes, Buffers as they are) under `id`. */
export function streamEntry(
  fields: Record<string, string | Buffer>,
  id = "1764028801000-0",
): StreamEntry {
  return {
    id,
    fields: new Map(
      Object.entries(fields).map(([name, value]) => [
        name,
        typeof value === "string" ? Buffer.from(value) : value,
      ]),
    ),
  };
}

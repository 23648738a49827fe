/**
 * The messages the history router publishes on a user's events channel under
 * routed fan-out (contract §13), as the append script writes them:
 *
 * - an event: `e` <prev id> NUL <id> NUL, then each field name and value as a
 *   4-byte big-endian length and the bytes. `prev` is the id written before it
 *   in the user's history, so a subscriber that got a different last message
 *   knows it missed one;
 * - a gap: `g` <id> NUL — an event that could not be kept in order (two
 *   routers for a moment): its user's streams must resume to learn what
 *   history still promises.
 */
import type { StreamEntry } from "../streams/stream-reader.js";

/** One decoded channel message. */
export type RoutedMessage =
  | { readonly kind: "event"; readonly prev: string; readonly entry: StreamEntry }
  | { readonly kind: "gap"; readonly id: string };

const NUL = 0;

/** Decodes a message; throws naming the problem when it is not one the router writes. */
export function decodeRoutedMessage(message: Buffer): RoutedMessage {
  const kind = message[0];
  if (kind === 0x67 /* g */) {
    const end = message.indexOf(NUL, 1);
    if (end < 0) throw new Error("gap message without its terminator");
    return { kind: "gap", id: message.toString("latin1", 1, end) };
  }
  if (kind !== 0x65 /* e */) throw new Error(`unknown message kind ${kind}`);
  const prevEnd = message.indexOf(NUL, 1);
  const idEnd = prevEnd < 0 ? -1 : message.indexOf(NUL, prevEnd + 1);
  if (idEnd < 0) throw new Error("event message without its ids");
  const fields = new Map<string, Buffer>();
  let offset = idEnd + 1;
  while (offset < message.length) {
    const name = take(message, offset);
    const value = take(message, name.next);
    fields.set(name.bytes.toString(), value.bytes);
    offset = value.next;
  }
  return {
    kind: "event",
    prev: message.toString("latin1", 1, prevEnd),
    entry: { id: message.toString("latin1", prevEnd + 1, idEnd), fields },
  };
}

/** One length-prefixed part at `offset`, and where the next one starts. */
function take(message: Buffer, offset: number): { bytes: Buffer; next: number } {
  if (offset + 4 > message.length) throw new Error("event message cut inside a length");
  const length = message.readUInt32BE(offset);
  const next = offset + 4 + length;
  if (next > message.length) throw new Error("event message cut inside a field");
  return { bytes: message.subarray(offset + 4, next), next };
}

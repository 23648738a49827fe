/**
 * Redis Stream entry ids (`<ms>-<seq>`, or `<ms>` for `<ms>-0`): ordering and
 * neighbours, exact over the whole 64-bit range of both parts.
 */

function parseId(id: string): [bigint, bigint] {
  const dash = id.indexOf("-");
  return dash === -1 ? [BigInt(id), 0n] : [BigInt(id.slice(0, dash)), BigInt(id.slice(dash + 1))];
}

/** Negative, zero or positive as `a` is before, equal to or after `b`. */
export function compareIds(a: string, b: string): number {
  const [aMs, aSeq] = parseId(a);
  const [bMs, bSeq] = parseId(b);
  if (aMs !== bMs) return aMs < bMs ? -1 : 1;
  return aSeq === bSeq ? 0 : aSeq < bSeq ? -1 : 1;
}

/** The later of two ids. */
export function maxId(a: string, b: string): string {
  return compareIds(a, b) >= 0 ? a : b;
}

/** The earlier of two ids. */
export function minId(a: string, b: string): string {
  return compareIds(a, b) <= 0 ? a : b;
}

/** The smallest id after `id`. */
export function successor(id: string): string {
  const [ms, seq] = parseId(id);
  return seq === 0xffff_ffff_ffff_ffffn ? `${ms + 1n}-0` : `${ms}-${seq + 1n}`;
}

/** The millisecond part of an entry id. */
export function idMs(id: string): number {
  return Number(parseId(id)[0]);
}

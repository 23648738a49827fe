/**
 * planRoutedSeam (contract §12, §13) with in-memory sources: where a stream
 * under routed fan-out starts, when a resume is recovered, what it replays,
 * and that a bootstrap that is not recovered never echoes `last_event_id`.
 * Plus the channel messages the router publishes, decoded.
 */
import { describe, expect, it } from "vitest";
import {
  planRoutedSeam,
  type ResumeLimits,
  type RoutedSources,
  type SeamReply,
} from "../runtime/history/resume.js";
import { decodeRoutedMessage } from "../runtime/push/routed-message.js";
import { compareIds } from "../runtime/streams/stream-ids.js";
import type { StreamEntry } from "../runtime/streams/stream-reader.js";

const TARGET = { userId: "u1", deviceSessionId: "ds1" };
const LIMITS: ResumeLimits = {
  historyOn: true,
  maxPayloadBytes: 1024,
  maxIngressScan: 100,
  pageSize: 2,
};

const event = (id: string, deviceSessionId?: string): StreamEntry => ({
  id,
  fields: new Map([
    ["user_id", Buffer.from("u1")],
    ["event_type", Buffer.from("t.e")],
    ...(deviceSessionId === undefined
      ? []
      : [["device_session_id", Buffer.from(deviceSessionId)] as [string, Buffer]]),
  ]),
});

/** A user's history as the seam script sees it; `undefined` = missing (created at the router's position). */
function sources(options: {
  router?: { position: string; floor: string };
  history?: { floor: string; top: string; entries: readonly StreamEntry[] };
}): RoutedSources & { created: string[] } {
  const created: string[] = [];
  const after = (id: string, from: string) => from === "" || compareIds(id, from) > 0;
  return {
    created,
    async routerState() {
      return options.router;
    },
    async seam(userId, floor, from, count): Promise<SeamReply> {
      expect(userId).toBe("u1");
      const history = options.history;
      if (history === undefined) {
        created.push(floor);
        return { created: true, floor, top: floor, entries: [] };
      }
      const entries = from === "" ? [] : history.entries.filter((one) => after(one.id, from));
      return {
        created: false,
        floor: history.floor,
        top: history.top,
        entries: entries.slice(0, count),
      };
    },
    async historyPage(_userId, first, last, count) {
      const history = options.history!;
      const entries = history.entries
        .filter((one) => compareIds(one.id, first) >= 0 && compareIds(one.id, last) <= 0)
        .slice(0, count);
      return { floor: history.floor, entries };
    },
  };
}

async function ids(replay: AsyncIterable<{ eventId: string }> | undefined): Promise<string[]> {
  const seen: string[] = [];
  for await (const one of replay ?? []) seen.push(one.eventId);
  return seen;
}

const ROUTER = { position: "50-0", floor: "1-0" };
const HISTORY = {
  floor: "5-0",
  top: "40-0",
  entries: [event("10-0"), event("20-0", "other"), event("30-0"), event("40-0", "ds1")],
};

describe("planRoutedSeam", () => {
  it("starts a fresh stream after the later of the user's top and the router's position", async () => {
    const seam = await planRoutedSeam(
      "",
      TARGET,
      sources({ router: ROUTER, history: HISTORY }),
      LIMITS,
    );
    expect(seam).toMatchObject({ bootstrapId: "50-0", skipThrough: "50-0", replay: undefined });
    expect(seam.recovered).toBeUndefined();
  });

  it("creates a missing history complete after the router's position", async () => {
    const source = sources({ router: ROUTER });
    const seam = await planRoutedSeam("", TARGET, source, LIMITS);
    expect(source.created).toEqual(["50-0"]);
    expect(seam.bootstrapId).toBe("50-0");
  });

  it("starts after the router's floor when the router has not routed past it", async () => {
    const seam = await planRoutedSeam(
      "",
      TARGET,
      sources({ router: { position: "0-0", floor: "99-18446744073709551615" } }),
      LIMITS,
    );
    expect(seam.bootstrapId).toBe("99-18446744073709551615");
    expect(seam.skipThrough).toBe("99-18446744073709551615");
  });

  it("replays this session's events after L up to the top, page by page, and skips live ones up to the top", async () => {
    const seam = await planRoutedSeam(
      "10-0",
      TARGET,
      sources({ router: ROUTER, history: HISTORY }),
      LIMITS,
    );
    expect(seam).toMatchObject({ bootstrapId: "10-0", recovered: true, skipThrough: "40-0" });
    expect(await ids(seam.replay)).toEqual(["30-0", "40-0"]);
  });

  it("recovers with nothing to replay at the top, and between the top and the router's position", async () => {
    for (const last of ["40-0", "45-0", "50-0"]) {
      const seam = await planRoutedSeam(
        last,
        TARGET,
        sources({ router: ROUTER, history: HISTORY }),
        LIMITS,
      );
      expect(seam).toMatchObject({ bootstrapId: last, recovered: true, replay: undefined });
    }
  });

  it.each([
    [
      "before the router's floor",
      { router: { position: "50-0", floor: "15-0" }, history: HISTORY },
      "10-0",
    ],
    ["before the history's floor", { router: ROUTER, history: HISTORY }, "4-0"],
    ["with the history missing", { router: ROUTER }, "10-0"],
    ["after everything routed", { router: ROUTER, history: HISTORY }, "60-0"],
  ])(
    "is not recovered %s, and its bootstrap is where live delivery goes on, never L",
    async (_, options, last) => {
      const seam = await planRoutedSeam(last, TARGET, sources(options), LIMITS);
      expect(seam.recovered).toBe(false);
      expect(seam.bootstrapId).not.toBe(last);
      expect(seam.bootstrapId).toBe(seam.skipThrough);
      expect(seam.replay).toBeUndefined();
    },
  );

  it("refuses to start when no router has run", async () => {
    await expect(planRoutedSeam("", TARGET, sources({}), LIMITS)).rejects.toThrow(
      "no history router has run yet",
    );
  });
});

describe("decodeRoutedMessage", () => {
  const lengthPrefixed = (...parts: string[]) =>
    Buffer.concat(
      parts.flatMap((part) => {
        const bytes = Buffer.from(part, "binary");
        const length = Buffer.alloc(4);
        length.writeUInt32BE(bytes.length);
        return [length, bytes];
      }),
    );

  it("decodes an event: its predecessor, its id and its fields, binary values intact", () => {
    const message = Buffer.concat([
      Buffer.from("e1-0\u00002-5\u0000"),
      lengthPrefixed("user_id", "u1", "payload", "\u0000\u00ff\n"),
    ]);
    const decoded = decodeRoutedMessage(message);
    expect(decoded.kind).toBe("event");
    if (decoded.kind !== "event") return;
    expect(decoded.prev).toBe("1-0");
    expect(decoded.entry.id).toBe("2-5");
    expect(decoded.entry.fields.get("user_id")?.toString()).toBe("u1");
    expect([...decoded.entry.fields.get("payload")!]).toEqual([0, 255, 10]);
  });

  it("decodes a gap", () => {
    expect(decodeRoutedMessage(Buffer.from("g7-1\u0000"))).toEqual({ kind: "gap", id: "7-1" });
  });

  it.each([
    ["an unknown kind", Buffer.from("x1-0\u0000")],
    ["a gap without its terminator", Buffer.from("g7-1")],
    ["an event without its ids", Buffer.from("e1-0")],
    [
      "a field cut short",
      Buffer.concat([Buffer.from("e1-0\u00002-0\u0000"), Buffer.from([0, 0, 0, 9, 65])]),
    ],
    [
      "a length cut short",
      Buffer.concat([Buffer.from("e1-0\u00002-0\u0000"), Buffer.from([0, 0])]),
    ],
  ])("refuses %s, naming the problem", (_, message) => {
    expect(() => decodeRoutedMessage(message)).toThrow(/./);
  });
});

/**
 * planResume (contract §12) with in-memory sources: when continuity can be
 * promised, what is replayed (history up to the router, the ingress beyond
 * it, only this session's events), and every reason it cannot.
 */
import { describe, expect, it } from "vitest";
import {
  type HistoryPage,
  HistoryTrimmedError,
  planResume,
  type ResumeLimits,
  type ResumeSources,
} from "../runtime/history/resume.js";
import { compareIds } from "../runtime/streams/stream-ids.js";
import type { StreamEntry } from "../runtime/streams/stream-reader.js";

const TARGET = { userId: "u1", deviceSessionId: "ds1" };
const LIMITS: ResumeLimits = {
  historyOn: true,
  maxPayloadBytes: 1024,
  maxIngressScan: 100,
  pageSize: 2,
};

function entry(id: string, fields: Record<string, string>): StreamEntry {
  return {
    id,
    fields: new Map(Object.entries(fields).map(([name, value]) => [name, Buffer.from(value)])),
  };
}

const event = (id: string, userId = "u1", deviceSessionId?: string) =>
  entry(id, {
    user_id: userId,
    event_type: "t.e",
    payload: `p${id}`,
    ...(deviceSessionId === undefined ? {} : { device_session_id: deviceSessionId }),
  });

const inRange = (id: string, first: string, last: string) =>
  (first === "-" || compareIds(id, first) >= 0) && compareIds(id, last) <= 0;

/** Sources over arrays; `history` undefined = the user has none. */
function sources(options: {
  router?: { position: string; floor: string };
  history?: { floor: string; entries: readonly StreamEntry[] };
  ingress?: readonly StreamEntry[];
  /** Called before each history page after the first (to trim meanwhile). */
  beforePage?: (page: number) => void;
}): ResumeSources & { pages: number } {
  let pages = 0;
  return {
    get pages() {
      return pages;
    },
    async routerState() {
      return options.router;
    },
    async historyPage(userId, first, last, count): Promise<HistoryPage | undefined> {
      expect(userId).toBe("u1");
      options.beforePage?.(pages);
      pages++;
      const history = options.history;
      if (history === undefined) return undefined;
      const entries = history.entries.filter((one) => inRange(one.id, first, last)).slice(0, count);
      return { floor: history.floor, entries };
    },
    async ingressRange(first, last, count) {
      return (options.ingress ?? []).filter((one) => inRange(one.id, first, last)).slice(0, count);
    },
  };
}

async function replayed(plan: Awaited<ReturnType<typeof planResume>>): Promise<string[]> {
  if (!plan.recovered) throw new Error(`not recovered: ${plan.reason}`);
  const ids: string[] = [];
  for await (const one of plan.replay ?? []) ids.push(one.eventId);
  return ids;
}

describe("planResume", () => {
  it("recovers at the live position without reading anything", async () => {
    const plan = await planResume("5-0", "5-0", TARGET, sources({}), {
      ...LIMITS,
      historyOn: false,
    });
    expect(plan).toMatchObject({ recovered: true, skipThrough: "5-0" });
    expect(await replayed(plan)).toEqual([]);
  });

  it("recovers ahead of this node only for an id the ingress issued", async () => {
    const ingress = [event("9-0", "u2")];
    expect(await planResume("9-0", "5-0", TARGET, sources({ ingress }), LIMITS)).toMatchObject({
      recovered: true,
      skipThrough: "9-0",
    });
    expect(await planResume("9-1", "5-0", TARGET, sources({ ingress }), LIMITS)).toMatchObject({
      recovered: false,
      reason: "9-1 is after this node's position and not in the ingress stream",
    });
  });

  it("replays this session's history events after L, page by page", async () => {
    const history = {
      floor: "1-0",
      entries: [
        event("2-0"),
        event("3-0", "u1", "other"),
        event("4-0", "u1", "ds1"),
        event("5-0"),
        event("6-0"),
      ],
    };
    const source = sources({ router: { position: "6-0", floor: "0-0" }, history });
    const plan = await planResume("2-0", "6-0", TARGET, source, LIMITS);
    expect(await replayed(plan)).toEqual(["4-0", "5-0", "6-0"]);
    expect(source.pages).toBe(2);
  });

  it("bridges a router behind this node from the ingress", async () => {
    const history = { floor: "0-0", entries: [event("2-0")] };
    const ingress = [event("2-0"), event("3-0", "u2"), event("4-0"), event("5-0", "u1", "ds1")];
    const plan = await planResume(
      "1-0",
      "5-0",
      TARGET,
      sources({ router: { position: "2-0", floor: "0-0" }, history, ingress }),
      LIMITS,
    );
    expect(await replayed(plan)).toEqual(["2-0", "4-0", "5-0"]);
  });

  it.each([
    ["history is off", { ...LIMITS, historyOn: false }, {}, "history is off"],
    ["no router ran", LIMITS, {}, "no history router has run"],
    [
      "L before the router's floor",
      LIMITS,
      { router: { position: "9-0", floor: "3-0" } },
      "history starts at 3-0, after 2-0",
    ],
    [
      "no history for the user",
      LIMITS,
      { router: { position: "9-0", floor: "0-0" } },
      "the user has no history (expired or lost)",
    ],
    [
      "history trimmed past L",
      LIMITS,
      {
        router: { position: "9-0", floor: "0-0" },
        history: { floor: "4-0", entries: [event("5-0")] },
      },
      "the user's history was trimmed past 2-0 (floor 4-0)",
    ],
    [
      "the ingress no longer holds the router's position",
      LIMITS,
      {
        router: { position: "4-0", floor: "0-0" },
        history: { floor: "0-0", entries: [] },
        ingress: [event("5-0")],
      },
      "the ingress no longer holds 4-0",
    ],
    [
      "the router further behind than the scan bound",
      { ...LIMITS, maxIngressScan: 1 },
      {
        router: { position: "4-0", floor: "0-0" },
        history: { floor: "0-0", entries: [] },
        ingress: [event("4-0"), event("5-0"), event("6-0")],
      },
      "the router is more than 1 entries behind",
    ],
  ] as const)("does not recover when %s", async (_, limits, options, reason) => {
    const plan = await planResume("2-0", "9-0", TARGET, sources(options), limits);
    expect(plan).toEqual({ recovered: false, reason });
  });

  it("fails the replay when history is trimmed past it while it is sent", async () => {
    const history = {
      floor: "1-0",
      entries: [event("2-0"), event("3-0"), event("4-0"), event("5-0")],
    };
    const source = sources({
      router: { position: "5-0", floor: "0-0" },
      history,
      beforePage: (page) => {
        if (page === 1) history.floor = "4-0";
      },
    });
    const plan = await planResume("1-0", "5-0", TARGET, source, LIMITS);
    await expect(replayed(plan)).rejects.toBeInstanceOf(HistoryTrimmedError);
  });
});

/**
 * The Lua scripts that keep each user's history stream (contract §12). Each
 * touches one user's keys, so it runs where their slot lives (but for
 * `APPEND_MANY`, used only on a single Redis), and each is atomic:
 * what a script reads about a history stream (does it exist, how far back is it
 * complete) always matches the entries it returns or writes.
 *
 * A history stream is complete back to its floor: it holds every event of its
 * user with an id above the floor (up to the router's position). The floor is
 * the stream's own `max-deleted-entry-id` (Redis ≥ 7.0), so it lives and dies
 * with the entries it describes — an expired, evicted or lost stream takes its
 * floor with it, and a missing stream proves nothing. Three things set it:
 *
 * - creation: the router creates a stream with the id of the ingress entry it
 *   routed just before (no event of this user lies in between); a subscribing
 *   node creates an empty one with the position its live delivery starts from;
 * - trimming: entries are removed oldest first with `XDEL`, which raises
 *   `max-deleted-entry-id` to the newest removed id;
 * - an out-of-order write (two routers for a moment): the write cannot go in
 *   below the top, so the floor is raised to its id — history before it is no
 *   longer complete, and resumes from there are told so.
 */
import type { Cluster, Redis } from "ioredis";

/**
 * Lua helpers the scripts share: `stream_info(key)` is the stream's
 * `XINFO STREAM` reply as a table by field name; `keep_alive(key, floor,
 * ttl)` sets the stream's TTL, first creating it empty and complete after
 * `floor` when it is missing, and returns 1 when it created it.
 */
const HELPERS = `
local function stream_info(key)
  local info = redis.call('XINFO', 'STREAM', key)
  local fields = {}
  for j = 1, #info, 2 do fields[info[j]] = info[j + 1] end
  return fields
end
local function keep_alive(key, floor, ttl)
  local created = 0
  if redis.call('EXISTS', key) == 0 then
    redis.call('XGROUP', 'CREATE', key, 'touch', '$', 'MKSTREAM')
    redis.call('XGROUP', 'DESTROY', key, 'touch')
    if floor ~= '0-0' then
      redis.call('XSETID', key, floor, 'MAXDELETEDID', floor)
    end
    created = 1
  end
  redis.call('PEXPIRE', key, ttl)
  return created
end
`;

/**
 * Appends one user's events: `append(key, channel, size, ttl, first, last)`
 * with `KEYS`-style names and the user's arguments at `ARGV[first..last]`:
 * the floor when created, then for each event in ingress order its id, its
 * field count × 2, its field/value pairs. Returns `written, outOfOrder`: an
 * id already there (a retried write) counts in neither.
 *
 * Each event written is also published on the channel (`SPUBLISH`: the
 * channel shares the history's hash tag, so its shard) in the same atomic
 * step, so an event is in the history exactly when it was published: a node
 * that subscribed before reading the history misses nothing. Nodes under
 * fan-out `read` subscribe nothing, and a message nobody subscribed costs
 * one lookup; publishing always lets nodes change fan-out mode one at a time.
 * Each message names the id written before it in this history (`prev`), so a
 * subscriber sees any message it did not get; an event that cannot go in
 * (below the top) publishes a gap message instead (the layout:
 * `runtime/push/routed-message.ts`).
 */
const APPEND_FUNCTION = `
local function append(key, channel, size, ttl, first, last)
  local floor = ARGV[first]
  local created = redis.call('EXISTS', key) == 0
  local written, outOfOrder = 0, 0
  local prev = floor
  if not created then
    local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
    prev = top and top[1] or stream_info(key)['last-generated-id']
  end
  local i = first + 1
  while i <= last do
    local id = ARGV[i]
    local count = tonumber(ARGV[i + 1])
    local added = redis.pcall('XADD', key, id, unpack(ARGV, i + 2, i + 1 + count))
    if type(added) == 'table' and added.err then
      if #redis.call('XRANGE', key, id, id) == 0 then
        redis.call('XSETID', key, stream_info(key)['last-generated-id'], 'MAXDELETEDID', id)
        outOfOrder = outOfOrder + 1
        redis.call('SPUBLISH', channel, 'g' .. id .. '\\0')
      end
    else
      if created and floor ~= '0-0' then
        redis.call('XSETID', key, id, 'MAXDELETEDID', floor)
      end
      created = false
      written = written + 1
      local parts = {'e', prev, '\\0', id, '\\0'}
      for j = i + 2, i + 1 + count do
        parts[#parts + 1] = struct.pack('>I4', #ARGV[j])
        parts[#parts + 1] = ARGV[j]
      end
      redis.call('SPUBLISH', channel, table.concat(parts))
      prev = id
    end
    i = i + 2 + count
  end
  local length = redis.call('XLEN', key)
  if length > size then
    local oldest = redis.call('XRANGE', key, '-', '+', 'COUNT', length - size)
    for _, entry in ipairs(oldest) do redis.call('XDEL', key, entry[1]) end
  end
  redis.call('PEXPIRE', key, ttl)
  return written, outOfOrder
end
`;

/**
 * `KEYS[1]` history stream, `KEYS[2]` the user's events channel; `ARGV`:
 * size, ttl ms, then the user's arguments (`append` above). One call per
 * user per routed batch on a cluster, so the user's events arrive in order
 * even when a cluster redirects commands (redirected commands can overtake
 * each other). Returns `{written, outOfOrder}`.
 */
const APPEND = `${HELPERS}${APPEND_FUNCTION}
local written, outOfOrder = append(KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[2], 3, #ARGV)
return {written, outOfOrder}
`;

/**
 * Many users at once, on a single Redis (the keys of different users may
 * live on different cluster slots): `KEYS` are history stream and channel
 * pairs; `ARGV`: size, ttl ms, then per user (in `KEYS` order) the number of
 * its arguments and its arguments (`append` above). Returns the sums
 * `{written, outOfOrder}`. One command per batch instead of one per user: a
 * profile of one event to each of 500 users' streams had the per-user calls
 * at about 7 % of the node's CPU.
 */
const APPEND_MANY = `${HELPERS}${APPEND_FUNCTION}
local size, ttl = tonumber(ARGV[1]), ARGV[2]
local written, outOfOrder, i = 0, 0, 3
for k = 1, #KEYS, 2 do
  local n = tonumber(ARGV[i])
  local w, o = append(KEYS[k], KEYS[k + 1], size, ttl, i + 1, i + n)
  written, outOfOrder = written + w, outOfOrder + o
  i = i + 1 + n
end
return {written, outOfOrder}
`;

/**
 * `KEYS[1]` history stream; `ARGV`: floor, ttl ms. Keeps an existing stream
 * alive; creates a missing one empty, complete back to the floor. Returns 1
 * when it created the stream.
 */
const TOUCH = `${HELPERS}
return keep_alive(KEYS[1], ARGV[1], ARGV[2])
`;

/**
 * `KEYS[1]` history stream; `ARGV`: floor when created, ttl ms, the id to
 * read after (empty: none), count. The seam of a stream under routed fan-out,
 * run once its node subscribed the user's channel: keeps the history alive,
 * creates a missing one empty and complete after the floor given (the
 * router's position, read after subscribing), and returns
 * `{created, floor, top, entries}` — `top` the id of the last event written
 * (every later event reaches the subscriber), `entries` the first page after
 * the id given, up to `top`.
 */
const SEAM = `${HELPERS}
local key = KEYS[1]
local created = keep_alive(key, ARGV[1], ARGV[2])
local info = stream_info(key)
local floor, top = info['max-deleted-entry-id'], info['last-generated-id']
local entries = {}
if ARGV[3] ~= '' then
  entries = redis.call('XRANGE', key, '(' .. ARGV[3], top, 'COUNT', ARGV[4])
end
return {created, floor, top, entries}
`;

/**
 * `KEYS[1]` history stream; `ARGV`: first id, last id (both inclusive), count.
 * Returns `{0}` when the stream does not exist, else `{1, floor, entries}`.
 */
const READ = `${HELPERS}
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {0} end
local floor = stream_info(key)['max-deleted-entry-id']
return {1, floor, redis.call('XRANGE', key, ARGV[1], ARGV[2], 'COUNT', ARGV[3])}
`;

/**
 * `KEYS[1]` router state hash; `ARGV`: position. Moves `position` forward
 * only (a router that lost its lease cannot move it back).
 */
const ADVANCE = `
local current = redis.call('HGET', KEYS[1], 'position')
local function parts(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
if current then
  local cms, cseq = parts(current)
  local nms, nseq = parts(ARGV[1])
  if nms < cms or (nms == cms and nseq <= cseq) then return 0 end
end
redis.call('HSET', KEYS[1], 'position', ARGV[1])
return 1
`;

/**
 * `KEYS[1]` lease key; `ARGV`: holder, ttl ms. Takes the lease when free,
 * renews it when held by `holder`; returns 1 when `holder` holds it now.
 */
const LEASE = `
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`;

/** `KEYS[1]` lease key; `ARGV`: holder. Gives the lease up when held by `holder`. */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/** The history commands, as methods on a client that {@link withHistoryScripts} prepared. */
export interface HistoryCommands {
  historyAppend(
    key: string,
    channel: string,
    ...args: (string | number | Buffer)[]
  ): Promise<[number, number]>;
  /**
   * `numberOfKeys`, then the keys, then the arguments of {@link APPEND_MANY};
   * any of them may come in arrays, which ioredis flattens one level.
   */
  historyAppendMany(
    ...args: (string | number | Buffer | readonly (string | number | Buffer)[])[]
  ): Promise<[number, number]>;
  historySeamBuffer(
    key: string,
    floor: string,
    ttlMs: number,
    after: string,
    count: number,
  ): Promise<[number, Buffer, Buffer, [Buffer, Buffer[]][]]>;
  historyTouch(key: string, floor: string, ttlMs: number): Promise<number>;
  historyReadBuffer(
    key: string,
    first: string,
    last: string,
    count: number,
  ): Promise<[0] | [1, Buffer, [Buffer, Buffer[]][]]>;
  historyAdvance(key: string, position: string): Promise<number>;
  historyLease(key: string, holder: string, ttlMs: number): Promise<number>;
  historyRelease(key: string, holder: string): Promise<number>;
}

const SCRIPTS: Readonly<Record<string, string>> = {
  historySeam: SEAM,
  historyTouch: TOUCH,
  historyRead: READ,
  historyAdvance: ADVANCE,
  historyLease: LEASE,
  historyRelease: RELEASE,
};

/**
 * Defines the history scripts on `redis` (once per client; `EVALSHA` with an
 * `EVAL` fallback) and returns it typed with them.
 */
export function withHistoryScripts<T extends Redis | Cluster>(redis: T): T & HistoryCommands {
  const target = redis as T & Partial<HistoryCommands>;
  if (typeof target.historyAppend !== "function") {
    for (const [name, lua] of Object.entries(SCRIPTS)) {
      redis.defineCommand(name, { numberOfKeys: 1, lua });
    }
    redis.defineCommand("historyAppend", { numberOfKeys: 2, lua: APPEND });
    redis.defineCommand("historyAppendMany", { lua: APPEND_MANY });
  }
  return target as T & HistoryCommands;
}

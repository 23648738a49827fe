/**
 * HTTP/2 keepalive for every connection of the gRPC listener (contract §7: a
 * PING every 30 s, a connection whose client does not answer within 10 s is
 * closed), on one timer for all connections.
 *
 * grpc-js keeps two timers per connection for this (the next ping, then its
 * timeout), recreated on every ping. With 10 000 idle devices that is 333
 * pings a second, each waking the event loop twice more than the ping itself
 * needs. Here connections sit in a wheel of 100 ms slots: each tick pings
 * the connections of one slot and closes those of an older slot still
 * waiting for their answer. Slots are short so that a tick's pings, and the
 * answers that come back together, take the event loop for a moment only
 * (with 10 000 connections, 33 pings a tick rather than 333 a second at once).
 */
import type { Http2Session } from "node:http2";

/** When connections are pinged and how long an answer may take. */
export interface KeepaliveOptions {
  /** Time between two pings on a connection. */
  readonly intervalMs: number;
  /** A connection whose ping is unanswered this long is closed. */
  readonly timeoutMs: number;
  /** The wheel's resolution: pings and timeouts happen up to this much late. */
  readonly tickMs?: number;
}

/** One connection in the wheel. */
interface Entry {
  readonly session: Http2Session;
  /** The slot the connection is pinged from. */
  readonly slot: number;
  /** A ping was sent and its answer has not come. */
  awaiting: boolean;
  /** The ping callback, made once per connection. */
  readonly answered: (error: Error | null) => void;
}

const DEFAULT_TICK_MS = 100;

/** A keepalive wheel; {@link add} each connection once it is established. */
export class KeepaliveWheel {
  private readonly slots: Set<Entry>[];
  private readonly tickMs: number;
  /** Slots between a ping and the check of its answer. */
  private readonly timeoutSlots: number;
  private cursor = 0;
  private connections = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(options: KeepaliveOptions) {
    this.tickMs = options.tickMs ?? DEFAULT_TICK_MS;
    const slotCount = Math.max(1, Math.round(options.intervalMs / this.tickMs));
    this.slots = Array.from({ length: slotCount }, () => new Set<Entry>());
    this.timeoutSlots = Math.min(
      slotCount,
      Math.max(1, Math.ceil(options.timeoutMs / this.tickMs)),
    );
  }

  /** Connections in the wheel. */
  get size(): number {
    return this.connections;
  }

  /**
   * Pings `session` every interval from now on, and closes it when a ping
   * goes unanswered for the timeout. It leaves the wheel when it closes.
   */
  add(session: Http2Session): void {
    // The slot pinged last: the connection's first ping comes one interval from now.
    const slot = (this.cursor + this.slots.length - 1) % this.slots.length;
    const entry: Entry = {
      session,
      slot,
      awaiting: false,
      answered: (error) => {
        // An error means the connection is closing: it leaves on 'close'.
        if (error === null) entry.awaiting = false;
      },
    };
    this.slots[slot]?.add(entry);
    this.connections++;
    session.once("close", () => {
      if (this.slots[entry.slot]?.delete(entry)) this.connections--;
      if (this.connections === 0) this.stopTimer();
    });
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.tick(), this.tickMs);
      this.timer.unref();
    }
  }

  /** Whether the wheel's timer runs: it does while connections are in it. */
  get running(): boolean {
    return this.timer !== undefined;
  }

  private stopTimer(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Checks the answers of the slot pinged a timeout ago, then pings the next slot. */
  private tick(): void {
    const checked = (this.cursor + this.slots.length - this.timeoutSlots) % this.slots.length;
    for (const entry of this.slots[checked] ?? []) {
      // Unanswered for the timeout: the client is gone or not reading.
      if (entry.awaiting) entry.session.destroy();
    }
    for (const entry of this.slots[this.cursor] ?? []) this.ping(entry);
    this.cursor = (this.cursor + 1) % this.slots.length;
  }

  private ping(entry: Entry): void {
    const { session } = entry;
    // Unanswered pings were checked first: a connection still waiting is destroyed by now.
    if (session.destroyed || session.closed) return;
    let sent: boolean;
    try {
      sent = session.ping(entry.answered);
    } catch {
      sent = false;
    }
    // Node refuses a ping while too many are unanswered, or the connection is going.
    if (!sent) {
      session.destroy();
      return;
    }
    entry.awaiting = true;
  }
}

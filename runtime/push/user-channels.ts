/**
 * Routed fan-out (contract §13), the node's side: the node subscribes (sharded
 * pub/sub, `SSUBSCRIBE`) the events channel of each user with a stream open
 * here, and only those; the history router publishes each event once, on its
 * user's channel, in the same step as it writes the history. So a node spends
 * per-event work only on events for its own streams, however many nodes run.
 *
 * Pub/sub forgets what a subscriber misses, so every way of missing a message
 * ends the streams it concerns with `UNAVAILABLE` (`interrupted`) — their
 * devices resume from history (§12) and learn whether it covers the gap:
 *
 * - each message names the event written before it in the user's history; a
 *   message whose `prev` is not the last one this node got for the user means
 *   one went missing: that user's streams end;
 * - a lost subscriber connection, a shard's subscriber replaced, or the
 *   channels moved to other nodes (slots migrating): every stream here ends,
 *   and the node subscribes afresh on a new connection as streams open again.
 */
import type { Logger } from "../../handlers/ports.js";
import type { Keyspace } from "../redis/keyspace.js";
import { type ClientEvent, createClientEventsHandler } from "../streams/client-events.js";
import type { StreamEntry } from "../streams/stream-reader.js";
import type { Metrics } from "../telemetry/metrics.js";
import { decodeRoutedMessage } from "./routed-message.js";

/** A connection in subscriber mode, as ioredis `Redis` and `Cluster` both offer it. */
export interface SubscriberConnection {
  ssubscribe(channel: string): Promise<unknown>;
  sunsubscribe(channel: string): Promise<unknown>;
  on(event: "smessageBuffer", listener: (channel: Buffer, message: Buffer) => void): unknown;
  disconnect(): void;
}

/** What the user channels need. */
export interface UserChannelsOptions {
  /** Opens a new subscriber connection (connected); called again after one is lost. */
  readonly connect: (onLost: (why: string) => void) => Promise<SubscriberConnection>;
  readonly keyspace: Keyspace;
  /** Hands one event to the matching local streams; returns how many it reached. */
  readonly deliver: (event: ClientEvent) => number;
  /** Ends the streams of one user (`undefined`: every stream) as interrupted; returns how many. */
  readonly interrupt: (userId: string | undefined) => number;
  readonly maxPayloadBytes: number;
  /** How long a user without streams stays subscribed, in case one opens again (ms). */
  readonly idleMs: number;
  readonly metrics?: Pick<Metrics, "clientEvents" | "pushEventsReceived">;
  readonly logger: Logger;
}

/** The subscriptions of one node. */
export interface UserChannels {
  /**
   * Subscribes the user's channel (if it is not yet) and resolves once Redis
   * confirmed it: every event published after that reaches this node. Resolves
   * the function that gives the subscription back.
   */
  acquire(userId: string): Promise<() => void>;
  /** Users subscribed right now. */
  readonly size: number;
  /** Unsubscribes everything and closes the connection. */
  stop(): Promise<void>;
}

/** One subscribed user. */
interface Subscription {
  readonly userId: string;
  readonly channel: string;
  /** Streams holding it. */
  refs: number;
  /** Settles once Redis confirmed the subscription. */
  readonly ready: Promise<void>;
  /** The id of the last message received, to see one go missing. */
  lastId: string | undefined;
  /** When `refs` last fell to 0. */
  idleSince: number;
}

/** Creates the node's user channels; the connection opens with the first subscription. */
export function createUserChannels(options: UserChannelsOptions): UserChannels {
  return new Channels(options);
}

class Channels implements UserChannels {
  /** The subscriptions by channel (each user's channel is derived from its id). */
  private readonly byChannel = new Map<string, Subscription>();
  private connection: Promise<SubscriberConnection> | undefined;
  private readonly handle: (entries: readonly StreamEntry[]) => void;
  private readonly sweeper: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly options: UserChannelsOptions) {
    this.handle = createClientEventsHandler({
      deliver: options.deliver,
      metrics: options.metrics,
      logger: options.logger,
      maxPayloadBytes: options.maxPayloadBytes,
    });
    this.sweeper = setInterval(() => this.sweep(), Math.max(100, options.idleMs));
    this.sweeper.unref();
  }

  get size(): number {
    return this.byChannel.size;
  }

  async acquire(userId: string): Promise<() => void> {
    if (this.stopped) throw new Error("user channels are stopped");
    const channel = this.options.keyspace.eventsChannel(userId);
    let subscription = this.byChannel.get(channel);
    if (subscription === undefined) {
      const ready = this.subscribe(channel);
      subscription = { userId, channel, refs: 0, ready, lastId: undefined, idleSince: 0 };
      this.byChannel.set(channel, subscription);
      // A failed subscription is forgotten, so the next stream tries again.
      const failed = subscription;
      ready.catch(() => this.forget(failed));
    }
    subscription.refs++;
    const held = subscription;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      held.refs--;
      if (held.refs === 0) held.idleSince = Date.now();
    };
    try {
      await held.ready;
    } catch (error) {
      release();
      throw error;
    }
    return release;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweeper);
    const connection = this.connection;
    this.connection = undefined;
    this.byChannel.clear();
    (await connection?.catch(() => undefined))?.disconnect();
  }

  private async subscribe(channel: string): Promise<void> {
    this.connection ??= this.open();
    const connection = await this.connection;
    await connection.ssubscribe(channel);
  }

  /** Opens a subscriber connection; a failed one is forgotten, so the next subscribe tries anew. */
  private open(): Promise<SubscriberConnection> {
    const opening = this.options
      .connect((why) => this.lost(opening, why))
      .then((connection) => {
        connection.on("smessageBuffer", (channel, message) => this.receive(channel, message));
        return connection;
      });
    opening.catch(() => {
      if (this.connection === opening) this.connection = undefined;
    });
    return opening;
  }

  /** The subscriber connection lost messages (or may have): start over. */
  private lost(connection: Promise<SubscriberConnection>, why: string): void {
    if (this.connection !== connection || this.stopped) return;
    this.connection = undefined;
    this.byChannel.clear();
    void connection.then((lost) => lost.disconnect()).catch(() => undefined);
    const ended = this.options.interrupt(undefined);
    this.options.logger.warn(
      `events subscriber: ${why}; events may have been missed${ended > 0 ? `, ${ended} open stream(s) ended to resume` : ""}`,
    );
  }

  private receive(channel: Buffer, message: Buffer): void {
    const subscription = this.byChannel.get(channel.toString());
    if (subscription === undefined) return; // unsubscribed meanwhile
    let decoded: ReturnType<typeof decodeRoutedMessage>;
    try {
      decoded = decodeRoutedMessage(message);
    } catch (error) {
      this.options.logger.warn(
        `events channel ${subscription.channel}: message dropped: ${(error as Error).message}`,
      );
      return;
    }
    const { userId } = subscription;
    if (decoded.kind === "gap") {
      this.interruptUser(userId, `event ${decoded.id} could not be kept in order`);
      return;
    }
    const { prev, entry } = decoded;
    if (subscription.lastId !== undefined && prev !== subscription.lastId) {
      this.interruptUser(
        userId,
        `message after ${prev} arrived, the last one received was ${subscription.lastId}`,
      );
    }
    subscription.lastId = entry.id;
    this.options.metrics?.pushEventsReceived.inc({ via: "channel" });
    this.handle([entry]);
  }

  private interruptUser(userId: string, why: string): void {
    const ended = this.options.interrupt(userId);
    this.options.logger.warn(
      `events channel of user ${userId}: ${why}; ${ended} open stream(s) ended to resume`,
    );
  }

  private forget(subscription: Subscription): void {
    if (this.byChannel.get(subscription.channel) === subscription) {
      this.byChannel.delete(subscription.channel);
    }
  }

  /** Unsubscribes users that have had no stream here for `idleMs`. */
  private sweep(): void {
    const connection = this.connection;
    if (connection === undefined) return;
    const before = Date.now() - this.options.idleMs;
    for (const subscription of this.byChannel.values()) {
      if (subscription.refs > 0 || subscription.idleSince > before) continue;
      this.forget(subscription);
      void connection
        .then((open) => open.sunsubscribe(subscription.channel))
        .catch((error: Error) =>
          this.options.logger.debug(
            `events subscriber: SUNSUBSCRIBE ${subscription.channel} failed: ${error.message}`,
          ),
        );
    }
  }
}

/**
 * The one place the gateway hooks into an ioredis client: timing each
 * command it sends, for `gateway_redis_command_duration_seconds`.
 *
 * Written against ioredis 6.0.0. Its public way to watch commands, the
 * `ioredis:command` tracing channel of `node:diagnostics_channel`, does not
 * give the same numbers: the channel is process-wide and names a command's
 * server, not its client, so it cannot keep to one gateway's connections (a
 * second gateway or a publisher talking to the same Redis in the process would
 * be counted too); and it publishes only commands written to the socket, so a
 * command refused while the connection is down (the gateway runs without an
 * offline queue) would stop counting during an outage. So each observed
 * client's `sendCommand` — the method every command of a client goes through,
 * again on each re-send — is wrapped on the instance, and so is `duplicate`,
 * which makes the stream readers' connections. A Redis Cluster client (ioredis
 * `Cluster`) is wrapped the same way: its `sendCommand` takes each command once
 * and hands it, and any redirection of it, to its node connections directly.
 * test/ioredis-command-timing.test.ts
 * fails when an ioredis release stops routing commands this way.
 */
import { performance } from "node:perf_hooks";
import type { Cluster, Command, Redis } from "ioredis";

/** Receives one command's lower-case name and duration in seconds, once per command. */
export type CommandTimer = (command: string, seconds: number) => void;

const timedBy = Symbol.for("edge-gateway.redis-command-timer");
/** Marks a command already timed, so a re-send is not timed again. */
const timed = Symbol("edge-gateway.redis-command-timed");

/**
 * Calls `onCommand` for every command sent on `redis` — and on every
 * connection later made with its `duplicate()` — once it has its reply or
 * error, with the time since it was first sent, even when ioredis re-sends it
 * after a reconnect; a command refused at once (offline) counts too. Returns
 * `redis`; a client already timed keeps its first timer.
 */
export function timeIoredisCommands<Client extends Redis | Cluster>(
  redis: Client,
  onCommand: CommandTimer,
): Client {
  const client = redis as Client & { [timedBy]?: CommandTimer };
  if (client[timedBy] !== undefined) return redis;
  client[timedBy] = onCommand;

  const sendCommand = client.sendCommand;
  client.sendCommand = function (
    this: Client,
    command: Command & { [timed]?: true },
    ...rest: unknown[]
  ) {
    // A mark on the command rather than a WeakSet entry: weak collections
    // cost the garbage collector extra work for every command.
    if (command[timed] === undefined) {
      command[timed] = true;
      const startedAt = performance.now();
      const done = () => onCommand(command.name, (performance.now() - startedAt) / 1000);
      command.promise.then(done, done);
    }
    return (sendCommand as (...args: unknown[]) => unknown).call(this, command, ...rest);
  };

  const duplicate = client.duplicate;
  client.duplicate = function (this: Client, ...args: unknown[]) {
    return timeIoredisCommands(
      (duplicate as (...args: unknown[]) => Client).apply(this, args),
      onCommand,
    );
  } as Client["duplicate"];
  return redis;
}

/** Where Redis command durations go: `gateway_redis_command_duration_seconds`. */
export interface RedisCommandHistogram {
  /** Records one command's duration in seconds. */
  observe(labels: { command: string }, seconds: number): void;
}

/**
 * Records the duration of every command sent on `redis` — and on every
 * connection later made with its `duplicate()` — in `histogram`, labelled by
 * lower-case command name. A command counts once, from when it is sent until
 * its reply or error, even when ioredis re-sends it after a reconnect.
 * Returns `redis`; calling it twice on one client changes nothing.
 */
export function observeRedisCommands<Client extends Redis | Cluster>(
  redis: Client,
  histogram: RedisCommandHistogram,
): Client {
  // One label object per command name, not one per command.
  const labels = new Map<string, { command: string }>();
  return timeIoredisCommands(redis, (command, seconds) => {
    let label = labels.get(command);
    if (label === undefined) {
      label = { command };
      labels.set(command, label);
    }
    histogram.observe(label, seconds);
  });
}

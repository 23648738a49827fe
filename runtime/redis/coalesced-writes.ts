/**
 * One socket write per event-loop turn for a Redis connection's commands.
 * Without auto-pipelining, ioredis writes each command to the socket as it
 * is sent: one syscall each. Calls that arrive on different connections in
 * the same turn each reserve their request id; measured with
 * bench/execute-command-vs-plain.ts, that write was about a tenth of the CPU
 * of an ExecuteCommand call. So the socket is corked at the first command of
 * a turn and uncorked in that turn's check phase (`setImmediate`): the
 * turn's commands leave in one write, in order, before the loop waits for
 * I/O again.
 *
 * Written against ioredis 6.0.0: every command goes through the instance's
 * `sendCommand`, which writes to its socket, `stream`, at once when ready.
 */
import type { Socket } from "node:net";
import type { Command, Redis } from "ioredis";

/** Makes `redis` write the commands sent within one event-loop turn with one socket write. Returns `redis`. */
export function coalesceWrites(redis: Redis): Redis {
  const client = redis as Redis & { stream?: Socket };
  const sendCommand = client.sendCommand;
  let corked: Socket | undefined;
  const uncork = () => {
    const socket = corked;
    corked = undefined;
    socket?.uncork();
  };
  client.sendCommand = function (this: typeof client, command: Command, stream?: unknown) {
    const socket = this.stream;
    if (corked === undefined && stream === undefined && socket?.writable === true) {
      socket.cork();
      corked = socket;
      setImmediate(uncork);
    }
    return (sendCommand as (command: Command, stream?: unknown) => unknown).call(
      this,
      command,
      stream,
    );
  } as typeof client.sendCommand;
  return redis;
}

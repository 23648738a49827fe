/**
 * The push peer for `bench/push-vs-socketio.ts`: a Socket.IO 4 server with
 * `@socket.io/redis-streams-adapter` on the gateway's Redis, doing the job of
 * the gateway's push path. Each device is one socket (websocket transport
 * only) that names its device session in the handshake's `auth.session_id`;
 * the server looks the session up as the gateway does (`HGETALL
 * <prefix>session:<id>`: present, `status` active, a `user_id`) and joins the
 * socket to a room for its user and one for its session. Events arrive
 * through the adapter's Redis stream, added by a publisher process's
 * `io.to(room).emit(...)`. There is no signature on either side: Socket.IO
 * has none.
 *
 *   node --import tsx bench/peer/socketio-server.ts
 *
 * Environment: `REDIS_ADDR` (host:port), `REDIS_PASSWORD`, `SESSION_KEY_PREFIX`
 * (default `gateway:`), `STREAM_NAME` (the adapter's stream, default
 * `socket.io`), `STREAM_MAX_LEN` (default 1,000,000, so a burst is never
 * trimmed before it is read). It prints `socket.io listening on
 * 127.0.0.1:<port>` once ready and stops on SIGTERM.
 */
import { createServer } from "node:http";
import { createAdapter } from "@socket.io/redis-streams-adapter";
import { Redis } from "ioredis";
import { Server } from "socket.io";

const [host, port] = (process.env.REDIS_ADDR ?? "127.0.0.1:6379").split(":");
const redis = new Redis({
  host,
  port: Number(port),
  password: process.env.REDIS_PASSWORD,
  lazyConnect: true,
});
await redis.connect();
const sessionKeyPrefix = `${process.env.SESSION_KEY_PREFIX ?? "gateway:"}session:`;

const http = createServer();
const io = new Server(http, {
  transports: ["websocket"],
  serveClient: false,
  adapter: createAdapter(redis, {
    streamName: process.env.STREAM_NAME ?? "socket.io",
    maxLen: Number(process.env.STREAM_MAX_LEN ?? 1_000_000),
    onlyPlaintext: true,
  }),
});

// The handshake stands in for the gateway's signed SubscribeEvents request: the
// session must exist and be active, and its user decides the rooms.
io.use((socket, next) => {
  const deviceSessionId = (socket.handshake.auth as { session_id?: unknown }).session_id;
  if (typeof deviceSessionId !== "string" || deviceSessionId === "") {
    next(new Error("unauthenticated"));
    return;
  }
  redis.hgetall(`${sessionKeyPrefix}${deviceSessionId}`).then(
    (session) => {
      if (!session.user_id || session.status !== "active") {
        next(new Error("unauthenticated"));
        return;
      }
      socket.data.userId = session.user_id;
      socket.data.deviceSessionId = deviceSessionId;
      next();
    },
    (error: Error) => next(error),
  );
});

io.on("connection", (socket) => {
  void socket.join([`user:${socket.data.userId}`, `session:${socket.data.deviceSessionId}`]);
});

await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
const address = http.address();
if (address === null || typeof address === "string") throw new Error("no TCP address");
console.log(`socket.io listening on 127.0.0.1:${address.port}`);

process.once("SIGTERM", () => {
  io.close(() => {
    redis.disconnect();
    process.exit(0);
  });
});

/**
 * The session re-check after snapshots were lost: every open stream's session
 * is read again from Redis and the PushHub decides which streams stay open.
 */
import type { DeviceSession, Logger } from "../../handlers/ports.js";
import type { CachedSessionStore } from "../redis/session-store.js";
import type { PushHub } from "./push-hub.js";

/** Sessions read at a time: the session-events reader waits for the whole re-check. */
const CONCURRENT_READS = 32;

/**
 * Re-reads the session of every open stream: streams of sessions now revoked
 * or gone end as revoked, streams opened under another user or key end as
 * changed. A session that cannot be read (Redis still reconnecting) is
 * retried briefly, then its streams end with UNAVAILABLE so clients
 * reconnect and authenticate again.
 */
export async function recheckOpenStreams(
  hub: PushHub,
  sessions: CachedSessionStore,
  logger: Logger,
): Promise<void> {
  const recheck = async (deviceSessionId: string) => {
    let session: DeviceSession | undefined;
    try {
      session = await withRetries(() => sessions.refresh(deviceSessionId));
    } catch (error) {
      logger.warn(
        `re-check of session ${deviceSessionId} failed: ${(error as Error).message}; ending its streams`,
      );
      hub.endSession(deviceSessionId, "recheck_failed");
      return;
    }
    hub.reconcile(deviceSessionId, session);
  };
  const pending = hub.openSessionIds();
  const workers = Array.from({ length: Math.min(CONCURRENT_READS, pending.length) }, async () => {
    for (let next = pending.pop(); next !== undefined; next = pending.pop()) await recheck(next);
  });
  await Promise.all(workers);
}

/** Runs `call`, retrying failures 5 times with doubling delays from 50 ms. */
async function withRetries<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      if (attempt >= 5) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50 * 2 ** attempt));
    }
  }
}

/**
 * The Redis keys the gateway, the CLI, the publisher helpers and the tests
 * build from `GATEWAY_REDIS_KEY_PREFIX` (contract §5, §6), in one place. The
 * two stream keys are not derived from the prefix: they are configured whole
 * (`GATEWAY_SESSION_EVENTS_REDIS_STREAM`, `GATEWAY_CLIENT_EVENTS_REDIS_STREAM`).
 */
import { DEFAULTS } from "../config/defaults.js";

/** The keys under one key prefix. */
export interface Keyspace {
  /** The prefix every key here starts with. */
  readonly prefix: string;
  /** The session hash: `{prefix}session:{device_session_id}`. */
  sessionKey(deviceSessionId: string): string;
  /**
   * The replay reservation: `{prefix}replay:{device_session_id}/{request_id}`.
   * `/` cannot occur in identifiers, so the key is unambiguous.
   */
  replayKey(deviceSessionId: string, requestId: string): string;
  /**
   * A user's event history (§12), a stream: `{prefix}history:{<user_id>}`. The
   * braces are a Redis Cluster hash tag: everything kept per user lives in the
   * user's slot.
   */
  historyKey(userId: string): string;
  /**
   * A user's events channel under routed fan-out (§13), sharded pub/sub:
   * `{prefix}events:{<user_id>}`, in the user's slot (the history's hash tag).
   */
  eventsChannel(userId: string): string;
  /**
   * The state of the router that copies `stream` into the histories, a hash
   * (`position`, `floor`): `{prefix}history-router:{stream}`.
   */
  historyRouterKey(stream: string): string;
  /** That router's lease, held by one node at a time: `{prefix}history-lease:{stream}`. */
  historyLeaseKey(stream: string): string;
}

/**
 * The keyspace under `prefix` (the contract's `gateway:` when omitted).
 *
 * @example
 * createKeyspace("gateway:").sessionKey("ds_42"); // "gateway:session:ds_42"
 */
export function createKeyspace(prefix: string = DEFAULTS.keyPrefix): Keyspace {
  return {
    prefix,
    sessionKey: (deviceSessionId) => `${prefix}session:${deviceSessionId}`,
    replayKey: (deviceSessionId, requestId) => `${prefix}replay:${deviceSessionId}/${requestId}`,
    historyKey: (userId) => `${prefix}history:{${userId}}`,
    eventsChannel: (userId) => `${prefix}events:{${userId}}`,
    historyRouterKey: (stream) => `${prefix}history-router:${stream}`,
    historyLeaseKey: (stream) => `${prefix}history-lease:${stream}`,
  };
}

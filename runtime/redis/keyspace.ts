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
  };
}

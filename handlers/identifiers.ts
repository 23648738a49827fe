/** Identifier rules of contract §3. */

const IDENTIFIER = /^[A-Za-z0-9._:-]{1,128}$/;
const TYPE_NAME = /^[A-Za-z0-9._:/-]{1,128}$/;
const STREAM_ID = /^\d{1,20}-\d{1,20}$/;

/** `device_session_id`, `request_id`, `user_id`: 1–128 bytes of `[A-Za-z0-9._:-]`. */
export function isIdentifier(value: string): boolean {
  return IDENTIFIER.test(value);
}

/** `message_type`, `event_type`: 1–128 bytes of `[A-Za-z0-9._:/-]`. */
export function isTypeName(value: string): boolean {
  return TYPE_NAME.test(value);
}

/** A Redis stream entry id such as `1764028801000-0`. */
export function isStreamId(value: string): boolean {
  return STREAM_ID.test(value);
}

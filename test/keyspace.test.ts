/**
 * The Redis keys of contract §5 and §6, byte for byte: every part of the
 * project builds its keys through this module, so these are the keys an
 * operator finds in Redis.
 */
import { describe, expect, it } from "vitest";
import { createKeyspace } from "../runtime/redis/keyspace.js";

describe("createKeyspace", () => {
  it("builds the session hash key {prefix}session:{device_session_id}", () => {
    expect(createKeyspace("gateway:").sessionKey("ds_01J9Z")).toBe("gateway:session:ds_01J9Z");
    expect(createKeyspace("app1:").sessionKey("a.b:c-d")).toBe("app1:session:a.b:c-d");
  });

  it("builds the replay key {prefix}replay:{device_session_id}/{request_id}", () => {
    expect(createKeyspace("gateway:").replayKey("ds_01J9Z", "req-1")).toBe(
      "gateway:replay:ds_01J9Z/req-1",
    );
    expect(createKeyspace("x").replayKey("d", "r")).toBe("xreplay:d/r");
  });

  it("uses the contract's default prefix gateway: when none is given", () => {
    const keys = createKeyspace();
    expect(keys.prefix).toBe("gateway:");
    expect(keys.sessionKey("ds-1")).toBe("gateway:session:ds-1");
    expect(keys.replayKey("ds-1", "r-1")).toBe("gateway:replay:ds-1/r-1");
  });
});

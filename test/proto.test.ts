/**
 * The proto contract: `buf lint` (STANDARD) is clean and the committed
 * generated code (ts-proto for the gRPC listener, protoc-gen-es for the
 * Connect routes) is what `npm run proto` generates today.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { tempDir } from "./support/temp-dir.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const buf = join(root, "node_modules", ".bin", "buf");

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

describe("proto/edgegateway/v1/edge_gateway.proto", () => {
  it("passes buf lint STANDARD", () => {
    const result = spawnSync(buf, ["lint"], { cwd: root, encoding: "utf8" });
    expect(result.stdout + result.stderr).toBe("");
    expect(result.status).toBe(0);
  });

  it.each(["gen", "gen-es"])(
    "has committed generated code in proto/%s identical to a fresh generation",
    (outDir) => {
      const out = tempDir("proto");
      const result = spawnSync(buf, ["generate", "--output", out], {
        cwd: root,
        encoding: "utf8",
      });
      expect(result.stderr).toBe("");
      expect(result.status).toBe(0);
      const fresh = join(out, "proto", outDir);
      const committed = join(root, "proto", outDir);
      const list = (dir: string) =>
        files(dir)
          .map((path) => relative(dir, path))
          .sort();
      const generated = list(fresh).filter((path) => path.endsWith(".ts"));
      expect(generated.length).toBeGreaterThan(0);
      expect(list(committed).filter((path) => path.endsWith(".ts"))).toEqual(generated);
      for (const path of generated) {
        expect(
          readFileSync(join(committed, path), "utf8"),
          `${path} is stale: run npm run proto`,
        ).toBe(readFileSync(join(fresh, path), "utf8"));
      }
    },
  );
});

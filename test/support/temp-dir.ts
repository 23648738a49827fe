/**
 * Private temporary directories for tests. Test files run with
 * `test/support/setup.ts`, which removes every directory made here once the
 * file's tests are done, so key files and certificates never outlive a run.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const made: string[] = [];

/** A new directory `edge-gateway-<name>-*` under the OS temp dir, removed by `removeTempDirs`. */
export function tempDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `edge-gateway-${name}-`));
  made.push(dir);
  return dir;
}

/** Removes every directory `tempDir` made so far (and their contents). */
export function removeTempDirs(): void {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
}

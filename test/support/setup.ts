/**
 * Runs before each test file (vitest `setupFiles`): whatever the file put in
 * temporary directories is removed after its last test and hook.
 */
import { afterAll } from "vitest";
import { removeTempDirs } from "./temp-dir.js";

// Registered first, so it runs after the file's own afterAll hooks have
// stopped the processes that use those directories.
afterAll(removeTempDirs);

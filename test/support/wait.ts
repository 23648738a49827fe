/** Waiting in tests for something that happens asynchronously. */

/**
 * Resolves once `check` holds, polling every 10 ms; the 20 s timeout is only a
 * safety net. `what` names the condition; as a function it is read at the
 * timeout, so it can say what was seen last.
 */
export async function waitFor(
  what: string | (() => string),
  check: () => boolean | Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${typeof what === "string" ? what : what()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

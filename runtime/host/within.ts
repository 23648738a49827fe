/** Bounding a promise by a time budget. */

/** Resolves `value`, or rejects after `ms` with a message naming `what`. */
export async function within<T>(what: string, ms: number, value: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      value,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Cleanups a test file registers as it starts things, run after its tests. */

/** Runs registered cleanups, last registered first. */
export function createCleanup() {
  const tasks: (() => unknown)[] = [];
  return {
    /** Registers a cleanup. */
    defer(task: () => unknown): void {
      tasks.push(task);
    },
    /** Runs and forgets every registered cleanup; one failing does not stop the others. */
    async run(): Promise<void> {
      const errors: unknown[] = [];
      for (const task of tasks.splice(0).reverse()) {
        try {
          await task();
        } catch (error) {
          errors.push(error);
        }
      }
      if (errors.length > 0) throw errors[0];
    },
  };
}

/** Cleanup registry of one test file. */
export type Cleanup = ReturnType<typeof createCleanup>;

/**
 * The host's one lifecycle: components start in the order they are listed
 * and stop in the order of the contract's shutdown sequence (§10), through
 * one path used both by `stop()` and by a start that failed.
 *
 * Start order and stop order are two lists on purpose: the contract starts
 * the stream readers before the listeners (§2) and also stops them first
 * (§10), so the stop order is not the start order reversed.
 */
import type { Logger } from "../../handlers/ports.js";
import { within } from "./within.js";

/** One part of the gateway with a place in startup and in shutdown. */
export interface Component {
  /** What the shutdown log says once its step is done, e.g. `push hub closed`. */
  readonly stopped: string;
  /** Its step in the shutdown sequence: lower steps stop first. */
  readonly shutdownStep: number;
  /** Checks that run before any component starts (keys, files, modules). */
  preflight?(): Promise<void>;
  /** Starts it; runs after every preflight and after the components listed before it. */
  start?(): Promise<void>;
  /** Stops it within `budgetMs`; also called when it never started or started in part. */
  stop?(budgetMs: number): Promise<void>;
}

/** Starts and stops a list of components. */
export interface Lifecycle {
  /** Runs every preflight, then every start; on a failure stops what started (quietly) and rejects. */
  start(): Promise<void>;
  /** Runs every component's stop once, in shutdown order, each bounded by the budget and logged. */
  stop(): Promise<void>;
}

/** Options of {@link createLifecycle}. */
export interface LifecycleOptions {
  readonly logger: Logger;
  /** Budget of each shutdown step in ms (read when stopping: configuration may load during start). */
  readonly budgetMs: () => number;
  /** False once shutdown began: a failed start then leaves the stop to it. */
  readonly mayStopOnFailure: () => boolean;
}

/** Bound of each step when a failed start stops what it had started. */
const FAILED_START_BUDGET_MS = 2000;

/**
 * Creates the lifecycle of `components`, listed in start order.
 *
 * @example
 * const lifecycle = createLifecycle([redis, readers, grpc], { logger, budgetMs: () => 5000,
 *   mayStopOnFailure: () => true });
 * await lifecycle.start();
 * await lifecycle.stop();
 */
export function createLifecycle(
  components: readonly Component[],
  options: LifecycleOptions,
): Lifecycle {
  const shutdownOrder = [...components].sort((a, b) => a.shutdownStep - b.shutdownStep);
  let stopping: Promise<void> | undefined;

  async function stopAll(quiet: boolean): Promise<void> {
    const budgetMs = quiet
      ? Math.min(options.budgetMs(), FAILED_START_BUDGET_MS)
      : options.budgetMs();
    for (const component of shutdownOrder) {
      try {
        await within(component.stopped, budgetMs, component.stop?.(budgetMs) ?? Promise.resolve());
        if (!quiet) options.logger.info(`shutdown: ${component.stopped}`);
      } catch (error) {
        options.logger.warn(`shutdown: ${(error as Error).message}`);
      }
    }
  }

  return {
    async start() {
      try {
        for (const component of components) await component.preflight?.();
        for (const component of components) await component.start?.();
      } catch (error) {
        // A failed start is not a shutdown: no step is logged, the one error line stays alone.
        // Once shutdown began, the running stop() closes everything instead.
        if (options.mayStopOnFailure()) {
          stopping ??= stopAll(true);
          await stopping;
        }
        throw error;
      }
    },
    stop() {
      stopping ??= stopAll(false);
      return stopping;
    },
  };
}

/** Node.js scripts run as child processes, with their output collected for assertions. */
import { type ChildProcess, spawn } from "node:child_process";
import { basename } from "node:path";
import { fileURLToPath } from "node:url";

/** The gateway's bin, as the package runs it. */
export const BIN = fileURLToPath(new URL("../../dist/runtime/bin.js", import.meta.url));

/** A script running in a child process. */
export interface NodeProcess {
  readonly child: ChildProcess;
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
  /** Resolves once its output matches `pattern`; rejects if it exits first or `timeoutMs` passes. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Resolves with the exit code once it exits. */
  readonly exited: Promise<number | null>;
  /** Kills it (SIGKILL) if still running, and resolves once it exited. */
  kill(): Promise<void>;
}

/** How to run a script. */
export interface NodeProcessOptions {
  /** Its environment: exactly these variables, plus PATH and NO_COLOR=1 unless given. */
  readonly env?: Record<string, string>;
  readonly cwd?: string;
  /** Gives it a process group of its own, as a terminal does. */
  readonly detached?: boolean;
  /** The timeout of `waitFor` when a call names none; without one it waits until the process exits. */
  readonly waitTimeoutMs?: number;
}

/** Runs `script` with `args` under this Node.js. */
export function spawnNode(
  script: string,
  args: readonly string[] = [],
  options: NodeProcessOptions = {},
): NodeProcess {
  const name = [basename(script), ...args].join(" ");
  const child = spawn(process.execPath, [script, ...args], {
    env: { PATH: process.env.PATH ?? "", NO_COLOR: "1", ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    ...(options.detached === undefined ? {} : { detached: options.detached }),
  });
  let text = "";
  const waiters = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    text += chunk.toString("utf8");
    for (const wake of waiters) wake();
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => resolve(code)),
  );
  return {
    child,
    output: () => text,
    exited,
    waitFor(pattern, timeoutMs = options.waitTimeoutMs) {
      return new Promise((resolve, reject) => {
        let settled = false;
        let timer: NodeJS.Timeout | undefined;
        const settle = () => {
          settled = true;
          clearTimeout(timer);
          waiters.delete(check);
        };
        const check = () => {
          const match = settled ? null : text.match(pattern);
          if (match) {
            settle();
            resolve(match);
          }
        };
        if (timeoutMs !== undefined) {
          timer = setTimeout(() => {
            settle();
            reject(new Error(`timed out waiting for ${pattern}; output:\n${text}`));
          }, timeoutMs);
        }
        waiters.add(check);
        check();
        // `exited` also settles a wait that starts after the process is gone.
        void exited.then((code) => {
          check();
          if (settled) return;
          settle();
          reject(new Error(`${name} exited ${code} before ${pattern}; output:\n${text}`));
        });
      });
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await exited;
      }
    },
  };
}

/** Memory of another process as the kernel accounts it (Linux /proc), for bounds on what a gateway holds. */
import { readFileSync, writeFileSync } from "node:fs";

/** A process's resident set size now and its peak since start or {@link resetPeakResident}, in bytes. */
export interface ProcessMemory {
  /** `VmRSS`. */
  readonly residentBytes: number;
  /** `VmHWM`: the highest `VmRSS` reached. */
  readonly peakResidentBytes: number;
}

/** Reads `VmRSS` and `VmHWM` of `pid` from /proc/<pid>/status. */
export function processMemory(pid: number): ProcessMemory {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const bytes = (field: string) => {
    const match = status.match(new RegExp(`^${field}:\\s+(\\d+) kB$`, "m"));
    if (match === null) throw new Error(`/proc/${pid}/status has no ${field}`);
    return Number(match[1]) * 1024;
  };
  return { residentBytes: bytes("VmRSS"), peakResidentBytes: bytes("VmHWM") };
}

/** Sets the peak (`VmHWM`) of `pid` back to its current resident set size, so that later peaks are measured from now. */
export function resetPeakResident(pid: number): void {
  // "5" resets the peak resident set size (proc(5), clear_refs).
  writeFileSync(`/proc/${pid}/clear_refs`, "5");
}

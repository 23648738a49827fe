/**
 * Loaded into a benchmarked server with `node --import`: counts the bytes its
 * JavaScript heap has allocated since start (heap growth plus everything each
 * garbage collection freed) and, on SIGUSR2, writes that count to
 * `$BENCH_ALLOC_DIR/<pid>` as `<sequence> <bytes>`. A count of allocated bytes
 * does not depend on how much CPU the process got, unlike calls/s.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { GCProfiler, getHeapStatistics } from "node:v8";

const dir = process.env.BENCH_ALLOC_DIR;
if (dir !== undefined) {
  const startUsed = getHeapStatistics().used_heap_size;
  let freed = 0;
  let sequence = 0;
  let profiler = new GCProfiler();
  profiler.start();
  process.on("SIGUSR2", () => {
    for (const gc of profiler.stop()?.statistics ?? []) {
      freed += gc.beforeGC.heapStatistics.usedHeapSize - gc.afterGC.heapStatistics.usedHeapSize;
    }
    profiler = new GCProfiler();
    profiler.start();
    const allocated = getHeapStatistics().used_heap_size - startUsed + freed;
    writeFileSync(join(dir, String(process.pid)), `${++sequence} ${allocated}`);
  });
}

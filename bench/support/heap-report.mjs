// Loaded into the agent by bench/profile-memory.ts (GC=1, with --expose-gc): on SIGUSR2, two full
// GCs, then the heap in use and the resident set on stderr.
process.on("SIGUSR2", () => {
  globalThis.gc();
  globalThis.gc();
  const m = process.memoryUsage();
  process.stderr.write(
    `heap used ${(m.heapUsed / 1048576).toFixed(2)} MB (total ${(m.heapTotal / 1048576).toFixed(1)}), rss ${(m.rss / 1048576).toFixed(1)} MB\n`,
  );
});

/**
 * Watches key and config files for changes with chokidar, watching the folder that holds each
 * one and reacting to any event in it: Kubernetes Secret volumes replace their content by
 * swapping a `..data` symlink, which a watcher of the file itself never sees. Events are
 * debounced; the callback re-reads content and decides whether anything changed.
 */
import { stat } from "node:fs/promises";
import { dirname } from "node:path";
import { watch } from "chokidar";

export interface Watcher {
  close(): Promise<void>;
}

export async function watchForChanges(
  paths: readonly string[],
  onChange: () => void,
  debounceMs = 150,
): Promise<Watcher> {
  const folders = new Set<string>();
  for (const p of paths) {
    const isDir = await stat(p).then(
      (s) => s.isDirectory(),
      () => false,
    );
    folders.add(isDir ? p : dirname(p));
  }
  const watcher = watch([...folders], { ignoreInitial: true, depth: 2, followSymlinks: false, alwaysStat: false });
  let timer: NodeJS.Timeout | undefined;
  watcher.on("all", () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(onChange, debounceMs);
  });
  await new Promise<void>((resolve) =>
    watcher.once("ready", () => {
      resolve();
    }),
  );
  return {
    async close() {
      if (timer) clearTimeout(timer);
      await watcher.close();
    },
  };
}

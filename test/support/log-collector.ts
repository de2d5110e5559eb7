/** An in-process agent's log sink that parses its JSON lines, for tests that wait on a line. */
import type { LogLine } from "./agent-process.js";

/** Collects the agent's JSON log lines; `next` resolves at the first (or an earlier) line that matches. */
export function logCollector(): {
  sink: { write(text: string): void };
  lines: LogLine[];
  raw: () => string;
  next(match: (l: LogLine) => boolean): Promise<LogLine>;
} {
  const lines: LogLine[] = [];
  const waiters: { match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  let raw = "";
  return {
    lines,
    raw: () => raw,
    sink: {
      write(text) {
        raw += text;
        for (const part of text.split("\n").filter(Boolean)) {
          const line = JSON.parse(part) as LogLine;
          lines.push(line);
          for (const w of [...waiters]) if (w.match(line)) waiters.splice(waiters.indexOf(w), 1)[0]?.resolve(line);
        }
      },
    },
    next(match) {
      const found = lines.find(match);
      return found ? Promise.resolve(found) : new Promise((resolve) => waiters.push({ match, resolve }));
    },
  };
}

/**
 * The closing line CI reads (test/support/summary-reporter.ts): real vitest runs on tiny fixture
 * projects in a temp dir, so the counts follow what vitest really reports for a skip, a todo, a
 * failed hook, a file that does not load and an unhandled rejection; the line must match the
 * pattern .ci/run greps for.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TestModule } from "vitest/node";
import { summarize, summaryLine } from "../support/summary-reporter.js";

const execFileAsync = promisify(execFile);
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const VITEST = join(ROOT, "node_modules", ".bin", "vitest");
const REPORTER = join(ROOT, "test", "support", "summary-reporter.ts");
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-reporter-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs vitest with only the summary reporter on `files` (globals on: the fixtures import nothing). */
async function runVitest(name: string, files: Record<string, string>): Promise<string> {
  const root = join(dir, name);
  await rm(root, { recursive: true, force: true });
  await mkdir(root);
  for (const [file, text] of Object.entries(files)) await writeFile(join(root, file), text);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("VITEST")));
  try {
    const { stdout } = await execFileAsync(VITEST, ["run", "--root", root, "--globals", "--reporter", REPORTER], {
      env,
      cwd: root,
    });
    return stdout;
  } catch (error) {
    return (error as { stdout?: string }).stdout ?? "";
  }
}

/** The line .ci/run keeps: its own grep, run on the output. */
async function ciSummary(output: string): Promise<string> {
  const script = await readFile(join(ROOT, ".ci", "run"), "utf8");
  const pattern = /grep -E '([^']+)'/.exec(script)?.[1];
  expect(pattern, ".ci/run greps the summary line with grep -E '...'").toBeDefined();
  const grep = execFile("grep", ["-E", pattern ?? ""]);
  const lines = new Promise<string>((resolve) => {
    let text = "";
    grep.stdout?.on("data", (chunk: Buffer) => (text += chunk.toString("utf8")));
    grep.once("close", () => {
      resolve(text);
    });
  });
  grep.stdin?.end(output);
  return (await lines).trim().split("\n").at(-1) ?? "";
}

describe("the summary line", () => {
  it("counts skips and todos as skipped, a failed hook's tests, a file that does not load and an unhandled rejection as failed", async () => {
    const output = await runVitest("mixed", {
      "a.test.js": [
        'it("passes", () => {});',
        'it("passes too", () => {});',
        'it("fails", () => { throw new Error("no"); });',
        'it.skip("skipped", () => {});',
        'it.todo("todo");',
        'it("skips itself", (ctx) => { ctx.skip(); });',
      ].join("\n"),
      "b.test.js":
        'describe("hook", () => {\n  beforeAll(() => { throw new Error("hook"); });\n  it("one", () => {});\n  it("two", () => {});\n});\n',
      "c.test.js": 'throw new Error("does not load");\n',
      "d.test.js": 'afterAll(() => { throw new Error("after"); });\nit("passes", () => {});\n',
      "e.test.js": 'it("leaves a rejection behind", () => { void Promise.reject(new Error("unhandled")); });\n',
    });
    // passed: 2 (a) + 1 (d) + 1 (e); failed: 1 (a) + 2 (b) + 1 (c) + 1 (d's afterAll) + 1 (e's rejection).
    expect(await ciSummary(output)).toBe("4 passed, 6 failed, 3 skipped");
  });

  it("prints no skipped count when nothing was skipped", async () => {
    const output = await runVitest("clean", { "a.test.js": 'it("one", () => {});\nit("two", () => {});\n' });
    expect(await ciSummary(output)).toBe("2 passed, 0 failed");
    expect(output).not.toContain("skipped");
  });

  it("counts a test that never finished (pending) as failed", () => {
    const test = (state: string): unknown => ({
      result: () => ({ state }),
      parent: { type: "module", errors: () => [] },
    });
    const mod = { state: () => "failed", children: { allTests: () => [test("passed"), test("pending")] } };
    const summary = summarize([mod as unknown as TestModule], []);
    expect(summary).toEqual({ passed: 1, failed: 1, skipped: 0 });
    expect(summaryLine(summary)).toBe("1 passed, 1 failed");
  });
});

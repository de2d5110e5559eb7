import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isAgentError } from "../../src/core/errors.js";
import { MARKER_NAME, createRunDir, runFilePath, wipeRunDir, writeRunFile } from "../../src/fs/run-dir.js";
import { realFs } from "../../src/fs/secure-fs.js";

const META = { runId: "run-1", agentId: "agent-1", createdAt: "2026-11-22T10:00:00.000Z" };
let base: string;
beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), "trailing-slash-"));
});
afterEach(() => {
  rmSync(base, { recursive: true, force: true });
});

async function code(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (error) {
    if (isAgentError(error)) return error.code;
    throw error;
  }
  return undefined;
}

describe("a run directory that is a symlink is refused however the path is spelled", () => {
  it.each(["/", "/.", "//"])("wipe of link%s refuses and leaves the target's files", async (suffix) => {
    const real = join(base, "real");
    await createRunDir(realFs, real, META);
    await writeRunFile(realFs, real, "dockerConfig", "{}\n");
    const link = join(base, "link");
    symlinkSync(real, link);
    expect(await code(wipeRunDir(realFs, `${link}${suffix}`))).toBe("WIPE_NOT_AGENT_DIR");
    expect(existsSync(runFilePath(real, "dockerConfig"))).toBe(true);
    expect(existsSync(join(real, MARKER_NAME))).toBe(true);
  });

  it.each(["/", "/."])(
    "create of link%s to an empty directory outside refuses and writes nothing there",
    async (suffix) => {
      const outside = join(base, "outside");
      mkdirSync(outside);
      const link = join(base, "link");
      symlinkSync(outside, link);
      expect(await code(createRunDir(realFs, `${link}${suffix}`, META))).toBe("RUN_DIR_UNSAFE");
      expect(readdirSync(outside)).toEqual([]);
    },
  );
});

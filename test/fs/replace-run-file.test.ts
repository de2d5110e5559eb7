/**
 * A renewed cloud credential replaces the run's registry files in place (one rename each): only
 * a regular file of the agent's own is replaced; a symbolic link or a directory planted at the
 * path is still refused, as at the first write.
 */
import { mkdtemp, readFile, rm, symlink, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRunDir, runFilePath, writeRunFile } from "../../src/fs/run-dir.js";
import { realFs } from "../../src/fs/secure-fs.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-replace-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("writeRunFile with replace", () => {
  it("replaces the agent's own file, refuses without replace, and refuses a planted symbolic link", async () => {
    const runDir = join(dir, "run");
    await createRunDir(realFs, runDir, { runId: "r", agentId: "a", createdAt: new Date().toISOString() });
    const path = runFilePath(runDir, "dockerConfig");
    await writeRunFile(realFs, runDir, "dockerConfig", "first");
    await expect(writeRunFile(realFs, runDir, "dockerConfig", "second")).rejects.toMatchObject({
      code: "RUN_DIR_ENTRY_UNSAFE",
    });
    await writeRunFile(realFs, runDir, "dockerConfig", "second", { replace: true });
    expect(await readFile(path, "utf8")).toBe("second");

    const target = join(dir, "elsewhere");
    await writeFile(target, "untouched");
    await unlink(path);
    await symlink(target, path);
    await expect(writeRunFile(realFs, runDir, "dockerConfig", "third", { replace: true })).rejects.toMatchObject({
      code: "RUN_DIR_ENTRY_UNSAFE",
    });
    expect(await readFile(target, "utf8")).toBe("untouched");
  });
});

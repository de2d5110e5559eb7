/**
 * Creating a file exclusively (a new file only, never through a symbolic link, 0600) is one
 * function, openNewFile (src/fs/secure-fs.ts), with one test of what "already there" means,
 * isAlreadyThere. The key file (createKeyFile), one-shot outputs (writeOutput), the run
 * directory's atomic writes, the configuration workspace and the control plane's data file
 * use it; the table runs the callers that take a caller-chosen path against it.
 */
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { writeOutput } from "../../src/cli/io.js";
import { AgentError, errnoCode } from "../../src/core/errors.js";
import { createKeyFile } from "../../src/fs/key-file.js";
import { isAlreadyThere, openNewFile, realFs } from "../../src/fs/secure-fs.js";

let base: string;
beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), "open-new-file-"));
});
afterEach(() => {
  rmSync(base, { recursive: true, force: true });
});

type Outcome = "created" | "already there" | "ENOENT";

/** What to put at `path` first, and what creating a file there must do. */
const CASES: [string, (path: string) => void, Outcome][] = [
  ["nothing", () => undefined, "created"],
  ["a regular file", (p) => writeFileSync(p, "keep"), "already there"],
  ["an empty regular file", (p) => writeFileSync(p, ""), "already there"],
  ["a directory", (p) => mkdirSync(p), "already there"],
  [
    "a symbolic link to a file",
    (p) => {
      writeFileSync(join(base, "target"), "keep");
      symlinkSync(join(base, "target"), p);
    },
    "already there",
  ],
  ["a dangling symbolic link", (p) => symlinkSync(join(base, "nowhere"), p), "already there"],
  ["a missing parent directory", () => undefined, "ENOENT"],
];

function pathFor(what: string): string {
  return what === "a missing parent directory" ? join(base, "no", "such", "file") : join(base, "file");
}

async function outcome(create: (path: string) => Promise<unknown>, path: string): Promise<unknown> {
  try {
    await create(path);
    return "created";
  } catch (error) {
    return error;
  }
}

function expectNothingWritten(): void {
  expect(existsSync(join(base, "nowhere"))).toBe(false);
  if (existsSync(join(base, "target"))) expect(readFileSync(join(base, "target"), "utf8")).toBe("keep");
  if (existsSync(join(base, "file")) && lstatSync(join(base, "file")).isFile())
    expect(readFileSync(join(base, "file"), "utf8")).not.toBe("new");
}

describe("openNewFile", () => {
  it.each(CASES)("at %s: %s", async (what, prepare, expected) => {
    const path = pathFor(what);
    prepare(path);
    const result = await outcome(async (p) => {
      const handle = await openNewFile(realFs, p);
      await handle.writeFile("new");
      await handle.close();
    }, path);
    if (expected === "created") {
      expect(result).toBe("created");
      expect(readFileSync(path, "utf8")).toBe("new");
      expect(lstatSync(path).mode & 0o777).toBe(0o600);
      return;
    }
    expect(isAlreadyThere(result)).toBe(expected === "already there");
    if (expected === "ENOENT") expect(errnoCode(result)).toBe("ENOENT");
    expectNothingWritten();
  });

  it("takes another mode when given one", async () => {
    // Owner bits only: a umask does not touch them.
    const handle = await openNewFile(realFs, join(base, "file"), 0o700);
    await handle.close();
    expect(lstatSync(join(base, "file")).mode & 0o777).toBe(0o700);
  });
});

describe("every exclusive-create caller applies openNewFile and isAlreadyThere", () => {
  const callers: [string, (path: string) => Promise<unknown>, string, string][] = [
    ["createKeyFile", (p) => createKeyFile(realFs, p, "new"), "KEY_FILE_EXISTS", "INVALID_ARGUMENT"],
    ["writeOutput", (p) => writeOutput(p, "new"), "OUTPUT_EXISTS", "OUTPUT_UNWRITABLE"],
  ];
  const table = callers.flatMap(([name, create, existsCode, enoentCode]) =>
    CASES.map(([what, prepare, expected]) => [name, what, prepare, expected, create, existsCode, enoentCode] as const),
  );

  it.each(table)("%s at %s", async (_name, what, prepare, expected, create, existsCode, enoentCode) => {
    const path = pathFor(what);
    prepare(path);
    const result = await outcome(create, path);
    if (expected === "created") {
      expect(result).toBe("created");
      expect(readFileSync(path, "utf8")).toBe("new");
      expect(lstatSync(path).mode & 0o777).toBe(0o600);
      return;
    }
    expect(result).toBeInstanceOf(AgentError);
    expect((result as AgentError).code).toBe(expected === "already there" ? existsCode : enoentCode);
    expectNothingWritten();
  });
});

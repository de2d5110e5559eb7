/**
 * The layer rules (.dependency-cruiser.mjs, `npm run layers`) bite: run exactly the npm script's
 * dependency-cruiser command, with the project's config, on trees in a temp folder that hold
 * deliberately forbidden imports, and check each is reported under its rule, with nothing else
 * reported and a non-zero exit. The real tree is never touched.
 */
import { spawnSync } from "node:child_process";
import {
  copyFileSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const DEPCRUISE = join(ROOT, "node_modules/dependency-cruiser/bin/dependency-cruiser.mjs");

interface Violation {
  rule: string;
  from: string;
  to: string;
}

/** The `layers` npm script's arguments, so the test runs what CI runs. */
function layersScriptArgs(): string[] {
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> };
  const [bin, ...args] = (pkg.scripts["layers"] ?? "").split(/\s+/);
  expect(bin).toBe("depcruise");
  return args;
}

let work: string | undefined;
afterEach(() => {
  if (work) rmSync(work, { recursive: true, force: true });
  work = undefined;
});

/** A project folder with the real config, tsconfig and node_modules, and the given files. */
function project(files: Record<string, string>, copySrc = false): string {
  work = mkdtempSync(join(tmpdir(), "layers-"));
  copyFileSync(join(ROOT, ".dependency-cruiser.mjs"), join(work, ".dependency-cruiser.mjs"));
  copyFileSync(join(ROOT, "tsconfig.json"), join(work, "tsconfig.json"));
  symlinkSync(join(ROOT, "node_modules"), join(work, "node_modules"));
  if (copySrc) cpSync(join(ROOT, "src"), join(work, "src"), { recursive: true });
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(work, path)), { recursive: true });
    writeFileSync(join(work, path), text);
  }
  return work;
}

/**
 * Runs the script as CI does (its exit status and report) and once more for the violations as
 * JSON (the JSON reporter always exits 0). A package is named by its path from node_modules/
 * (the symlinked node_modules resolves to the real tree's).
 */
function runLayers(cwd: string): { status: number | null; report: string; violations: Violation[] } {
  const ci = spawnSync(process.execPath, [DEPCRUISE, ...layersScriptArgs()], { cwd, encoding: "utf8" });
  const json = spawnSync(process.execPath, [DEPCRUISE, ...layersScriptArgs(), "--output-type", "json"], {
    cwd,
    encoding: "utf8",
  });
  expect(json.stderr).toBe("");
  const result = JSON.parse(json.stdout) as {
    summary: { violations: { rule: { name: string }; from: string; to: string }[] };
  };
  const violations = result.summary.violations.map((v) => ({
    rule: v.rule.name,
    from: v.from,
    to: v.to.replace(/^.*\/node_modules\//, "node_modules/"),
  }));
  return { status: ci.status, report: ci.stdout + ci.stderr, violations };
}

const byKey = (a: Violation, b: Violation): number =>
  `${a.rule} ${a.from} ${a.to}`.localeCompare(`${b.rule} ${b.from} ${b.to}`);

describe("npm run layers", () => {
  it("reports each kind of forbidden import, under its rule, and accepts every allowed one", () => {
    const cwd = project({
      // Allowed: same folder, and the folders the table lists.
      "src/core/errors.ts": `export const E = 1;\n`,
      "src/core/pure.ts": `import { E } from "./errors.js";\nimport { posix } from "node:path";\nexport const P = [E, posix.sep];\n`,
      "src/crypto/seal.ts": `import { E } from "../core/errors.js";\nexport const S = E;\n`,
      "src/fs/files.ts": `import { readFile } from "node:fs/promises";\nexport const F = readFile;\n`,
      "src/keys/ring.ts": `import { S } from "../crypto/seal.js";\nimport { F } from "../fs/files.js";\nexport const K = [S, F];\n`,
      "src/cli/main.ts": `import { K } from "../keys/ring.js";\nimport type { D } from "../daemon/loop.js";\nexport const M: D = K.length;\n`,
      "test/probe.test.ts": `import { M } from "../src/cli/main.js";\nexport const T = M;\n`,
      // Forbidden, one per rule.
      "src/core/__probe.ts": `import { readFileSync } from "node:fs";\nimport { request } from "undici";\nexport const X = [readFileSync, request];\n`,
      "src/daemon/loop.ts": `import { M } from "../app/root.js";\nexport type D = number;\nexport const L = M;\n`,
      "src/app/root.ts": `export const M = 1;\n`,
      "src/registry/check.ts": `import type { K } from "../keys/ring.js";\nexport type R = typeof K;\n`,
      "src/http/a.ts": `import { B } from "./b.js";\nexport const A = () => B;\n`,
      "src/http/b.ts": `import { A } from "./a.js";\nexport const B = () => A;\n`,
      "src/ops/health.ts": `import { T } from "../../test/probe.test.js";\nexport const H = T;\n`,
      "src/misc/odd.ts": `import { E } from "../core/errors.js";\nexport const O = E;\n`,
    });
    const { status, report, violations } = runLayers(cwd);
    expect(violations.sort(byKey)).toEqual(
      [
        { rule: "core-is-pure", from: "src/core/__probe.ts", to: "fs" },
        { rule: "core-is-pure", from: "src/core/__probe.ts", to: "node_modules/undici/index.js" },
        { rule: "layer-daemon", from: "src/daemon/loop.ts", to: "src/app/root.ts" },
        { rule: "layer-registry", from: "src/registry/check.ts", to: "src/keys/ring.ts" },
        { rule: "no-circular", from: "src/http/a.ts", to: "src/http/b.ts" },
        { rule: "src-not-to-tests", from: "src/ops/health.ts", to: "test/probe.test.ts" },
        { rule: "layer-unknown-folder", from: "src/misc/odd.ts", to: "src/core/errors.ts" },
      ].sort(byKey),
    );
    expect(status).not.toBe(0);
    expect(report).toContain("error layer-daemon: src/daemon/loop.ts → src/app/root.ts");
  });

  it("reports an I/O import planted in a copy of the real src/core", () => {
    const cwd = project(
      { "src/core/__probe.ts": `import { writeFileSync } from "node:fs";\nexport const W = writeFileSync;\n` },
      true,
    );
    const { status, report, violations } = runLayers(cwd);
    expect(violations).toContainEqual({ rule: "core-is-pure", from: "src/core/__probe.ts", to: "fs" });
    expect(status).not.toBe(0);
    expect(report).toContain("error core-is-pure: src/core/__probe.ts → fs");
  });
});

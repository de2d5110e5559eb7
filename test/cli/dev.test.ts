/**
 * The README's main command runs end to end: `oci-cred-agent dev` (what `npm start` runs after
 * installing and building) with no tofu on PATH, so the labelled stand-in shows resolution.
 * --offline keeps the control plane from probing the sample registries (no network here).
 */
import { execFile } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_BIN } from "../support/agent-process.js";

const execFileAsync = promisify(execFile);
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-dev-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("oci-cred-agent dev", () => {
  it("runs the whole flow, shows which integration wins per registry and what OpenTofu would use, and leaves nothing behind", async () => {
    const workDir = join(dir, "work");
    // PATH without any tofu: only the directory of the node running these tests, and the basics.
    const path = [dirname(process.execPath), "/usr/bin", "/bin"].join(":");
    const { stdout, stderr } = await execFileAsync(AGENT_BIN, ["dev", "--offline", "--work-dir", workDir], {
      env: { PATH: path, HOME: dir },
      timeout: 60_000,
    });
    expect(stdout).toMatch(/Summary of run run-\S+: SUCCEEDED/);
    expect(stdout).toContain("No tofu on PATH");
    expect(stdout).toMatch(/ghcr\.io\s+<- int-\S+ \(GHCR \(platform team\)\)/);
    expect(stdout).toMatch(/registry-1\.docker\.io\s+<- int-\S+ \(Docker Hub\)/);
    expect(stdout).toMatch(/GHCR \(old token\)\): DUPLICATE_REGISTRY/);
    expect(stdout).toMatch(/GitLab \(export off\)\): EXPORT_OFF/);
    expect(stdout).toMatch(
      /oci:\/\/ghcr\.io\/acme\/modules\/network\?tag=1\.4\.0 -> credential of user acme-platform \(key "ghcr\.io" in \S+\/docker\/config\.json\)/,
    );
    expect(stdout).toMatch(/oci:\/\/registry\.gitlab\.com\/\S+ -> no credential/);
    expect(stdout).toMatch(/oci:\/\/docker\.io\/\S+ -> no credential.*registry-1\.docker\.io/);
    expect(stdout).toContain(`Files left under ${workDir}: 0`);
    expect(stdout + stderr).not.toMatch(/sample-[0-9a-f]{24}/);
    expect(await readdir(join(workDir, "credentials"))).toEqual([]);
    expect(await readdir(join(workDir, "workspaces"))).toEqual([]);
  });
});

/**
 * The README's main command runs end to end: `oci-cred-agent dev` (what `npm start` runs after
 * installing and building) with no tofu on PATH, so the labelled stand-in shows resolution.
 * --offline keeps the control plane from probing the sample registries (no network here).
 * The cloud_auth aws sample is minted by the agent's own code from dev's web identity, against
 * dev's labelled AWS stand-in on loopback (src/app/dev-cloud-standin.ts).
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
  it("runs the whole flow, shows which integration wins per registry, the cloud_auth one minted and used, what OpenTofu would use, and leaves nothing behind", async () => {
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
    // The cloud_auth aws integration: minted from the web identity (STS, then ECR signed with the
    // key STS issued), written for its registry, and what OpenTofu's lookup finds (user AWS).
    const ecrHost = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
    const role = "arn:aws:iam::123456789012:role/oci-cred-agent-dev";
    expect(stdout).toMatch(
      /ECR \(cloud_auth aws\)\s+https:\/\/123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com\s+export on/,
    );
    expect(stdout).toMatch(/123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com\s+<- int-\S+ \(ECR \(cloud_auth aws\)\)/);
    expect(stdout).toContain(
      `${ecrHost}: STS assumed ${role} for the web identity; ECR issued 1 token(s) to requests signed with the key STS issued`,
    );
    expect(stdout).toMatch(
      /oci:\/\/123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com\/acme\/modules\/iam\?tag=1\.1\.0 -> credential of user AWS \(key "123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com" in \S+\/docker\/config\.json\)/,
    );
    expect(stdout).not.toMatch(/CLOUD_AUTH_FAILED/);
    // The agent's log (pretty: a message, then the line's fields as JSON) says it minted, for whom and until when.
    const minted = stderr
      .split("\n")
      .filter((l) => l.includes('"event":"cloud_credentials_minted"'))
      .map((l) => JSON.parse(l.slice(l.indexOf("{"))) as Record<string, unknown>);
    expect(minted.map(({ provider, registry, identity }) => ({ provider, registry, identity }))).toEqual([
      { provider: "aws", registry: ecrHost, identity: role },
    ]);
    // ECR's 12 hours, from the stand-in's expiresAt.
    expect(Date.parse(String(minted[0]?.["expires_at"])) - Date.now()).toBeGreaterThan(11 * 3_600_000);
    expect(stdout + stderr).not.toMatch(/dev-ecr-|dev-web-identity\./);
    expect(stdout).toContain(`Files left under ${workDir}: 0`);
    expect(stdout + stderr).not.toMatch(/sample-[0-9a-f]{24}/);
    expect(await readdir(join(workDir, "credentials"))).toEqual([]);
    expect(await readdir(join(workDir, "workspaces"))).toEqual([]);
  });
});

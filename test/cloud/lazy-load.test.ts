/**
 * Idle memory and start-up do not grow with the clouds' SDKs: `run` composes the agent (the
 * cloud minter included) without loading any `@aws-sdk/*`, `@azure/*` or google-auth-library
 * module (nor its gaxios and gcp-metadata); the first aws entry loads the AWS SDK only, the first
 * azure entry @azure/identity, the first gcp entry google-auth-library.
 * A child Node process records every module it resolves (node:module registerHooks), so the
 * answer is Node's own, not a reading of import statements.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("../..", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "lazy-load-"));
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const RECORDER = `
import { registerHooks } from "node:module";
globalThis.resolvedModules = new Set();
registerHooks({
  resolve(specifier, context, next) {
    const result = next(specifier, context);
    globalThis.resolvedModules.add(result.url);
    return result;
  },
});
`;

const MAIN = `
const src = ${JSON.stringify(join(root, "src"))};
const count = (dirs) => [...globalThis.resolvedModules].filter((u) => dirs.some((d) => u.includes(\`/node_modules/\${d}/\`))).length;
const aws = () => count(["@aws-sdk"]);
const azure = () => count(["@azure"]);
const google = () => count(["google-auth-library", "gaxios", "gcp-metadata"]);
await import(src + "/cli/commands/run.ts");
await import(src + "/cli/commands/sidecar.ts");
const { createCloudMinter } = await import(src + "/cloud/cloud-minter.ts");
const minter = createCloudMinter();
const atStart = aws();
const azureAtStart = azure();
const googleAtStart = google();
// No identity here (IMDS off): the mint is refused, but only after the SDK was loaded.
process.env.AWS_EC2_METADATA_DISABLED = "true";
for (const k of ["AWS_ROLE_ARN", "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI"]) delete process.env[k];
const code = await minter
  .mint({ provider: "aws", region: "eu-west-1", account: undefined }, "123456789012.dkr.ecr.eu-west-1.amazonaws.com", new AbortController().signal)
  .then(() => "minted", (e) => e.code);
const afterAwsEntry = aws();
const azureBefore = azure();
const googleAfterAwsEntry = google();
// Workload identity without a client or tenant id: refused, but only after @azure/identity was loaded.
process.env.AZURE_FEDERATED_TOKEN_FILE = "/nonexistent/azure-token";
const azureCode = await minter
  .mint({ provider: "azure", tenantId: undefined, clientId: undefined }, "r.azurecr.io", new AbortController().signal)
  .then(() => "minted", (e) => e.code);
const googleAfterAzureEntry = google();
// No Google identity either (no credential file, detection off): refused after google-auth-library was loaded.
delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
process.env.METADATA_SERVER_DETECTION = "none";
const gcpCode = await minter
  .mint({ provider: "gcp" }, "europe-docker.pkg.dev", new AbortController().signal)
  .then(() => "minted", (e) => e.code);
console.log(JSON.stringify({ atStart, afterAwsEntry, code, azureAtStart, azureBefore, afterAzureEntry: azure(), azureCode, googleAtStart, googleAfterAwsEntry, googleAfterAzureEntry, afterGcpEntry: google(), gcpCode, total: globalThis.resolvedModules.size }));
`;

describe("the clouds' SDKs are loaded only when an entry needs them", () => {
  it("composing run and sidecar resolves no @aws-sdk, @azure or google-auth-library module; the first entry of each cloud loads that cloud's SDK only", () => {
    writeFileSync(join(dir, "recorder.mjs"), RECORDER);
    writeFileSync(join(dir, "main.mts"), MAIN);
    const child = spawnSync(
      process.execPath,
      [
        "--import",
        join(root, "node_modules/tsx/dist/esm/index.mjs"),
        "--import",
        join(dir, "recorder.mjs"),
        join(dir, "main.mts"),
      ],
      { cwd: root, encoding: "utf8", timeout: 60_000, env: { PATH: process.env["PATH"] ?? "", HOME: dir } },
    );
    expect(child.stderr).toBe("");
    const result = JSON.parse(child.stdout.trim().split("\n").at(-1) ?? "{}") as Record<string, unknown>;
    expect(result["total"]).toBeGreaterThan(100);
    expect(result["atStart"]).toBe(0);
    expect(result["code"]).toBe("CLOUD_AUTH_FAILED");
    expect(result["afterAwsEntry"]).toBeGreaterThan(0);
    expect(result["azureAtStart"]).toBe(0);
    // The aws entry loaded no @azure module either.
    expect(result["azureBefore"]).toBe(0);
    expect(result["azureCode"]).toBe("CLOUD_AUTH_FAILED");
    expect(result["afterAzureEntry"]).toBeGreaterThan(0);
    expect(result["googleAtStart"]).toBe(0);
    expect(result["googleAfterAwsEntry"]).toBe(0);
    expect(result["googleAfterAzureEntry"]).toBe(0);
    expect(result["gcpCode"]).toBe("CLOUD_AUTH_FAILED");
    expect(result["afterGcpEntry"]).toBeGreaterThan(0);
  });
});

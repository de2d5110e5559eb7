/**
 * cloud_auth with gcp, end to end in the agent's own code: google-auth-library finds the pool's
 * Google identity (the metadata server, or an external-account file for workload identity
 * federation), the agent asks for a cloud-platform access token, and RunCredentials writes it as
 * an ordinary `auth` entry (user `oauth2accesstoken`) that a real registry accepts, for skopeo and
 * for OpenTofu's lookup (src/core/opentofu-resolver.ts).
 *
 * Google Cloud cannot run here: the metadata server, STS and IAM Credentials are local stand-ins
 * (test/support/gcp-standins.ts) that speak the documented wire formats, reached through
 * GCE_METADATA_HOST and the credential file's token_url and service_account_impersonation_url.
 * The registry is real: Debian's docker-registry with htpasswd, whose user `oauth2accesstoken`
 * gets each token the stand-ins issue (the old one stops working). Tokens expire on the test's
 * clock, which the token cache reads: no sleeps.
 */
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createCloudMinter } from "../../src/cloud/cloud-minter.js";
import type { CloudMinter } from "../../src/core/cloud-auth.js";
import type { AgentError } from "../../src/core/errors.js";
import type { AgentPrivateKey } from "../../src/crypto/agent-key.js";
import type { RunCredentials } from "../../src/credentials/run-credentials.js";
import {
  cloudAuthFailure,
  expectNothingWritten,
  newAgentKey,
  openCloudRun,
  expectPreflightOk,
  pullChecks,
  startModuleRegistry,
  writeRun,
} from "../support/cloud-test-kit.js";
import { startGcpStandIns, type GcpStandIns } from "../support/gcp-standins.js";
import { leakForms } from "../support/leak-forms.js";
import type { LocalRegistry } from "../support/registry-fixture.js";
import type { RegistryPair } from "../support/registry-pair.js";

const SCOPE = "https://www.googleapis.com/auth/cloud-platform";
const USER = "oauth2accesstoken";
const LIFETIME_S = 3599;
const AUDIENCE =
  "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/oca-pool/providers/k8s";
const ACCOUNT = "oca-pull@example-project.iam.gserviceaccount.com";
const SUBJECT_TOKEN = "eyJhbGciOiJSUzI1NiJ9.projected-service-account-token.signature";

let work: string;
let pair: RegistryPair;
let registry: LocalRegistry;
let gcp: GcpStandIns;
let key: AgentPrivateKey;
let nowMs = Date.now();
let expiresIn = (): number => LIFETIME_S;
const issued: string[] = [];
let credentialFile: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "oca-gcp-gar-"));
  pair = await startModuleRegistry();
  registry = pair.registry;
  gcp = await startGcpStandIns({
    expiresInSeconds: () => expiresIn(),
    onAccessToken: async (token) => {
      issued.push(token);
      await registry.setPassword(USER, token);
    },
  });
  const subjectFile = join(work, "subject-token");
  await writeFile(subjectFile, SUBJECT_TOKEN, { mode: 0o600 });
  credentialFile = join(work, "external-account.json");
  // What `gcloud iam workload-identity-pools create-cred-config` writes, pointed at the stand-ins.
  await writeFile(
    credentialFile,
    JSON.stringify({
      type: "external_account",
      audience: AUDIENCE,
      subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
      token_url: `${gcp.url}/v1/token`,
      service_account_impersonation_url: `${gcp.url}/v1/projects/-/serviceAccounts/${ACCOUNT}:generateAccessToken`,
      credential_source: { file: subjectFile, format: { type: "text" } },
    }),
    { mode: 0o600 },
  );
  delete process.env["GOOGLE_APPLICATION_CREDENTIALS"];
  delete process.env["GOOGLE_SDK_NODE_LOGGING"];
  process.env["GCE_METADATA_HOST"] = gcp.host;
  key = await newAgentKey();
}, 120_000);

afterEach(() => {
  delete process.env["GOOGLE_APPLICATION_CREDENTIALS"];
  delete process.env["GOOGLE_SDK_NODE_LOGGING"];
  gcp.denyMetadata = undefined;
  gcp.denyImpersonation = false;
  gcp.echo = undefined;
});

afterAll(async () => {
  await gcp.close();
  await pair.stop();
  await rm(work, { recursive: true, force: true });
});

function openRun(runId: string): Promise<RunCredentials> {
  return openCloudRun(key, "agent-gcp", runId, { id: "int-gar", url: registry.url, cloud_auth: { provider: "gcp" } });
}

/** The registry is a local stand-in, not *.pkg.dev: the operator names it. */
function minterFor(): CloudMinter {
  return createCloudMinter({ now: () => nowMs, allowedHosts: [registry.host] });
}

/** skopeo and OpenTofu's lookup, reading exactly the run's files. */
const { expectWrittenAndPulled, skopeoInspect, tofuResolves } = pullChecks(
  () => registry.host,
  () => registry.certDir,
  () => work,
);

/** What the process wrote to stdout/stderr (and warnings it emitted) while `action` ran. */
async function captureOutput<T>(action: () => Promise<T>): Promise<{ result: T; output: string }> {
  const written: string[] = [];
  const out = process.stdout.write.bind(process.stdout);
  const err = process.stderr.write.bind(process.stderr);
  const record = (chunk: unknown): boolean => {
    written.push(String(chunk));
    return true;
  };
  const onWarning = (w: Error): void => {
    written.push(`${w.name}: ${w.message}`);
  };
  process.stdout.write = record;
  process.stderr.write = record;
  process.on("warning", onWarning);
  try {
    return { result: await action(), output: written.join("") };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
    process.off("warning", onWarning);
  }
}

function expectNoToken(text: string): void {
  for (const token of [...issued, gcp.federatedToken ?? "unused", SUBJECT_TOKEN])
    for (const form of leakForms(token, USER)) expect(text.includes(form), "a token leaked").toBe(false);
}

async function refusal(minter: CloudMinter, runId: string): Promise<AgentError> {
  const credentials = await openRun(runId);
  const error = await cloudAuthFailure(credentials.mintCloud(minter, new AbortController().signal));
  await expectNothingWritten(credentials, join(work, runId));
  return error;
}

describe("cloud_auth gcp through the metadata server (GKE workload identity, GCE)", () => {
  // First in the file: google-auth-library keeps its detection result for the whole process.
  it("no metadata server and no credential file: CLOUD_AUTH_FAILED saying none was found; the failed detection is not kept", async () => {
    const closed = createServer();
    closed.listen(0, "127.0.0.1");
    await once(closed, "listening");
    const { port } = closed.address() as AddressInfo;
    closed.close();
    await once(closed, "close");
    process.env["GCE_METADATA_HOST"] = `127.0.0.1:${port}`;
    try {
      const error = await refusal(minterFor(), "run-gcp-0");
      expect(error.details).toMatchObject({
        provider: "gcp",
        identity: "none found (no GOOGLE_APPLICATION_CREDENTIALS, and no metadata server answered)",
      });
      expect(error.message).toContain("give the agent a Google identity");
    } finally {
      process.env["GCE_METADATA_HOST"] = gcp.host;
    }
  });

  it("mints a cloud-platform token with Metadata-Flavor: Google, passes pre-flight, is read by skopeo and OpenTofu's lookup; renewed before the next phase once it nears expiry; no token in the output", async () => {
    const minter = minterFor();
    const credentials = await openRun("run-gcp-1");
    const signal = new AbortController().signal;
    const before = gcp.requests.length;

    const { result: minted, output } = await captureOutput(() => credentials.mintCloud(minter, signal));
    expect(minted).toHaveLength(1);
    expect(minted[0]).toMatchObject({
      host: registry.host,
      integration_id: "int-gar",
      provider: "gcp",
      identity: "the metadata server's default service account",
    });
    // About an hour: the expiry Google gave, not a guess.
    const expiresAt = Date.parse(minted[0]?.expires_at ?? "");
    expect(Math.abs(expiresAt - (Date.now() + LIFETIME_S * 1000))).toBeLessThan(60_000);

    // What the agent sent: the detection request, then the default service account's token for
    // the cloud-platform scope, each with Metadata-Flavor: Google.
    const sent = gcp.requests.slice(before);
    expect(sent.map((r) => r.api)).toEqual(["metadata-ping", "metadata-token"]);
    for (const r of sent) expect(r.headers["metadata-flavor"]).toBe("Google");
    expect(sent[1]?.method).toBe("GET");
    expect(sent[1]?.url.searchParams.get("scopes")).toBe(SCOPE);

    await expectPreflightOk(credentials, registry.dispatcher(), registry.host, signal);

    const written = await writeRun(credentials, join(work, "run-gcp-1"));
    try {
      const first = issued.at(-1);
      await expectWrittenAndPulled(written, USER, first);

      // Before the next phase, far from expiry: the cached token, no request to the metadata server.
      const asked = gcp.requests.length;
      expect(await credentials.refresh(minter, signal)).toEqual([]);
      expect(gcp.requests.length).toBe(asked);

      // The phase outlived the token: a new one, the files replaced, the old one refused.
      nowMs += LIFETIME_S * 1000;
      const { result: renewed, output: renewOutput } = await captureOutput(() => credentials.refresh(minter, signal));
      expect(renewed.map((m) => m.integration_id)).toEqual(["int-gar"]);
      const second = issued.at(-1);
      expect(second).not.toBe(first);
      expect(gcp.requests.slice(asked).map((r) => r.api)).toEqual(["metadata-token"]);
      expect(await registry.probe(USER, first ?? "")).toBe(401);
      expect(tofuResolves(written.env)).toEqual({ username: USER, password: second });
      expect((await skopeoInspect(written.env)).ok).toBe(true);
      expectNoToken(output + renewOutput);
    } finally {
      expect((await credentials.wipe()).ok).toBe(true);
    }
  });

  it("a registry that is not Google's nor in cloud_auth_host gets no token: refused before the metadata server is asked, so pre-flight and the files never send it", async () => {
    const asked = gcp.requests.length;
    const error = await refusal(createCloudMinter({ now: () => nowMs }), "run-gcp-untrusted");
    expect(error.details).toMatchObject({ provider: "gcp", registry: registry.host });
    expect(error.message).toContain("the agent sends gcp credentials only to *.pkg.dev, gcr.io, *.gcr.io");
    expect(error.message).toContain(`--cloud-auth-host ${registry.host}`);
    expect(gcp.requests).toHaveLength(asked);
  });

  it.each([
    ["metadata-not-json", "google-auth-library failed"],
    ["metadata-500", "HTTP 500;"],
  ] as const)(
    "a metadata answer that carries a token where it should not (%s) reaches the run's error without it",
    async (echo, shown) => {
      gcp.echo = echo;
      const error = await refusal(minterFor(), `run-gcp-${echo}`);
      expect(error.message).toContain(shown);
      expect(gcp.echoedTokens.length).toBeGreaterThan(0);
      const text = JSON.stringify({ m: error.message, d: error.details });
      for (const token of gcp.echoedTokens) for (const form of leakForms(token, USER)) expect(text).not.toContain(form);
      expect(text).not.toContain("ya29.");
    },
  );

  it("an expires_in far beyond Google's hour is not believed: the token is renewed after an hour", async () => {
    expiresIn = () => 1_000_000_000;
    try {
      const minter = minterFor();
      const signal = new AbortController().signal;
      const first = await minter.mint({ provider: "gcp" }, registry.host, signal);
      expect(first.expiresAtMs).toBe(nowMs + 3_600_000);
      const asked = gcp.requests.length;
      nowMs += 3_600_000;
      const second = await minter.mint({ provider: "gcp" }, registry.host, signal);
      expect(second.password).not.toBe(first.password);
      expect(gcp.requests.slice(asked).map((r) => r.api)).toEqual(["metadata-token"]);
    } finally {
      expiresIn = () => LIFETIME_S;
    }
  });

  it("a service account the metadata server does not have (404) fails with CLOUD_AUTH_FAILED naming gcp and the identity, before anything is written", async () => {
    gcp.denyMetadata = 404;
    const error = await refusal(minterFor(), "run-gcp-2");
    expect(error.details).toEqual({
      provider: "gcp",
      identity: "the metadata server's default service account",
      registry: registry.host,
      permission: null,
    });
    expect(error.message).toContain(
      // The status only: the metadata server's text is not shown (it may quote a token).
      `gcp gave no registry credential for ${registry.host} to identity the metadata server's default service account: HTTP 404;`,
    );
    expect(error.message).toContain("iam.gke.io/gcp-service-account");
    expect(gcp.requests.at(-1)?.api).toBe("metadata-token");
  });

  it("an instance without the cloud-platform scope (403) is told to add it", async () => {
    gcp.denyMetadata = 403;
    const error = await refusal(minterFor(), "run-gcp-3");
    expect(error.message).toContain(": HTTP 403;");
    expect(error.message).toContain(`give the instance the cloud-platform access scope (${SCOPE})`);
  });

  it("the library's debug log (GOOGLE_SDK_NODE_LOGGING) prints tokens: the minter refuses before asking", async () => {
    process.env["GOOGLE_SDK_NODE_LOGGING"] = "*";
    const asked = gcp.requests.length;
    const error = await refusal(minterFor(), "run-gcp-4");
    expect(error.message).toContain("unset GOOGLE_SDK_NODE_LOGGING");
    expect(gcp.requests.length).toBe(asked);
  });
});

describe("cloud_auth gcp through an external-account file (workload identity federation)", () => {
  it("exchanges the subject token at STS, impersonates the service account, and the token pulls for skopeo and OpenTofu's lookup", async () => {
    process.env["GOOGLE_APPLICATION_CREDENTIALS"] = credentialFile;
    const minter = minterFor();
    const credentials = await openRun("run-gcp-5");
    const signal = new AbortController().signal;
    const before = gcp.requests.length;
    const { result: minted, output } = await captureOutput(() => credentials.mintCloud(minter, signal));
    const identity = `service account ${ACCOUNT} through workload identity federation ${AUDIENCE} (${credentialFile}, GOOGLE_APPLICATION_CREDENTIALS)`;
    expect(minted).toMatchObject([{ provider: "gcp", identity }]);

    const sent = gcp.requests.slice(before);
    expect(sent.map((r) => r.api)).toEqual(["sts", "iam"]);
    const form = new URLSearchParams(sent[0]?.body);
    expect(form.get("grant_type")).toBe("urn:ietf:params:oauth:grant-type:token-exchange");
    expect(form.get("audience")).toBe(AUDIENCE);
    expect(form.get("subject_token")).toBe(SUBJECT_TOKEN);
    expect(form.get("subject_token_type")).toBe("urn:ietf:params:oauth:token-type:jwt");
    expect(form.get("scope")).toBe(SCOPE);
    expect(sent[1]?.headers["authorization"]).toBe(`Bearer ${gcp.federatedToken ?? "?"}`);
    expect(sent[1]?.url.pathname).toBe(`/v1/projects/-/serviceAccounts/${ACCOUNT}:generateAccessToken`);
    expect(JSON.parse(sent[1]?.body ?? "null")).toMatchObject({ scope: [SCOPE] });

    const written = await writeRun(credentials, join(work, "run-gcp-5"));
    try {
      expect(tofuResolves(written.env)).toEqual({ username: USER, password: issued.at(-1) });
      expect((await skopeoInspect(written.env)).ok).toBe(true);
      expectNoToken(output);
    } finally {
      expect((await credentials.wipe()).ok).toBe(true);
    }
  });

  it("a service account the federated principal may not impersonate fails with CLOUD_AUTH_FAILED naming gcp, the account and iam.serviceAccounts.getAccessToken", async () => {
    process.env["GOOGLE_APPLICATION_CREDENTIALS"] = credentialFile;
    gcp.denyImpersonation = true;
    const error = await refusal(minterFor(), "run-gcp-6");
    expect(error.details).toMatchObject({
      provider: "gcp",
      registry: registry.host,
      permission: "iam.serviceAccounts.getAccessToken",
    });
    expect((error.details as { identity: string }).identity).toContain(`service account ${ACCOUNT}`);
    expect(error.message).toContain("missing permission iam.serviceAccounts.getAccessToken");
    expect(error.message).toContain("PERMISSION_DENIED");
    expect(error.message).toContain("roles/iam.workloadIdentityUser");
    expectNoToken(error.message);
  });

  it("STS refusing with the subject token quoted reaches the run's error with Google's error code only", async () => {
    process.env["GOOGLE_APPLICATION_CREDENTIALS"] = credentialFile;
    gcp.echo = "sts";
    const error = await refusal(minterFor(), "run-gcp-sts-echo");
    expect(error.message).toContain("HTTP 400 invalid_grant;");
    expect(JSON.stringify({ m: error.message, d: error.details })).not.toContain(SUBJECT_TOKEN);
    expectNoToken(error.message);
  });

  it("an unreadable credential file is named, with the problem, not the content", async () => {
    const bad = join(work, "bad.json");
    await writeFile(bad, '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----', { mode: 0o600 });
    process.env["GOOGLE_APPLICATION_CREDENTIALS"] = bad;
    const error = await refusal(minterFor(), "run-gcp-7");
    expect(error.message).toContain(`the credential file ${bad} (GOOGLE_APPLICATION_CREDENTIALS), which is not JSON`);
    expect(error.message).not.toContain("PRIVATE KEY");
  });
});

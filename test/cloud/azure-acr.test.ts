/**
 * cloud_auth with azure, end to end in the agent's own code: @azure/identity finds the workload
 * identity (AZURE_FEDERATED_TOKEN_FILE + AZURE_CLIENT_ID + AZURE_TENANT_ID) or a managed
 * identity, gets an Entra ID token for ACR, the agent exchanges it at the registry's
 * /oauth2/exchange for an ACR refresh token, and RunCredentials writes it as an ordinary `auth`
 * entry (user 00000000-0000-0000-0000-000000000000) that a real registry accepts, for skopeo and
 * for OpenTofu's lookup (src/core/opentofu-resolver.ts).
 *
 * Azure cannot run here: Entra ID, IMDS and ACR's exchange are local stand-ins
 * (test/support/azure-standins.ts) that speak the documented wire formats, reached through the
 * SDK's endpoint overrides (AZURE_AUTHORITY_HOST, AZURE_POD_IDENTITY_AUTHORITY_HOST) and, for
 * the exchange, through the registry's own address: an HTTPS front that answers /oauth2/exchange
 * and forwards /v2/ to a real docker-registry whose htpasswd user
 * 00000000-0000-0000-0000-000000000000 gets each refresh token as password (the old one stops
 * working). The front and Entra use a throwaway CA, which the minter is given (extraCaPem) since
 * this process cannot take NODE_EXTRA_CA_CERTS after start. Tokens expire on the test's clock,
 * which the token cache reads: no sleeps.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCloudMinter } from "../../src/cloud/cloud-minter.js";
import type { AgentError } from "../../src/core/errors.js";
import type { AgentPrivateKey } from "../../src/crypto/agent-key.js";
import type { RunCredentials } from "../../src/credentials/run-credentials.js";
import { startAzureStandIns, type AzureStandIns } from "../support/azure-standins.js";
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
import { makeTlsMaterial, type TlsMaterial } from "../support/registry-fixture.js";
import type { RegistryPair } from "../support/registry-pair.js";

const ACR_USER = "00000000-0000-0000-0000-000000000000";
const TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT = "5d1e3c7a-0f4b-4a4e-9f6b-2b7d8e6a1c01";
const MANAGED_CLIENT = "9a8b7c6d-1111-2222-3333-444455556666";
const FEDERATED_TOKEN = "eyJhbGciOiJSUzI1NiJ9.projected-service-account-token.signature";
const REFRESH_LIFETIME_MS = 3 * 3_600_000;

let work: string;
let pair: RegistryPair;
let tls: TlsMaterial;
let azure: AzureStandIns;
let key: AgentPrivateKey;
let front: Agent;
let tokenFile: string;
let nowMs = Date.now();
let refreshExpiry: () => number | undefined = () => nowMs + REFRESH_LIFETIME_MS;
const issuedPasswords: string[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "oca-azure-acr-"));
  pair = await startModuleRegistry();
  tls = await makeTlsMaterial(join(work, "tls"));
  azure = await startAzureStandIns({
    tls,
    registry: pair.registry,
    tenantId: TENANT,
    clientIds: [CLIENT],
    refreshExpiresAtMs: () => refreshExpiry(),
    onRefreshToken: async (token) => {
      issuedPasswords.push(token);
      await pair.registry.setPassword(ACR_USER, token);
    },
  });
  front = new Agent({ connect: { ca: tls.caPem } });
  tokenFile = join(work, "azure-identity-token");
  await writeFile(tokenFile, FEDERATED_TOKEN, { mode: 0o600 });
  // No other Azure identity of the machine's environment takes part.
  process.env = Object.fromEntries(
    Object.entries(process.env).filter(
      ([name]) => !name.startsWith("AZURE_") && !name.startsWith("IDENTITY_") && name !== "MSI_ENDPOINT",
    ),
  );
  // The pool's identity, as the AKS workload identity webhook gives it to a pod.
  Object.assign(process.env, {
    AZURE_FEDERATED_TOKEN_FILE: tokenFile,
    AZURE_CLIENT_ID: CLIENT,
    AZURE_TENANT_ID: TENANT,
    AZURE_AUTHORITY_HOST: azure.authorityHost,
  });
  key = await newAgentKey();
}, 120_000);

afterAll(async () => {
  await front.close();
  await azure.close();
  await pair.stop();
  await rm(work, { recursive: true, force: true });
});

function openRun(runId: string, cloudAuth: Record<string, unknown>): Promise<RunCredentials> {
  return openCloudRun(key, "agent-azure", runId, {
    id: "int-acr",
    url: `https://${azure.registryHost}`,
    cloud_auth: cloudAuth,
  });
}

const minter = (): ReturnType<typeof createCloudMinter> =>
  // The registry's front is a local stand-in, not *.azurecr.io: the operator names it.
  createCloudMinter({ now: () => nowMs, extraCaPem: tls.caPem, allowedHosts: [azure.registryHost] });

/** skopeo and OpenTofu's lookup through the registry's front, reading exactly the run's files. */
const { expectWrittenAndPulled, skopeoInspect, tofuResolves } = pullChecks(
  () => azure.registryHost,
  () => tls.certDir,
  () => work,
);

async function refusal(credentials: RunCredentials): Promise<AgentError> {
  const error = await cloudAuthFailure(credentials.mintCloud(minter(), new AbortController().signal));
  for (const token of [...azure.accessTokens, ...issuedPasswords, FEDERATED_TOKEN])
    expect(JSON.stringify({ m: error.message, d: error.details })).not.toContain(token);
  return error;
}

function nothingWritten(credentials: RunCredentials, runId: string): Promise<void> {
  return expectNothingWritten(credentials, join(work, runId));
}

describe("cloud_auth azure: Entra ID, ACR's exchange, a real registry", () => {
  it("mints through workload identity and the exchange, passes pre-flight, and is read by skopeo and OpenTofu's lookup; renewed before the next phase once it nears expiry", async () => {
    const m = minter();
    const credentials = await openRun("run-azure-1", { provider: "azure" });
    const signal = new AbortController().signal;
    const identity = `workload identity client ${CLIENT} in tenant ${TENANT}`;

    const minted = await credentials.mintCloud(m, signal);
    expect(minted).toEqual([
      {
        host: azure.registryHost,
        integration_id: "int-acr",
        provider: "azure",
        identity,
        expires_at: new Date(Math.floor((nowMs + REFRESH_LIFETIME_MS) / 1000) * 1000).toISOString(),
      },
    ]);

    // What the agent sent to Entra: client credentials with the federated token file's content
    // as client assertion, for ACR's scope, at the tenant's token endpoint.
    const token = azure.requests.filter((r) => r.api === "entra-token");
    expect(token).toHaveLength(1);
    expect(new URL(token[0]?.url ?? "", "https://x").pathname).toBe(`/${TENANT}/oauth2/v2.0/token`);
    const form = token[0]?.form;
    expect(form?.get("grant_type")).toBe("client_credentials");
    expect(form?.get("client_id")).toBe(CLIENT);
    expect(form?.get("client_assertion")).toBe(FEDERATED_TOKEN);
    expect(form?.get("client_assertion_type")).toBe("urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    expect(form?.get("scope")?.split(" ")).toContain("https://containerregistry.azure.net/.default");
    // To the registry: the Entra token, for this registry as service, in the tenant.
    const exchange = azure.requests.filter((r) => r.api === "exchange");
    expect(exchange).toHaveLength(1);
    expect(exchange[0]?.method).toBe("POST");
    expect(exchange[0]?.headers["content-type"]).toBe("application/x-www-form-urlencoded");
    expect(Object.fromEntries(exchange[0]?.form ?? [])).toEqual({
      grant_type: "access_token",
      service: azure.registryHost,
      tenant: TENANT,
      access_token: azure.accessTokens[0],
    });

    await expectPreflightOk(credentials, front, azure.registryHost, signal);

    const written = await writeRun(credentials, join(work, "run-azure-1"));
    try {
      const first = issuedPasswords.at(-1);
      await expectWrittenAndPulled(written, ACR_USER, first);

      // Far from expiry: the cached token, no call to Azure, no rewrite.
      expect(await credentials.refresh(m, signal)).toEqual([]);
      expect(azure.requests.filter((r) => r.api === "exchange")).toHaveLength(1);

      // The phase outlived the refresh token: a new exchange, the files replaced, the old token dead.
      nowMs += REFRESH_LIFETIME_MS;
      const renewed = await credentials.refresh(m, signal);
      expect(renewed.map((r) => r.integration_id)).toEqual(["int-acr"]);
      const second = issuedPasswords.at(-1);
      expect(second).not.toBe(first);
      expect(await pair.registry.probe(ACR_USER, first ?? "")).toBe(401);
      expect(tofuResolves(written.env)).toEqual({ username: ACR_USER, password: second });
      expect((await skopeoInspect(written.env)).ok).toBe(true);
      expect(azure.requests.filter((r) => r.api === "exchange")).toHaveLength(2);
    } finally {
      expect((await credentials.wipe()).ok).toBe(true);
    }
  });

  it("a registry that is not ACR nor in cloud_auth_host gets no Entra token: refused before Entra is asked, nothing exchanged", async () => {
    const asked = azure.requests.length;
    const credentials = await openRun("run-azure-untrusted", { provider: "azure" });
    const error = await cloudAuthFailure(
      credentials.mintCloud(
        createCloudMinter({ now: () => nowMs, extraCaPem: tls.caPem }),
        new AbortController().signal,
      ),
    );
    expect(error.details).toMatchObject({ provider: "azure", registry: azure.registryHost });
    expect(error.message).toContain(
      `the agent sends azure credentials only to *.azurecr.io, *.azurecr.cn, *.azurecr.us`,
    );
    expect(error.message).toContain(`--cloud-auth-host ${azure.registryHost}`);
    expect(azure.requests).toHaveLength(asked);
    await nothingWritten(credentials, "run-azure-untrusted");
  });

  it.each([
    ["entra", "AADSTS700024"],
    ["exchange", "ACR /oauth2/exchange answered 500 INTERNAL"],
  ] as const)(
    "a refusal that echoes what the agent sent (%s) reaches the run's error without the token, not even its first characters",
    async (echo, shown) => {
      azure.echo = echo;
      try {
        const credentials = await openRun(`run-azure-echo-${echo}`, { provider: "azure" });
        // refusal() also checks that no whole token is in the message or the details.
        const error = await refusal(credentials);
        expect(error.message).toContain(shown);
        const text = JSON.stringify({ m: error.message, d: error.details });
        const sent = azure.requests.at(-1);
        const echoed =
          echo === "entra" ? (sent?.form.get("client_assertion") ?? "?") : (sent?.form.get("access_token") ?? "?");
        expect(echoed.length).toBeGreaterThan(40);
        for (const part of [echoed, echoed.slice(0, 40), echoed.slice(0, 20)]) expect(text).not.toContain(part);
        expect(error.cause).toBeUndefined();
        await nothingWritten(credentials, `run-azure-echo-${echo}`);
      } finally {
        azure.echo = undefined;
      }
    },
  );

  it("a refresh token whose exp is far beyond ACR's 3 hours is not believed: renewed after 3 hours", async () => {
    refreshExpiry = () => 99_999_999_999_000;
    try {
      const m = minter();
      const auth = { provider: "azure", tenantId: undefined, clientId: undefined } as const;
      const signal = new AbortController().signal;
      const first = await m.mint(auth, azure.registryHost, signal);
      expect(first.expiresAtMs).toBe(nowMs + REFRESH_LIFETIME_MS);
      const asked = azure.requests.filter((r) => r.api === "exchange").length;
      nowMs += REFRESH_LIFETIME_MS;
      const second = await m.mint(auth, azure.registryHost, signal);
      expect(second.password).not.toBe(first.password);
      expect(azure.requests.filter((r) => r.api === "exchange")).toHaveLength(asked + 1);
    } finally {
      refreshExpiry = () => nowMs + REFRESH_LIFETIME_MS;
    }
  });

  it("a refresh token without exp is kept about 3 hours", async () => {
    refreshExpiry = () => undefined;
    try {
      const credentials = await openRun("run-azure-noexp", { provider: "azure" });
      const before = Date.now();
      const [minted] = await credentials.mintCloud(minter(), new AbortController().signal);
      const expires = Date.parse(minted?.expires_at ?? "");
      expect(expires).toBeGreaterThanOrEqual(before + REFRESH_LIFETIME_MS - 1000);
      expect(expires).toBeLessThanOrEqual(Date.now() + REFRESH_LIFETIME_MS + 1000);
      await credentials.wipe();
    } finally {
      refreshExpiry = () => nowMs + REFRESH_LIFETIME_MS;
    }
  });

  it("an unknown application (the entry's client_id) fails with CLOUD_AUTH_FAILED naming azure, the client and tenant and Entra's AADSTS700016, before anything is written", async () => {
    const unknown = "00000000-dead-beef-0000-000000000001";
    const credentials = await openRun("run-azure-2", { provider: "azure", client_id: unknown });
    const exchangesBefore = azure.requests.filter((r) => r.api === "exchange").length;
    const error = await refusal(credentials);
    const identity = `workload identity client ${unknown} in tenant ${TENANT}`;
    expect(error.details).toEqual({ provider: "azure", identity, registry: azure.registryHost, permission: null });
    expect(error.message).toContain(
      `azure gave no registry credential for ${azure.registryHost} to identity ${identity}`,
    );
    expect(error.message).toContain("AADSTS700016");
    expect(error.message).toContain("federated credential");
    expect(
      azure.requests
        .filter((r) => r.api === "entra-token")
        .at(-1)
        ?.form.get("client_id"),
    ).toBe(unknown);
    expect(azure.requests.filter((r) => r.api === "exchange")).toHaveLength(exchangesBefore);
    await nothingWritten(credentials, "run-azure-2");
  });

  it("a registry that refuses the exchange fails with CLOUD_AUTH_FAILED naming AcrPull", async () => {
    azure.denyExchange = true;
    try {
      const credentials = await openRun("run-azure-3", { provider: "azure", tenant_id: TENANT });
      const error = await refusal(credentials);
      expect(error.details).toMatchObject({
        provider: "azure",
        permission: "AcrPull (Microsoft.ContainerRegistry/registries/pull/read)",
      });
      expect(error.message).toContain("ACR /oauth2/exchange answered 401 UNAUTHORIZED");
      expect(error.message).toContain(`grant workload identity client ${CLIENT} in tenant ${TENANT} the AcrPull role`);
      await nothingWritten(credentials, "run-azure-3");
    } finally {
      azure.denyExchange = false;
    }
  });

  it("workload identity without a tenant is refused before asking Entra, saying what is missing", async () => {
    delete process.env["AZURE_TENANT_ID"];
    try {
      const asked = azure.requests.length;
      const credentials = await openRun("run-azure-4", { provider: "azure" });
      const error = await refusal(credentials);
      expect(error.message).toContain("workload identity (AZURE_FEDERATED_TOKEN_FILE) needs a tenant id");
      expect(error.message).toContain("set AZURE_CLIENT_ID and AZURE_TENANT_ID");
      expect(azure.requests).toHaveLength(asked);
    } finally {
      process.env["AZURE_TENANT_ID"] = TENANT;
    }
  });

  it("without a federated token file, a user-assigned managed identity through IMDS (Metadata: true, ACR's resource, the client id)", async () => {
    delete process.env["AZURE_FEDERATED_TOKEN_FILE"];
    process.env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = azure.imdsHost;
    try {
      const credentials = await openRun("run-azure-5", { provider: "azure", client_id: MANAGED_CLIENT });
      const [minted] = await credentials.mintCloud(minter(), new AbortController().signal);
      expect(minted?.identity).toBe(`managed identity client ${MANAGED_CLIENT} in tenant ${TENANT}`);
      const imds = azure.requests.filter((r) => r.api === "imds").at(-1);
      expect(imds?.headers["metadata"]).toBe("true");
      expect(imds?.form.get("resource")).toBe("https://containerregistry.azure.net");
      expect(imds?.form.get("client_id")).toBe(MANAGED_CLIENT);
      const exchange = azure.requests.filter((r) => r.api === "exchange").at(-1);
      expect(exchange?.form.get("access_token")).toBe(azure.accessTokens.at(-1));
      expect(await pair.registry.probe(ACR_USER, issuedPasswords.at(-1) ?? "")).toBe(200);
      await credentials.wipe();
    } finally {
      delete process.env["AZURE_POD_IDENTITY_AUTHORITY_HOST"];
      process.env["AZURE_FEDERATED_TOKEN_FILE"] = tokenFile;
    }
  });
});

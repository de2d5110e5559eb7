/**
 * HTTPS between agents and the reference control plane, with a CA made here by openssl:
 * `control-plane --tls-cert --tls-key` serves HTTPS and reloads its certificate on SIGHUP and
 * when the files change; without them it refuses a non-loopback --listen unless told TLS ends
 * in front (--plain-http-behind-proxy). The agent verifies the certificate: it enrolls with
 * --ca-file or NODE_EXTRA_CA_CERTS, and refuses an unknown CA or a wrong host name with
 * CONTROL_PLANE_TLS_FAILED and the fix; a plain http:// URL to a non-loopback host is refused.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:tls";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { controlPlaneDispatcher } from "../../src/app/tls-dispatcher.js";
import { loadSettings } from "../../src/config/load-run-config.js";
import { readTlsFiles, watchTlsFiles } from "../../src/control-plane/tls-files.js";
import { isAgentError } from "../../src/core/errors.js";
import { generatePrivateKeyPem, parsePrivateKeyPem, publicKeyDoc } from "../../src/crypto/agent-key.js";
import { openChallenge } from "../../src/crypto/sealed-bundle.js";
import { ControlPlaneClient } from "../../src/daemon/control-plane-client.js";
import { AGENT_BIN, startLogged, type AgentProcess } from "../support/agent-process.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { agentFiles, launchAgent, stopAgent, type AgentFiles } from "../support/reliability-agents.js";

const execFileAsync = promisify(execFile);
let dir: string;
const pem = (name: string): string => join(dir, name);

/** A key and a certificate for `san`, signed by the CA `ca` (ca.pem/ca.key). */
async function issue(name: string, san: string, ca = "ca"): Promise<void> {
  await execFileAsync("openssl", [
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    pem(`${name}.key`),
    "-out",
    pem(`${name}.csr`),
    "-subj",
    `/CN=${name}`,
  ]);
  await writeFile(pem(`${name}.ext`), `subjectAltName=${san}\n`);
  await execFileAsync("openssl", [
    "x509",
    "-req",
    "-in",
    pem(`${name}.csr`),
    "-CA",
    pem(`${ca}.pem`),
    "-CAkey",
    pem(`${ca}.key`),
    "-set_serial",
    `0x${Buffer.from(name).toString("hex")}`,
    "-days",
    "2",
    "-extfile",
    pem(`${name}.ext`),
    "-out",
    pem(`${name}.pem`),
  ]);
}

async function makeCa(name: string): Promise<void> {
  await execFileAsync("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    pem(`${name}.key`),
    "-out",
    pem(`${name}.pem`),
    "-days",
    "2",
    "-subj",
    `/CN=${name}`,
  ]);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-tls-"));
  await makeCa("ca");
  await makeCa("other-ca");
  await issue("server", "DNS:localhost,IP:127.0.0.1");
  await issue("renewed", "DNS:localhost,IP:127.0.0.1");
  await issue("elsewhere", "DNS:control-plane.elsewhere.test");
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs the CLI expecting it to fail: its exit code and stderr. */
async function cliFails(args: readonly string[]): Promise<{ code: unknown; stderr: string }> {
  try {
    // Bounded: a control plane that wrongly starts is killed rather than left running.
    await execFileAsync(AGENT_BIN, [...args], { timeout: 20_000 });
  } catch (error) {
    const e = error as { code?: unknown; stderr?: unknown };
    return { code: e.code, stderr: String(e.stderr) };
  }
  throw new Error(`oci-cred-agent ${args.join(" ")} succeeded`);
}

/** The serial number of the certificate served at 127.0.0.1:port. */
function servedSerial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: "127.0.0.1", servername: "localhost", rejectUnauthorized: false }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.end();
      resolve(serial);
    });
    socket.on("error", reject);
  });
}
const serialOf = (name: string): string => Buffer.from(name).toString("hex").toUpperCase();

async function tlsHarness(cert: string): Promise<Harness> {
  return startControlPlane({ tls: await readTlsFiles({ cert: pem(`${cert}.pem`), key: pem(`${cert}.key`) }) });
}

/** Enrollment's first step through the agent's own client and dispatcher; the error's code, or "ok". */
async function enrollThrough(url: string, poolToken: string, caFile: string | undefined): Promise<string> {
  const { NODE_EXTRA_CA_CERTS: _ignored, ...env } = process.env;
  const client = new ControlPlaneClient({
    baseUrl: url,
    token: poolToken,
    dispatcher: await controlPlaneDispatcher(env, caFile),
  });
  const key = await parsePrivateKeyPem(generatePrivateKeyPem(), "test key");
  try {
    await client.enroll({ name: "tls-test", version: "1", concurrency: 1, public_keys: [publicKeyDoc(key.publicKey)] });
    return "ok";
  } catch (error) {
    if (!isAgentError(error)) throw error;
    return `${error.code}: ${error.message}`;
  } finally {
    await client.close();
  }
}

describe("the agent verifies the control plane's certificate", () => {
  it("enrolls with the CA in --ca-file; refuses the system store alone, another CA and a wrong host name with CONTROL_PLANE_TLS_FAILED", async () => {
    const h = await tlsHarness("server");
    const elsewhere = await tlsHarness("elsewhere");
    try {
      expect(h.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const byName = h.url.replace("127.0.0.1", "localhost");
      expect(await enrollThrough(byName, h.agentToken, pem("ca.pem"))).toBe("ok");
      expect(await enrollThrough(h.url, h.agentToken, pem("ca.pem"))).toBe("ok");
      const untrusted = await enrollThrough(h.url, h.agentToken, undefined);
      expect(untrusted).toMatch(/^CONTROL_PLANE_TLS_FAILED: .*UNABLE_TO_VERIFY_LEAF_SIGNATURE/);
      expect(untrusted).toContain("--ca-file or NODE_EXTRA_CA_CERTS");
      expect(await enrollThrough(h.url, h.agentToken, pem("other-ca.pem"))).toMatch(/^CONTROL_PLANE_TLS_FAILED: /);
      const wrongHost = await enrollThrough(elsewhere.url, elsewhere.agentToken, pem("ca.pem"));
      expect(wrongHost).toMatch(/^CONTROL_PLANE_TLS_FAILED: .*ERR_TLS_CERT_ALTNAME_INVALID/);
      expect(wrongHost).toContain("host name of --control-plane-url");
      // An https:// URL to a plain HTTP listener.
      const plain = await startControlPlane();
      try {
        const noTls = await enrollThrough(plain.url.replace("http:", "https:"), plain.agentToken, pem("ca.pem"));
        expect(noTls).toMatch(/^CONTROL_PLANE_TLS_FAILED: .*does not speak TLS/);
      } finally {
        await plain.close();
      }
    } finally {
      await h.close();
      await elsewhere.close();
    }
  });

  it("over HTTPS, a request with the agent's credential proves its connection (the TLS socket is matched to its TCP connection)", async () => {
    const h = await tlsHarness("server");
    const { NODE_EXTRA_CA_CERTS: _ignored, ...env } = process.env;
    const client = new ControlPlaneClient({
      baseUrl: h.url,
      token: h.agentToken,
      dispatcher: await controlPlaneDispatcher(env, pem("ca.pem")),
    });
    try {
      const key = await parsePrivateKeyPem(generatePrivateKeyPem(), "test key");
      const enrolled = await client.enroll({
        name: "tls-test",
        version: "1",
        concurrency: 1,
        public_keys: [publicKeyDoc(key.publicKey)],
      });
      const answer = await openChallenge(enrolled.challenge, {
        keys: new Map([[key.kid, key]]),
        agentId: enrolled.agent_id,
        challengeId: enrolled.challenge_id,
        nowMs: Date.now(),
        clockSkewSeconds: 120,
      });
      await client.answerEnrollment(enrolled.agent_id, { challenge_id: enrolled.challenge_id, answer });
      expect(h.cp.connectionStats().proven).toBe(0);
      expect(await client.lease(enrolled.agent_id, 1, 0, new AbortController().signal)).toEqual([]);
      expect(h.cp.connectionStats().proven).toBe(1);
    } finally {
      await client.close();
      await h.close();
    }
  });

  it("an agent process registers over HTTPS with --ca-file, and with NODE_EXTRA_CA_CERTS; with another CA it logs CONTROL_PLANE_TLS_FAILED and never registers", async () => {
    const h = await tlsHarness("server");
    const files: AgentFiles = await agentFiles(dir, h.agentToken);
    const agents: AgentProcess[] = [];
    try {
      const withCaFile = launchAgent(h.url, files, join(dir, "work-ca-file"), ["--ca-file", pem("ca.pem")]);
      const withEnv = launchAgent(h.url, files, join(dir, "work-env"), [], { NODE_EXTRA_CA_CERTS: pem("ca.pem") });
      const wrongCa = launchAgent(h.url, files, join(dir, "work-wrong"), ["--ca-file", pem("other-ca.pem")]);
      agents.push(withCaFile, withEnv, wrongCa);
      await withCaFile.waitForLog((l) => l["event"] === "registered");
      await withEnv.waitForLog((l) => l["event"] === "registered");
      const refused = await wrongCa.waitForLog((l) => l["event"] === "control_plane_error");
      expect(refused).toMatchObject({ code: "CONTROL_PLANE_TLS_FAILED", during: "register" });
      expect(String(refused["msg"])).toContain("--ca-file or NODE_EXTRA_CA_CERTS");
      expect(wrongCa.lines.some((l) => l["event"] === "registered")).toBe(false);
    } finally {
      for (const a of agents) await stopAgent(a);
      await h.close();
    }
  });

  it("doctor names the TLS failure and its fix (CONTROL_PLANE_TLS_FAILED), and passes with the right CA", async () => {
    const h = await tlsHarness("server");
    const files = await agentFiles(dir, h.agentToken);
    const doctor = async (caFile: string): Promise<Record<string, unknown> | undefined> => {
      const args = ["doctor", "--format", "json", "--control-plane-url", h.url, "--token-file", files.tokenFile];
      const run = await execFileAsync(
        AGENT_BIN,
        [...args, "--key-file", files.keyFile, "--work-dir", join(files.dir, "work"), "--ca-file", caFile],
        { timeout: 30_000 },
      ).catch((error: unknown) => error as { stdout: string });
      const report = JSON.parse(run.stdout) as { checks: Record<string, unknown>[] };
      return report.checks.find((c) => c["check"] === "control plane");
    };
    try {
      const refused = await doctor(pem("other-ca.pem"));
      expect(refused).toMatchObject({ status: "fail", code: "CONTROL_PLANE_TLS_FAILED" });
      expect(String(refused?.["detail"])).toContain("--ca-file or NODE_EXTRA_CA_CERTS");
      expect(await doctor(pem("ca.pem"))).toMatchObject({ status: "ok" });
    } finally {
      await h.close();
    }
  });

  it("a plain http:// control plane URL to a non-loopback host is refused (CONFIG_INVALID) unless --allow-insecure-control-plane", async () => {
    const flags = { token_file: "/nonexistent", key_file: "/nonexistent", work_dir: dir };
    const refused = await loadSettings({ ...flags, control_plane_url: "http://10.0.0.7:8480" }, {});
    expect(refused.problems.map((p) => p.message).join("\n")).toMatch(/plain http to a non-loopback host.*https:\/\//);
    const loopback = await loadSettings({ ...flags, control_plane_url: "http://127.0.0.1:8480" }, {});
    expect(loopback.problems.filter((p) => p.key === "control_plane_url")).toEqual([]);
    const allowed = await loadSettings(
      { ...flags, control_plane_url: "http://10.0.0.7:8480", allow_insecure_control_plane: true },
      {},
    );
    expect(allowed.problems.filter((p) => p.key === "control_plane_url")).toEqual([]);
  });
});

describe("control-plane --tls-cert --tls-key", () => {
  it("serves HTTPS, reloads a renewed certificate on SIGHUP, and keeps the old one when the new pair is broken", async () => {
    const cert = pem("live.pem");
    const key = pem("live.key");
    await execFileAsync("cp", [pem("server.pem"), cert]);
    await execFileAsync("cp", [pem("server.key"), key]);
    const admin = pem("admin.token");
    const pool = pem("pool.token");
    await writeFile(admin, "admin-token-0123456789abcdef\n");
    await writeFile(pool, "pool-token-0123456789abcdef\n");
    const cp = startLogged(AGENT_BIN, [
      "control-plane",
      "--listen",
      "127.0.0.1:0",
      "--admin-token-file",
      admin,
      "--agent-token-file",
      pool,
      "--tls-cert",
      cert,
      "--tls-key",
      key,
    ]);
    try {
      const listening = await cp.waitForLog((l) => l["event"] === "control_plane_listening");
      const url = String(listening["url"]);
      expect(url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const port = Number(new URL(url).port);
      expect(await servedSerial(port)).toBe(serialOf("server"));

      // A broken pair (the renewed certificate with the old key): refused, the old one stays.
      await execFileAsync("cp", [pem("renewed.pem"), cert]);
      cp.kill("SIGHUP");
      const failed = await cp.waitForLog((l) => l["event"] === "tls_reload_failed");
      expect(failed).toMatchObject({ trigger: "SIGHUP", code: "INVALID_ARGUMENT" });
      expect(await servedSerial(port)).toBe(serialOf("server"));

      await execFileAsync("cp", [pem("renewed.key"), key]);
      cp.kill("SIGHUP");
      await cp.waitForLog((l) => l["event"] === "tls_reloaded" && l["trigger"] === "SIGHUP");
      expect(await servedSerial(port)).toBe(serialOf("renewed"));
    } finally {
      cp.kill("SIGTERM");
      await cp.exited;
    }
  });

  it("a certificate renamed into place is served without a signal (the files are watched)", async () => {
    const files = { cert: pem("watched.pem"), key: pem("watched.key") };
    await execFileAsync("cp", [pem("server.pem"), files.cert]);
    await execFileAsync("cp", [pem("server.key"), files.key]);
    const h = await startControlPlane({ tls: await readTlsFiles(files) });
    const reloaded: string[] = [];
    let onReload: (() => void) | undefined;
    const stop = watchTlsFiles(
      files,
      () => {
        void readTlsFiles(files).then(
          (pair) => {
            h.cp.setTls(pair);
            reloaded.push("ok");
            onReload?.();
          },
          () => undefined,
        );
      },
      50,
    );
    try {
      const port = Number(new URL(h.url).port);
      expect(await servedSerial(port)).toBe(serialOf("server"));
      const done = new Promise<void>((resolve) => {
        onReload = resolve;
      });
      // As a renewal does it: new files written aside, then renamed over the old ones, key first.
      await execFileAsync("cp", [pem("renewed.key"), `${files.key}.new`]);
      await execFileAsync("cp", [pem("renewed.pem"), `${files.cert}.new`]);
      await rename(`${files.key}.new`, files.key);
      await rename(`${files.cert}.new`, files.cert);
      await done;
      expect(await servedSerial(port)).toBe(serialOf("renewed"));
    } finally {
      stop();
      await h.close();
    }
  });

  it("refuses plain HTTP on a non-loopback address (CONTROL_PLANE_TLS_REQUIRED) unless --plain-http-behind-proxy; one of the two TLS flags alone is refused", async () => {
    const admin = pem("admin2.token");
    const pool = pem("pool2.token");
    await writeFile(admin, "admin-token-0123456789abcdef\n");
    await writeFile(pool, "pool-token-0123456789abcdef\n");
    const base = ["control-plane", "--admin-token-file", admin, "--agent-token-file", pool];
    const refused = await cliFails([...base, "--listen", "0.0.0.0:0"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("CONTROL_PLANE_TLS_REQUIRED");
    expect(refused.stderr).toContain("--tls-cert FILE and --tls-key FILE");
    expect(refused.stderr).toContain("--plain-http-behind-proxy");
    const halfTls = await cliFails([...base, "--listen", "127.0.0.1:0", "--tls-cert", pem("server.pem")]);
    expect(halfTls.stderr).toContain("INVALID_ARGUMENT");
    expect(halfTls.stderr).toContain("--tls-key");

    const proxied = startLogged(AGENT_BIN, [...base, "--listen", "0.0.0.0:0", "--plain-http-behind-proxy"]);
    try {
      const listening = await proxied.waitForLog((l) => l["event"] === "control_plane_listening");
      expect(String(listening["url"])).toMatch(/^http:\/\/0\.0\.0\.0:\d+$/);
    } finally {
      proxied.kill("SIGTERM");
      await proxied.exited;
    }
  });
});

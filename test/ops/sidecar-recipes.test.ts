/**
 * The sidecar recipes' files (deploy/kubernetes/sidecar/, deploy/hooks/, deploy/spacelift/,
 * deploy/atlantis/): the Kubernetes manifests parse and keep the properties docs/sidecar.md
 * promises, and docs/sidecar.md shows every file exactly as it is. test/hook/foreign-runners.test.ts
 * runs them.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { codeBlocks } from "../support/markdown-code-blocks.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const read = (p: string): string => readFileSync(join(ROOT, p), "utf8");

interface Container {
  name: string;
  image: string;
  restartPolicy?: string;
  args?: string[];
  command?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  startupProbe?: { httpGet?: { path: string; port: string } };
  volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface Job {
  kind: string;
  spec: {
    template: {
      metadata: { annotations: Record<string, string> };
      spec: {
        terminationGracePeriodSeconds: number;
        automountServiceAccountToken: boolean;
        initContainers: Container[];
        containers: Container[];
        volumes: { name: string; emptyDir?: { medium?: string }; secret?: { secretName: string } }[];
      };
    };
  };
}

function yamlDocs(p: string): unknown[] {
  const docs = parseAllDocuments(read(p));
  for (const d of docs) expect(d.errors, p).toEqual([]);
  return docs.map((d) => d.toJS() as unknown);
}

describe("deploy/kubernetes/sidecar/", () => {
  const [job] = yamlDocs("deploy/kubernetes/sidecar/job.yaml") as Job[];
  const pod = job?.spec.template.spec;

  it("runs oci-cred-agent as a native sidecar: an init container with restartPolicy Always and a startupProbe on /readyz", () => {
    expect(job?.kind).toBe("Job");
    const sidecar = pod?.initContainers.find((c) => c.name === "oci-cred-agent");
    expect(sidecar?.restartPolicy).toBe("Always");
    expect(sidecar?.args?.[0]).toBe("sidecar");
    expect(sidecar?.startupProbe?.httpGet?.path).toBe("/readyz");
    expect(sidecar?.args).toContain("--listen=0.0.0.0:9480");
    expect(pod?.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(10);
    expect(pod?.automountServiceAccountToken).toBe(false);
  });

  it("shares one memory emptyDir for the socket and the credentials; the key and token reach the sidecar only", () => {
    const shared = pod?.volumes.find((v) => v.name === "shared");
    expect(shared?.emptyDir?.medium).toBe("Memory");
    const sidecar = pod?.initContainers[0];
    const runner = pod?.containers.find((c) => c.name === "runner");
    const socketArg = sidecar?.args?.find((a) => a.startsWith("--socket="))?.slice("--socket=".length) ?? "";
    const credentialsArg = sidecar?.args?.find((a) => a.startsWith("--credentials-dir="))?.split("=")[1] ?? "";
    const mountOf = (c: Container | undefined): string =>
      c?.volumeMounts.find((m) => m.name === "shared")?.mountPath ?? "none";
    for (const c of [sidecar, runner]) {
      expect(socketArg.startsWith(`${mountOf(c)}/`)).toBe(true);
      expect(credentialsArg.startsWith(`${mountOf(c)}/`)).toBe(true);
    }
    expect(runner?.env?.find((e) => e.name === "OCI_CRED_AGENT_SOCKET")?.value).toBe(socketArg);
    const secretVolumes = new Set(pod?.volumes.filter((v) => v.secret).map((v) => v.name));
    const runnerSecrets = runner?.volumeMounts.filter((m) => secretVolumes.has(m.name)).map((m) => m.name);
    expect(runnerSecrets).toEqual(["run-token"]);
    expect(sidecar?.volumeMounts.filter((m) => secretVolumes.has(m.name)).map((m) => m.name)).toEqual([
      "keys",
      "token",
    ]);
  });

  it("gives the runner the run id and the stage from the pod's annotations (downward API)", () => {
    const runner = pod?.containers[0];
    const fieldPath = (name: string): string | undefined =>
      runner?.env?.find((e) => e.name === name)?.valueFrom?.fieldRef?.fieldPath;
    expect(fieldPath("OCA_RUN_ID")).toBe("metadata.annotations['oci-cred-agent.io/run-id']");
    expect(fieldPath("OCA_PHASE")).toBe("metadata.annotations['oci-cred-agent.io/phase']");
    expect(Object.keys(job?.spec.template.metadata.annotations ?? {})).toEqual([
      "oci-cred-agent.io/run-id",
      "oci-cred-agent.io/phase",
    ]);
    const [cm] = yamlDocs("deploy/kubernetes/sidecar/runner-script.yaml") as { data: Record<string, string> }[];
    expect(runner?.command).toEqual(["/bin/sh", "/etc/oci-cred-agent-runner/run-stage.sh"]);
    expect(cm?.data["run-stage.sh"]).toContain('oci-cred-agent hook pre-init --run-id "$OCA_RUN_ID"');
  });
});

describe("docs/sidecar.md shows every recipe file exactly", () => {
  const blocks = codeBlocks(read("docs/sidecar.md")).map((b) => b.text);
  const files = [
    ...readdirSync(join(ROOT, "deploy/hooks/scalr")).map((f) => `deploy/hooks/scalr/${f}`),
    ...readdirSync(join(ROOT, "deploy/hooks/hcp")).map((f) => `deploy/hooks/hcp/${f}`),
    "deploy/spacelift/config.yml",
    "deploy/atlantis/repos.yaml",
    "deploy/kubernetes/sidecar/job.yaml",
    "deploy/kubernetes/sidecar/runner-script.yaml",
  ];
  for (const file of files)
    it(file, () => {
      expect(blocks).toContain(read(file).replace(/\n$/, ""));
      if (file.startsWith("deploy/hooks/")) expect(statSync(join(ROOT, file)).mode & 0o111).toBe(0o111);
    });
});

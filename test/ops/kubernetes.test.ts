/**
 * deploy/kubernetes/ and the Dockerfile, checked without a cluster or a Docker daemon:
 *   - every manifest parses (identically as YAML 1.1, what kubectl reads, and YAML 1.2) and
 *     validates against the Kubernetes API JSON schemas of `kubernetes-models`; those schemas
 *     allow unknown fields (as the OpenAPI documents do), so the manifests are also type-checked
 *     against the package's API types, where a misspelt field is an excess-property error,
 *     the way `kubectl apply --validate=strict` refuses it;
 *   - the wiring: the container's args are `run` flags (src/config/schema.ts), the probes hit
 *     /healthz and /readyz on the --listen port, the grace period exceeds drain + cancel grace,
 *     every path flag lands on the right volume (Secrets as directories, credentials in memory),
 *     and the security context is complete;
 *   - the runner split (issue 14): a runner sidecar of another uid with no key, token or API
 *     token, on the agent's socket, work and credentials volumes at the same paths, its args taken
 *     by the real CLI in a PID namespace of its own; the NetworkPolicy admits only the scraper;
 *   - the Dockerfile's stages, user and entrypoint.
 */
import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, posix } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { ConfigMap, Service, ServiceAccount } from "kubernetes-models/v1";
import { Deployment } from "kubernetes-models/apps/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { RUN_FIELDS, resolveConfig } from "../../src/config/schema.js";
import { isCloudIdentityVariable } from "../../src/core/cloud-identity-env.js";
import { isComplete, settingsFromConfig, type AgentSettings } from "../../src/config/load-run-config.js";
import { AGENT_BIN } from "../support/agent-process.js";
import { runFlags } from "../support/run-flags.js";

const REPO = realpathSync(new URL("../../", import.meta.url));
const DIR = join(REPO, "deploy/kubernetes");

type Obj = Record<string, unknown>;
interface Manifest {
  readonly file: string;
  readonly obj: Obj;
}

/** The model (JSON schema validator) and the API type of every kind the manifests may use. */
const MODELS: Record<string, { make: (data: Obj) => { validate(): void }; type: string; module: string }> = {
  "v1/ServiceAccount": {
    make: (d) => new ServiceAccount(d),
    type: "IServiceAccount",
    module: "kubernetes-models/v1/ServiceAccount",
  },
  "v1/ConfigMap": { make: (d) => new ConfigMap(d), type: "IConfigMap", module: "kubernetes-models/v1/ConfigMap" },
  "v1/Service": { make: (d) => new Service(d), type: "IService", module: "kubernetes-models/v1/Service" },
  "apps/v1/Deployment": {
    make: (d) => new Deployment(d),
    type: "IDeployment",
    module: "kubernetes-models/apps/v1/Deployment",
  },
  "policy/v1/PodDisruptionBudget": {
    make: (d) => new PodDisruptionBudget(d),
    type: "IPodDisruptionBudget",
    module: "kubernetes-models/policy/v1/PodDisruptionBudget",
  },
  "networking.k8s.io/v1/NetworkPolicy": {
    make: (d) => new NetworkPolicy(d),
    type: "INetworkPolicy",
    module: "kubernetes-models/networking.k8s.io/v1/NetworkPolicy",
  },
};

const kindKey = (o: Obj): string => `${String(o["apiVersion"])}/${String(o["kind"])}`;

function parseYamlDocs(text: string, version: "1.1" | "1.2", where: string): Obj[] {
  const out: Obj[] = [];
  for (const doc of parseAllDocuments(text, { version })) {
    if (doc.errors.length > 0) throw new Error(`${where}: ${doc.errors.map((e) => e.message).join("; ")}`);
    const js: unknown = doc.toJS();
    if (js === null || js === undefined) continue;
    if (typeof js !== "object" || Array.isArray(js)) throw new Error(`${where}: a document is not a mapping`);
    out.push(js as Obj);
  }
  return out;
}

function loadManifests(): Manifest[] {
  const out: Manifest[] = [];
  for (const file of readdirSync(DIR)
    .filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml")
    .sort()) {
    const text = readFileSync(join(DIR, file), "utf8");
    const as11 = parseYamlDocs(text, "1.1", file);
    // kubectl reads YAML 1.1 (0440 is octal, yes/no/on/off are booleans); a manifest must mean
    // the same either way.
    expect(parseYamlDocs(text, "1.2", file), `${file} reads the same as YAML 1.1 and 1.2`).toEqual(as11);
    for (const obj of as11) out.push({ file, obj });
  }
  return out;
}

const MANIFESTS = loadManifests();

function only(kind: string): Obj {
  const found = MANIFESTS.filter((m) => m.obj["kind"] === kind);
  expect(found, `exactly one ${kind}`).toHaveLength(1);
  return found[0]!.obj;
}

/** Type-checks manifests against kubernetes-models' API types; returns the diagnostics. */
function typeCheck(manifests: readonly Manifest[]): string[] {
  const virtualFile = join(REPO, "test/ops/__manifest-types__.ts");
  const source = manifests
    .map((m, i) => {
      const model = MODELS[kindKey(m.obj)];
      if (model === undefined) throw new Error(`${m.file}: no model for ${kindKey(m.obj)}`);
      return `import type { ${model.type} as T${i} } from "${model.module}";\n// ${m.file}\nexport const m${i}: T${i} = ${JSON.stringify(m.obj, null, 1)};\n`;
    })
    .join("\n");
  const options: ts.CompilerOptions = {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  const readFile = host.readFile.bind(host);
  host.getSourceFile = (name, lang, onError, create) =>
    name === virtualFile ? ts.createSourceFile(name, source, lang) : getSourceFile(name, lang, onError, create);
  host.fileExists = (name) => name === virtualFile || fileExists(name);
  host.readFile = (name) => (name === virtualFile ? source : readFile(name));
  const program = ts.createProgram([virtualFile], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const where =
      d.file && d.start !== undefined ? `line ${d.file.getLineAndCharacterOfPosition(d.start).line + 1}: ` : "";
    return where + ts.flattenDiagnosticMessageText(d.messageText, "\n");
  });
}

// ---------------------------------------------------------------------------------------------
// The Deployment's pieces, as plain objects.

const DEPLOYMENT = only("Deployment");
const asObj = (v: unknown): Obj => (v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Obj) : {});
const asArr = (v: unknown): Obj[] => (Array.isArray(v) ? (v as Obj[]) : []);
const POD_TEMPLATE = asObj(asObj(DEPLOYMENT["spec"])["template"]);
const POD = asObj(POD_TEMPLATE["spec"]);
const CONTAINERS = asArr(POD["containers"]);
const AGENT = CONTAINERS[0] ?? {};
const VOLUMES = asArr(POD["volumes"]);
const MOUNTS = asArr(AGENT["volumeMounts"]);
const ARGS = (Array.isArray(AGENT["args"]) ? AGENT["args"] : []) as string[];
const CONTAINER_ENV = Object.fromEntries(asArr(AGENT["env"]).map((e) => [String(e["name"]), String(e["value"])]));
const RUNNER = asArr(POD["initContainers"]).find((c) => c["name"] === "runner") ?? {};
const RUNNER_ARGS = (Array.isArray(RUNNER["args"]) ? RUNNER["args"] : []) as string[];
const RUNNER_MOUNTS = asArr(RUNNER["volumeMounts"]);

/** A `--flag=value` of an argument list. */
function argValue(args: readonly string[], flag: string): string | undefined {
  return args.find((a) => a.startsWith(`${flag}=`))?.slice(flag.length + 1);
}

/**
 * `run --executor runner:PATH` is checked below against the runner; it is left out of the
 * `run` flag checks until src/config/schema.ts has the flag (then it is checked like the others).
 */
const EXECUTOR_IS_RUN_FLAG = RUN_FIELDS.some((f) => f.flag === "--executor");
const RUN_ARGS = EXECUTOR_IS_RUN_FLAG ? ARGS : ARGS.filter((a) => !a.startsWith("--executor="));

const FLAGS = runFlags(RUN_ARGS, "the container's args");

/** The mount (and its volume) that holds a path; the deepest mount wins, as in the container. */
function mountOf(path: string, mounts: readonly Obj[] = MOUNTS): { mount: Obj; volume: Obj; rest: string } {
  const candidates = mounts
    .filter((m) => {
      const mp = String(m["mountPath"]);
      return path === mp || path.startsWith(`${mp.replace(/\/$/, "")}/`);
    })
    .sort((a, b) => String(b["mountPath"]).length - String(a["mountPath"]).length);
  const mount = candidates[0];
  if (mount === undefined) throw new Error(`${path} is on no volume mount of the container`);
  const volume = VOLUMES.find((v) => v["name"] === mount["name"]);
  if (volume === undefined) throw new Error(`the mount ${String(mount["name"])} has no volume`);
  return { mount, volume, rest: posix.relative(String(mount["mountPath"]), path) };
}

/** The agent's effective settings: the args, then the container's OCI_CRED_AGENT_* variables, then the ConfigMap's file. */
function agentSettings(): AgentSettings {
  const configPath = String(FLAGS["config"]);
  const { volume, rest } = mountOf(configPath);
  const cmName = String(asObj(volume["configMap"])["name"]);
  const cm = MANIFESTS.find((m) => m.obj["kind"] === "ConfigMap" && asObj(m.obj["metadata"])["name"] === cmName);
  expect(cm, `--config ${configPath} is on the ConfigMap ${cmName} of deploy/kubernetes`).toBeDefined();
  const text = asObj(cm?.obj["data"])[rest];
  expect(typeof text, `the ConfigMap ${cmName} has the key ${rest}`).toBe("string");
  const data = parseYamlDocs(String(text), "1.2", `${cmName}/${rest}`)[0];
  const { config, problems } = resolveConfig(RUN_FIELDS, {
    flags: FLAGS,
    env: CONTAINER_ENV,
    file: { path: configPath, data },
  });
  expect(problems).toEqual([]);
  const settings = settingsFromConfig(config);
  if (!isComplete(settings)) throw new Error("the Deployment's configuration is incomplete");
  return settings;
}

describe("Kubernetes manifests: the API schema", () => {
  it("every manifest parses and validates against the Kubernetes API schema (kubernetes-models), with no namespace of its own", () => {
    expect(MANIFESTS.length).toBeGreaterThanOrEqual(5);
    for (const m of MANIFESTS) {
      const model = MODELS[kindKey(m.obj)];
      expect(model, `${m.file}: ${kindKey(m.obj)} is a kind this test knows`).toBeDefined();
      expect(() => model?.make(m.obj).validate(), m.file).not.toThrow();
      expect(
        asObj(m.obj["metadata"])["namespace"],
        `${m.file} leaves the namespace to kubectl -n / kustomize`,
      ).toBeUndefined();
    }
  });

  it("every manifest type-checks against the API types: no unknown or misspelt field", () => {
    expect(typeCheck(MANIFESTS)).toEqual([]);
  }, 60_000);

  it("the checks bite: a wrong type, a missing required field and a misspelt field are refused", () => {
    const broken = structuredClone(DEPLOYMENT);
    asObj(broken["spec"])["replicas"] = "two";
    expect(() => new Deployment(broken as never).validate()).toThrow(/replicas/);
    const noName = structuredClone(DEPLOYMENT);
    delete asArr(asObj(asObj(asObj(noName["spec"])["template"])["spec"])["containers"])[0]!["name"];
    expect(() => new Deployment(noName as never).validate()).toThrow(/name/);
    const typo = structuredClone(DEPLOYMENT);
    const sc = asObj(asArr(asObj(asObj(asObj(typo["spec"])["template"])["spec"])["containers"])[0]!["securityContext"]);
    sc["readOnlyRootFileSystem"] = sc["readOnlyRootFilesystem"];
    delete sc["readOnlyRootFilesystem"];
    expect(typeCheck([{ file: "typo", obj: typo }]).join("\n")).toMatch(/readOnlyRootFileSystem/);
  }, 60_000);

  it("kustomization.yaml lists every manifest and nothing else, sets no namespace, and names the Deployment's image", () => {
    const k =
      parseYamlDocs(readFileSync(join(DIR, "kustomization.yaml"), "utf8"), "1.1", "kustomization.yaml")[0] ?? {};
    expect(k["kind"]).toBe("Kustomization");
    expect([...(k["resources"] as string[])].sort()).toEqual([...new Set(MANIFESTS.map((m) => m.file))].sort());
    expect(k["namespace"]).toBeUndefined();
    const imageName = String(AGENT["image"]).split(":")[0];
    expect(asArr(k["images"]).map((i) => i["name"])).toContain(imageName);
  });
});

describe("Kubernetes manifests: wiring to the agent", () => {
  it("one pool, several agents: replicas >= 2, and the PodDisruptionBudget, Service and NetworkPolicy select the pods", () => {
    const spec = asObj(DEPLOYMENT["spec"]);
    expect(Number(spec["replicas"])).toBeGreaterThanOrEqual(2);
    const podLabels = asObj(asObj(POD_TEMPLATE["metadata"])["labels"]);
    const matches = (selector: Obj): boolean =>
      Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => podLabels[k] === v);
    expect(matches(asObj(asObj(spec["selector"])["matchLabels"]))).toBe(true);
    const pdb = asObj(only("PodDisruptionBudget")["spec"]);
    expect(matches(asObj(asObj(pdb["selector"])["matchLabels"]))).toBe(true);
    // The budget must leave voluntary disruptions possible (else node drains hang) but never all at once.
    expect(pdb["maxUnavailable"] ?? 0).toBeLessThan(Number(spec["replicas"]));
    expect(matches(asObj(asObj(only("Service")["spec"])["selector"]))).toBe(true);
    expect(matches(asObj(asObj(asObj(only("NetworkPolicy")["spec"])["podSelector"])["matchLabels"]))).toBe(true);
    expect(CONTAINERS).toHaveLength(1);
  });

  it("the container's args are flags of `run` with valid values, and with the ConfigMap's file the configuration is complete", () => {
    expect(Object.keys(FLAGS).length).toBeGreaterThan(5);
    const s = agentSettings();
    expect(s.controlPlaneUrl).toMatch(/^https:\/\//);
  });

  it("the real CLI takes the container's args: `config print` with them (the ConfigMap's file in place) reports every flag and no problem", () => {
    const configPath = String(FLAGS["config"]);
    const { volume, rest } = mountOf(configPath);
    const cm = MANIFESTS.find(
      (m) => m.obj["kind"] === "ConfigMap" && asObj(m.obj["metadata"])["name"] === asObj(volume["configMap"])["name"],
    );
    const dir = mkdtempSync(join(tmpdir(), "oci-cred-agent-cm-"));
    try {
      const file = join(dir, rest);
      writeFileSync(file, String(asObj(cm?.obj["data"])[rest]));
      const argv = RUN_ARGS.slice(1).map((a) => (a === `--config=${configPath}` ? `--config=${file}` : a));
      expect(argv).toContain(`--config=${file}`);
      const r = spawnSync(AGENT_BIN, ["config", "print", "--format", "json", ...argv], {
        encoding: "utf8",
        env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", ...CONTAINER_ENV },
      });
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as { settings: { key: string; source: string }[]; problems: string[] };
      expect(out.problems).toEqual([]);
      for (const key of Object.keys(FLAGS)) expect(out.settings.find((x) => x.key === key)?.source, key).toBe("flag");
      expect(out.settings.find((x) => x.key === "control_plane_url")?.source).toBe("file");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("liveness probes GET /healthz and readiness GET /readyz on the --listen port, which is not loopback-only", () => {
    const s = agentSettings();
    expect(s.listen, "--listen is set").toBeDefined();
    expect(["0.0.0.0", "::", ""]).toContain(s.listen?.host);
    const portOf = (probe: Obj): number => {
      const port = asObj(probe["httpGet"])["port"];
      if (typeof port === "number") return port;
      const named = asArr(AGENT["ports"]).find((p) => p["name"] === port);
      expect(named, `the probe's port ${String(port)} is a container port`).toBeDefined();
      return Number(named?.["containerPort"]);
    };
    const live = asObj(AGENT["livenessProbe"]);
    const ready = asObj(AGENT["readinessProbe"]);
    expect(asObj(live["httpGet"])["path"]).toBe("/healthz");
    expect(asObj(ready["httpGet"])["path"]).toBe("/readyz");
    expect(portOf(live)).toBe(s.listen?.port);
    expect(portOf(ready)).toBe(s.listen?.port);
    const svcPort = asArr(asObj(only("Service")["spec"])["ports"])[0] ?? {};
    const target = svcPort["targetPort"];
    expect(
      typeof target === "number"
        ? target
        : Number(asArr(AGENT["ports"]).find((p) => p["name"] === target)?.["containerPort"]),
    ).toBe(s.listen?.port);
  });

  it("terminationGracePeriodSeconds exceeds the drain timeout plus the cancel grace", () => {
    const s = agentSettings();
    expect(Number(POD["terminationGracePeriodSeconds"]) * 1000).toBeGreaterThan(s.drainTimeoutMs + s.cancelGraceMs);
  });

  it("the path flags land on the right volumes: Secrets mounted as directories, credentials in memory, work on an emptyDir", () => {
    const s = agentSettings();
    // Keys: a directory of key files on a Secret volume, mounted whole (a subPath mount never sees updates).
    expect(s.keySource.kind).toBe("file");
    const keyPath = s.keySource.kind === "file" ? s.keySource.path : "";
    const keys = mountOf(keyPath);
    expect(keys.rest, "--key names the Secret's mount directory itself").toBe("");
    expect(asObj(keys.volume["secret"])["secretName"]).toBeDefined();
    // Token: a file on a Secret volume.
    const tokenFile = "file" in s.token ? s.token.file : "";
    const token = mountOf(tokenFile);
    expect(asObj(token.volume["secret"])["secretName"]).toBeDefined();
    expect(token.rest).toBe(basename(tokenFile));
    expect(dirname(tokenFile)).toBe(token.mount["mountPath"]);
    for (const m of MOUNTS) {
      const v = VOLUMES.find((x) => x["name"] === m["name"]) ?? {};
      if (v["secret"] === undefined && v["configMap"] === undefined) continue;
      expect(m["subPath"], `${String(m["name"])} is mounted as a directory`).toBeUndefined();
      expect(m["subPathExpr"], `${String(m["name"])} is mounted as a directory`).toBeUndefined();
      expect(m["readOnly"]).toBe(true);
      // Secret files: never writable, and not readable by others (owner root, group fsGroup).
      const mode = Number(asObj(v["secret"] ?? v["configMap"])["defaultMode"] ?? 0o644);
      expect(mode & 0o022, `${String(m["name"])} files are not writable by group or others`).toBe(0);
      if (v["secret"] !== undefined)
        expect(mode & 0o007, `${String(m["name"])} files are not readable by others`).toBe(0);
    }
    // Credentials: a directory the agent creates itself (it must own it) inside a Memory emptyDir.
    const creds = mountOf(s.credentialsDir);
    const credVol = asObj(creds.volume["emptyDir"]);
    expect(credVol["medium"]).toBe("Memory");
    expect(credVol["sizeLimit"]).toBeDefined();
    expect(creds.rest, "the credentials directory is below the mount point, so the agent creates and owns it").not.toBe(
      "",
    );
    expect(creds.mount["readOnly"] ?? false).toBe(false);
    // Work dir: the same, on an emptyDir with a size limit.
    const work = mountOf(s.workDir);
    expect(asObj(work.volume["emptyDir"])["sizeLimit"]).toBeDefined();
    expect(work.rest).not.toBe("");
    // The agent's HOME is on no volume the runner mounts (runs must not plant configuration
    // there); its TMPDIR is an emptyDir of its own.
    const home = CONTAINER_ENV["HOME"] ?? "";
    expect(home).not.toBe("");
    const homeVolume = MOUNTS.find((m) => home === m["mountPath"] || home.startsWith(`${String(m["mountPath"])}/`));
    expect(RUNNER_MOUNTS.map((m) => m["name"])).not.toContain(homeVolume?.["name"] ?? "(none)");
    const tmp = mountOf(CONTAINER_ENV["TMPDIR"] ?? "/tmp");
    expect(tmp.volume["emptyDir"]).toBeDefined();
    expect(RUNNER_MOUNTS.map((m) => m["name"])).not.toContain(tmp.mount["name"]);
    // The Secret names the docs tell operators to create.
    const doc = readFileSync(join(REPO, "docs/kubernetes.md"), "utf8");
    for (const v of VOLUMES.filter((x) => x["secret"] !== undefined))
      expect(doc).toContain(String(asObj(v["secret"])["secretName"]));
  });

  it("security context: non-root with a fixed uid, read-only root, no privilege escalation, no capabilities, RuntimeDefault seccomp, no API token", () => {
    const pod = asObj(POD["securityContext"]);
    const c = asObj(AGENT["securityContext"]);
    expect(pod["runAsNonRoot"]).toBe(true);
    expect(Number(pod["runAsUser"])).toBeGreaterThan(0);
    expect(asObj(pod["seccompProfile"])["type"]).toBe("RuntimeDefault");
    expect(c["allowPrivilegeEscalation"]).toBe(false);
    expect(c["readOnlyRootFilesystem"]).toBe(true);
    expect(c["privileged"] ?? false).toBe(false);
    expect(c["runAsNonRoot"] ?? pod["runAsNonRoot"]).toBe(true);
    expect(asObj(c["capabilities"])["drop"]).toContain("ALL");
    expect(asObj(c["capabilities"])["add"]).toBeUndefined();
    expect(asObj(c["seccompProfile"] ?? pod["seccompProfile"])["type"]).toBe("RuntimeDefault");
    expect(POD["automountServiceAccountToken"]).toBe(false);
    const sa = only("ServiceAccount");
    expect(sa["automountServiceAccountToken"]).toBe(false);
    expect(POD["serviceAccountName"]).toBe(asObj(sa["metadata"])["name"]);
    expect(POD["hostNetwork"] ?? false).toBe(false);
    expect(POD["hostPID"] ?? false).toBe(false);
  });
});

describe("Kubernetes manifests: the runner split (issue 14)", () => {
  const socket = argValue(RUNNER_ARGS, "--socket") ?? "";
  const volumeOf = (name: unknown): Obj => VOLUMES.find((v) => v["name"] === name) ?? {};

  it("the runner is a native sidecar (Kubernetes 1.29+): started before the agent, on the socket the agent's --executor names", () => {
    expect(RUNNER["restartPolicy"]).toBe("Always");
    expect(RUNNER["image"]).toBe(AGENT["image"]);
    expect(RUNNER_ARGS[0]).toBe("runner");
    expect(socket).toMatch(/^\//);
    expect(argValue(ARGS, "--executor")).toBe(`runner:${socket}`);
    // The socket's directory: one volume, mounted read-write at the same path in both containers.
    const inRunner = mountOf(socket, RUNNER_MOUNTS);
    const inAgent = mountOf(socket);
    expect(inAgent.mount["name"]).toBe(inRunner.mount["name"]);
    expect(inAgent.mount["mountPath"]).toBe(inRunner.mount["mountPath"]);
    expect(inAgent.mount["readOnly"] ?? false).toBe(false);
    expect(inRunner.mount["readOnly"] ?? false).toBe(false);
    expect(volumeOf(inRunner.mount["name"])["emptyDir"]).toBeDefined();
    // The agent starts once the socket is there.
    expect(JSON.stringify(asObj(RUNNER["startupProbe"])["exec"])).toContain(socket);
    expect(POD["shareProcessNamespace"] ?? false).toBe(false);
  });

  it("the runner holds no key, no token and no API token: no Secret or ConfigMap volume, no key or token flag or variable", () => {
    for (const m of RUNNER_MOUNTS) {
      const v = volumeOf(m["name"]);
      expect(v["secret"], `${String(m["name"])} is no Secret`).toBeUndefined();
      expect(v["configMap"], `${String(m["name"])} is no ConfigMap`).toBeUndefined();
      expect(v["projected"], `${String(m["name"])} is no projected volume (service-account token)`).toBeUndefined();
      expect(v["emptyDir"], `${String(m["name"])} is an emptyDir`).toBeDefined();
    }
    expect(POD["automountServiceAccountToken"]).toBe(false);
    expect(RUNNER_ARGS.join(" ")).not.toMatch(/--(key|key-file|token|token-file|token-env|config)\b/);
    for (const e of asArr(RUNNER["env"])) expect(String(e["name"])).not.toMatch(/KEY|TOKEN/);
    expect(RUNNER["envFrom"]).toBeUndefined();
  });

  it("the runner gets no cloud identity: the IRSA and AKS workload identity webhooks are told to skip it, and its env names none", () => {
    const annotations = asObj(asObj(POD_TEMPLATE["metadata"])["annotations"]);
    // EKS's list is comma-separated, Azure's semicolon-separated.
    expect(String(annotations["eks.amazonaws.com/skip-containers"]).split(",")).toContain(RUNNER["name"]);
    expect(String(annotations["azure.workload.identity/skip-containers"]).split(";")).toContain(RUNNER["name"]);
    for (const e of asArr(RUNNER["env"])) expect(isCloudIdentityVariable(String(e["name"]))).toBe(false);
    // The docs show the same annotations.
    const doc = readFileSync(join(REPO, "docs/kubernetes.md"), "utf8");
    expect(doc).toContain("eks.amazonaws.com/skip-containers: runner");
    expect(doc).toContain("azure.workload.identity/skip-containers: runner");
  });

  it("the runner is another non-root user than the agent, in the group the run files are shared with, with a complete security context", () => {
    const pod = asObj(POD["securityContext"]);
    const r = asObj(RUNNER["securityContext"]);
    const a = asObj(AGENT["securityContext"]);
    const runnerUid = Number(r["runAsUser"] ?? pod["runAsUser"]);
    const agentUid = Number(a["runAsUser"] ?? pod["runAsUser"]);
    expect(runnerUid).toBeGreaterThan(0);
    expect(agentUid).toBeGreaterThan(0);
    expect(runnerUid).not.toBe(agentUid);
    // fsGroup: the volumes' group and a supplementary group of both: the runner's own group.
    expect(pod["fsGroup"]).toBe(r["runAsGroup"]);
    expect(r["runAsNonRoot"] ?? pod["runAsNonRoot"]).toBe(true);
    expect(r["allowPrivilegeEscalation"]).toBe(false);
    expect(r["readOnlyRootFilesystem"]).toBe(true);
    expect(r["privileged"] ?? false).toBe(false);
    expect(asObj(r["capabilities"])["drop"]).toContain("ALL");
    expect(asObj(r["capabilities"])["add"]).toBeUndefined();
    expect(asObj(r["seccompProfile"] ?? pod["seccompProfile"])["type"]).toBe("RuntimeDefault");
    expect(asObj(asObj(RUNNER["resources"])["limits"])["memory"]).toBeDefined();
  });

  it("workspaces and credentials: the agent's directories, on the same volumes at the same paths; credentials in memory and read-only for the runner", () => {
    const s = agentSettings();
    expect(argValue(RUNNER_ARGS, "--work-dir")).toBe(s.workDir);
    expect(argValue(RUNNER_ARGS, "--credentials-dir")).toBe(s.credentialsDir);
    const work = { agent: mountOf(s.workDir), runner: mountOf(s.workDir, RUNNER_MOUNTS) };
    expect(work.runner.mount["name"]).toBe(work.agent.mount["name"]);
    expect(work.runner.mount["mountPath"]).toBe(work.agent.mount["mountPath"]);
    expect(work.runner.mount["readOnly"] ?? false).toBe(false);
    const creds = { agent: mountOf(s.credentialsDir), runner: mountOf(s.credentialsDir, RUNNER_MOUNTS) };
    expect(creds.runner.mount["name"]).toBe(creds.agent.mount["name"]);
    expect(creds.runner.mount["mountPath"]).toBe(creds.agent.mount["mountPath"]);
    expect(creds.runner.mount["readOnly"]).toBe(true);
    expect(asObj(volumeOf(creds.runner.mount["name"])["emptyDir"])["medium"]).toBe("Memory");
    // Each run's private HOME and TMPDIR: an emptyDir of the runner's own.
    const state = mountOf(argValue(RUNNER_ARGS, "--state-dir") ?? "", RUNNER_MOUNTS);
    expect(volumeOf(state.mount["name"])["emptyDir"]).toBeDefined();
    expect(MOUNTS.map((m) => m["name"])).not.toContain(state.mount["name"]);
  });

  it("one runner runs one run at a time: the ConfigMap's concurrency is 1", () => {
    expect(agentSettings().concurrency).toBe(1);
  });

  it("the real CLI takes the runner's args: in a PID namespace of its own, under tini, as the runner's uid, it listens and kills namespace-wide", async () => {
    const dir = mkdtempSync(join(tmpdir(), "oci-cred-agent-runner-args-"));
    let child: ReturnType<typeof spawn> | undefined;
    try {
      chmodSync(dir, 0o755);
      const uid = Number(asObj(RUNNER["securityContext"])["runAsUser"]);
      // Each of the runner's volumes becomes a directory of its user's here.
      const remap = (value: string): string => {
        const m = RUNNER_MOUNTS.find((x) => value === x["mountPath"] || value.startsWith(`${String(x["mountPath"])}/`));
        return m === undefined ? value : join(dir, String(m["name"]), posix.relative(String(m["mountPath"]), value));
      };
      for (const m of RUNNER_MOUNTS) {
        mkdirSync(join(dir, String(m["name"])));
        chownSync(join(dir, String(m["name"])), uid, uid);
      }
      const args = RUNNER_ARGS.map((a) => {
        const eq = a.indexOf("=");
        return eq < 0 ? a : `${a.slice(0, eq + 1)}${remap(a.slice(eq + 1))}`;
      });
      // Where the kernel lets a phase ptrace the runner (no Yama, as on some CI machines) the runner
      // refuses to start unless told to accept it; the manifest does not.
      const yama = ((): string => {
        try {
          return readFileSync("/proc/sys/kernel/yama/ptrace_scope", "utf8").trim();
        } catch {
          return "";
        }
      })();
      if (!(Number(yama) >= 1)) args.push("--allow-ptrace");
      child = spawn(
        "unshare",
        [
          "--pid",
          "--fork",
          "--mount-proc",
          "--kill-child",
          "tini",
          "--",
          "setpriv",
          `--reuid=${uid}`,
          `--regid=${uid}`,
          "--clear-groups",
          "--",
          AGENT_BIN,
          ...args,
        ],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      let out = "";
      child.stdout?.on("data", (c: Buffer) => (out += c.toString("utf8")));
      child.stderr?.on("data", (c: Buffer) => (out += c.toString("utf8")));
      const listening = await new Promise<Record<string, unknown>>((resolve, reject) => {
        child?.stdout?.on("data", () => {
          const line = out.split("\n").find((l) => l.includes('"runner_listening"'));
          if (line !== undefined) resolve(JSON.parse(line) as Record<string, unknown>);
        });
        child?.once("exit", () => {
          reject(new Error(`the runner exited: ${out}`));
        });
      });
      expect(listening["pid_namespace"]).toBe(true);
      expect(listening["socket"]).toBe(remap(socket));
      expect(statSync(remap(socket)).mode & 0o777).toBe(0o660);
    } finally {
      child?.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the NetworkPolicy admits only what scrapes the metrics port (the label docs/kubernetes.md says to change), and the probes' port is that port", () => {
    const spec = asObj(only("NetworkPolicy")["spec"]);
    expect(spec["policyTypes"]).toEqual(["Ingress"]);
    const rules = asArr(spec["ingress"]);
    expect(rules).toHaveLength(1);
    const rule = rules[0] ?? {};
    expect(asArr(rule["ports"])).toEqual([{ port: agentSettings().listen?.port, protocol: "TCP" }]);
    const from = asArr(rule["from"]);
    expect(from.length, "a rule without `from` admits everyone").toBeGreaterThan(0);
    for (const peer of from) {
      expect(peer["ipBlock"]).toBeUndefined();
      expect(Object.keys(asObj(asObj(peer["podSelector"])["matchLabels"])).length).toBeGreaterThan(0);
    }
    expect(asObj(asObj(from[0]?.["podSelector"])["matchLabels"])["app.kubernetes.io/name"]).toBe("prometheus");
    expect(readFileSync(join(REPO, "docs/kubernetes.md"), "utf8")).toContain("app.kubernetes.io/name: prometheus");
  });
});

describe("Dockerfile", () => {
  const text = readFileSync(join(REPO, "Dockerfile"), "utf8").replace(/\\\n/g, " ");
  const lines = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  const args = Object.fromEntries(
    lines.filter((l) => l.startsWith("ARG ")).map((l) => l.slice(4).split("=", 2) as [string, string]),
  );
  const expand = (s: string): string => s.replace(/\$\{(\w+)\}/g, (_, n: string) => expand(args[n] ?? ""));
  const stages: { from: string; name: string | undefined; lines: string[] }[] = [];
  for (const l of lines) {
    const m = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i.exec(l);
    if (m?.[1] !== undefined) stages.push({ from: expand(m[1]), name: m[2], lines: [] });
    else stages.at(-1)?.lines.push(l);
  }
  const stage = (name: string): { from: string; lines: string[] } => {
    const s = stages.find((x) => x.name === name);
    if (s === undefined) throw new Error(`no stage ${name}`);
    return s;
  };
  const runtime = stages.at(-1)!;

  it("is multi-stage: node:24 builds with npm ci and the build script, a slim runtime gets production dependencies only", () => {
    expect(stages.length).toBeGreaterThanOrEqual(3);
    const build = stage("build");
    expect(build.from).toMatch(/^node:24(\b|$)/);
    expect(build.lines.join("\n")).toMatch(/RUN npm ci\b/);
    expect(build.lines.join("\n")).toMatch(/RUN npm run build\b/);
    const pkg = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { scripts: Record<string, string> };
    expect(pkg.scripts["build"]).toContain("tsconfig.build.json");
    const deps = stage("deps");
    expect(deps.lines.join("\n")).toMatch(/RUN npm ci --omit=dev\b/);
    expect(runtime.from).toMatch(/^node:24-[\w.-]*slim$/);
    expect(runtime.lines).toContain("COPY --from=deps /src/node_modules ./node_modules");
    expect(runtime.lines).toContain("COPY --from=build /src/dist ./dist");
    expect(runtime.lines.join("\n")).not.toMatch(/npm (ci|install)(?![^\n]*--omit=dev)/);
  });

  it("runs as the Deployment's non-root uid, with the launcher as ENTRYPOINT and tofu from a build argument", () => {
    const user = runtime.lines
      .filter((l) => l.startsWith("USER "))
      .at(-1)
      ?.slice(5);
    const [uid, gid] = (user ?? "").split(":");
    expect(Number(uid)).toBeGreaterThan(0);
    const pod = asObj(POD["securityContext"]);
    expect(Number(uid)).toBe(pod["runAsUser"]);
    expect(Number(gid)).toBe(pod["runAsGroup"]);
    const entry = runtime.lines.find((l) => l.startsWith("ENTRYPOINT "));
    const argv = JSON.parse(entry?.slice("ENTRYPOINT ".length) ?? "[]") as string[];
    expect(argv.at(-1)).toMatch(/\/bin\/oci-cred-agent$/);
    expect(runtime.lines.join("\n")).toContain("COPY bin ./bin");
    expect(args["TOFU_VERSION"]).toMatch(/^\d+\.\d+\.\d+$/);
    expect(stage("tofu").from).toContain(args["TOFU_VERSION"]);
    expect(runtime.lines).toContain("COPY --from=tofu /usr/local/bin/tofu /usr/local/bin/tofu");
    const env = runtime.lines.filter((l) => l.startsWith("ENV ")).join(" ");
    const known = new Set(RUN_FIELDS.map((f) => f.env));
    for (const name of env.match(/OCI_CRED_AGENT_[A-Z_]+/g) ?? []) expect(known, name).toContain(name);
    expect(env).toContain("OCI_CRED_AGENT_TOFU_BIN=/usr/local/bin/tofu");
  });

  it("copies only what exists and what .dockerignore lets into the context", () => {
    const ignore = readFileSync(join(REPO, ".dockerignore"), "utf8")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"));
    expect(ignore[0], ".dockerignore is an allow-list").toBe("*");
    const allowed = new Set(ignore.filter((l) => l.startsWith("!")).map((l) => l.slice(1).replace(/\/$/, "")));
    for (const s of stages) {
      for (const l of s.lines.filter((x) => x.startsWith("COPY ") && !x.includes("--from="))) {
        const parts = l.split(/\s+/).slice(1);
        for (const src of parts.slice(0, -1)) {
          expect(existsSync(join(REPO, src)), `${src} exists`).toBe(true);
          expect(allowed.has(src.replace(/\/$/, "")), `${src} is allowed by .dockerignore`).toBe(true);
        }
      }
    }
  });
});

/**
 * Renders the run's Docker-style credential files from the selected credentials and the
 * operator's base Docker config. Pure: text in, text out.
 *
 * Two files, because the families disagree on keys and on `credHelpers`:
 * - docker/config.json, read by the Docker CLI family (through DOCKER_CONFIG) and by OpenTofu
 *   (named in `docker_style_config_files`). Docker Hub appears under both
 *   `https://index.docker.io/v1/` (Docker CLI) and `registry-1.docker.io` (OpenTofu; keys with a
 *   scheme never match there). When the base config has a `credsStore`, the Docker CLI would ask
 *   that store instead of reading `auths`; an empty `credHelpers` entry for each exported key
 *   makes it read `auths` (docker/cli configfile.getConfiguredCredentialStore), and OpenTofu
 *   skips empty helper names (docker_cli_credentials_config.go).
 * - containers/auth.json, read by skopeo/podman/buildah (through REGISTRY_AUTH_FILE), which
 *   would try to run `docker-credential-` for an empty helper, so it gets none.
 */
import { z } from "zod";
import { AgentError } from "./errors.js";
import type { SelectedCredential } from "./credential-selection.js";
import { identityOfConfigKey } from "./registry-address.js";

const authEntrySchema = z.looseObject({
  auth: z.string().optional(),
  username: z.string().optional(),
  password: z.string().optional(),
});

const baseConfigSchema = z.looseObject({
  auths: z.record(z.string(), z.union([authEntrySchema, z.null()])).optional(),
  credHelpers: z.record(z.string(), z.string()).optional(),
  credsStore: z.string().optional(),
});

export type DockerConfigDoc = z.infer<typeof baseConfigSchema>;
type AuthEntry = z.infer<typeof authEntrySchema>;

/** Parses the operator's base Docker config; field paths only in errors, never values. */
export function parseBaseDockerConfig(text: string, source: string): DockerConfigDoc {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new AgentError(
      "BASE_DOCKER_CONFIG_INVALID",
      `the base Docker config ${source} is not valid JSON; fix the file or drop --base-docker-config`,
      { source },
    );
  }
  const parsed = baseConfigSchema.safeParse(json);
  if (!parsed.success) {
    const fields = parsed.error.issues.map((i) => `${i.path.join(".") || "(top level)"}: ${i.message}`);
    throw new AgentError(
      "BASE_DOCKER_CONFIG_INVALID",
      `the base Docker config ${source} is not a Docker config file (${fields.join("; ")}); expected an object with "auths", "credHelpers" and "credsStore" as Docker writes them`,
      { source, fields },
    );
  }
  return parsed.data;
}

export function encodeAuth(username: string, password: string): string {
  return Buffer.from(`${username}:${password}`, "utf8").toString("base64");
}

export interface RenderedRegistryFiles {
  /** docker/config.json: Docker CLI family and OpenTofu. */
  readonly dockerConfig: string;
  /** containers/auth.json: containers family. */
  readonly containersAuth: string;
  /** Base config entries that were dropped because an exported credential serves that registry. */
  readonly overridden: readonly { readonly key: string; readonly kind: "auths" | "credHelpers" }[];
}

/** OpenTofu reads only `auth`; give base entries written as username/password one. */
function normalizeBaseAuth(entry: AuthEntry | null): AuthEntry | null {
  if (entry === null) return null;
  if ((entry.auth === undefined || entry.auth === "") && entry.username !== undefined && entry.password !== undefined) {
    return { ...entry, auth: encodeAuth(entry.username, entry.password) };
  }
  return entry;
}

export function renderRegistryFiles(
  selected: readonly SelectedCredential[],
  base: DockerConfigDoc | undefined,
): RenderedRegistryFiles {
  // A host-level export overrides every base entry of that host; a scoped export only the same key.
  const hostLevel = new Set(selected.filter((s) => s.target.path === undefined).map((s) => s.target.registry));
  const scoped = new Set(selected.filter((s) => s.target.path !== undefined).map((s) => s.target.registry));
  const overridden: { key: string; kind: "auths" | "credHelpers" }[] = [];
  const isExported = (key: string): boolean => {
    const id = identityOfConfigKey(key);
    if (id === undefined) return false;
    return hostLevel.has(id.split("/")[0] ?? id) || scoped.has(id);
  };

  const keptAuths: Record<string, AuthEntry | null> = {};
  for (const [key, entry] of Object.entries(base?.auths ?? {})) {
    if (isExported(key)) overridden.push({ key, kind: "auths" });
    else keptAuths[key] = normalizeBaseAuth(entry);
  }
  const keptHelpers: Record<string, string> = {};
  for (const [key, helper] of Object.entries(base?.credHelpers ?? {})) {
    if (isExported(key)) overridden.push({ key, kind: "credHelpers" });
    else keptHelpers[key] = helper;
  }

  // The exported entries are written as JSON text directly: for 10,000 registries, building
  // dictionary-mode objects and stringifying them costs several times more. Keys are unique:
  // base entries of exported registries were dropped above, and selection is one per registry.
  const credsStore = base?.credsStore;
  const dockerAuths: string[] = Object.entries(keptAuths).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`);
  const containersAuths: string[] = [...dockerAuths];
  const keptHelperParts = Object.entries(keptHelpers).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`);
  const dockerHelpers: string[] = [...keptHelperParts];
  const containersHelpers: string[] = [...keptHelperParts];
  for (const { target, entry } of selected) {
    const { docker, opentofu, containers } = target.keys;
    const dockerKey = docker === undefined ? undefined : JSON.stringify(docker);
    const tofuKey = JSON.stringify(opentofu);
    const containersKey = JSON.stringify(containers);
    if (entry.credentialHelper !== undefined) {
      // OpenTofu and the Docker CLI run `docker-credential-<name> get` for credHelpers[host].
      const helper = JSON.stringify(entry.credentialHelper);
      if (dockerKey !== undefined && dockerKey !== tofuKey) dockerHelpers.push(`${dockerKey}:${helper}`);
      dockerHelpers.push(`${tofuKey}:${helper}`);
      containersHelpers.push(`${containersKey}:${helper}`);
      continue;
    }
    // base64 needs no JSON escaping.
    const value = `{"auth":"${encodeAuth(entry.username, entry.password)}"}`;
    if (dockerKey !== undefined) {
      if (dockerKey !== tofuKey) dockerAuths.push(`${dockerKey}:${value}`);
      if (credsStore !== undefined && credsStore !== "") dockerHelpers.push(`${dockerKey}:""`);
    }
    dockerAuths.push(`${tofuKey}:${value}`);
    containersAuths.push(`${containersKey}:${value}`);
  }

  // The rest of the operator's document (credsStore, proxies, ...) is kept, auths first.
  const rest: Record<string, unknown> = { ...(base ?? {}) };
  delete rest["auths"];
  delete rest["credHelpers"];
  const restJson = JSON.stringify(rest).slice(1, -1);
  const dockerParts = [`"auths":{${dockerAuths.join(",")}}`];
  if (dockerHelpers.length > 0) dockerParts.push(`"credHelpers":{${dockerHelpers.join(",")}}`);
  if (restJson !== "") dockerParts.push(restJson);
  const containersParts = [`"auths":{${containersAuths.join(",")}}`];
  if (containersHelpers.length > 0) containersParts.push(`"credHelpers":{${containersHelpers.join(",")}}`);

  return {
    dockerConfig: `{${dockerParts.join(",")}}\n`,
    containersAuth: `{${containersParts.join(",")}}\n`,
    overridden,
  };
}

/**
 * Which credential OpenTofu would use for an `oci://` address, following its lookup rules
 * (internal/command/cliconfig/oci_credentials.go, ociauthconfig/docker_cli_credentials_config.go):
 * the CLI configuration (TF_CLI_CONFIG_FILE, else ~/.tofurc / ~/.terraformrc), its
 * `oci_default_credentials` block, the Docker-style files (fixed list, or the ambient search),
 * exact case-sensitive host matching, path-scoped keys by specificity, `auth` split at the first
 * colon. Pure: the environment and a file reader are passed in. Used by `dev`'s tofu stand-in
 * and by the tests' stand-in tofu.
 */
import { HclScanError, scanTopLevel } from "./hcl-top-level.js";
import { parseOciAddress } from "./oci-address.js";
import { withoutScheme } from "./registry-address.js";
import { scopeSpecificity } from "./repository-scope.js";
import { tofuCliConfigLocations } from "./tofu-cli-config-locations.js";

export interface Resolution {
  readonly source: "static" | "helper" | "none";
  readonly username?: string;
  readonly password?: string;
  readonly helper?: string;
  /** The Docker-style file the credential came from, and its key. */
  readonly file?: string;
  readonly key?: string;
  /** Why nothing was found, or why OpenTofu would fail. */
  readonly error?: string;
}

type Env = Readonly<Record<string, string | undefined>>;
type ReadFile = (path: string) => string | undefined;

interface DefaultCredentials {
  discoverAmbient: boolean;
  files: string[] | undefined;
  helper: string | undefined;
}

function joinPath(dir: string, rel: string): string {
  return rel.startsWith("/") ? rel : `${dir.replace(/\/+$/, "")}/${rel}`;
}

function dirnameOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

/** Reads the simple attributes of an HCL body: strings, booleans, lists of strings. */
function readBodyAttributes(body: string): Map<string, string | boolean | string[]> {
  const out = new Map<string, string | boolean | string[]>();
  const re = /([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(\[[^\]]*\]|"(?:[^"\\]|\\.)*"|true|false)/g;
  for (const m of body.matchAll(re)) {
    const [, name, raw] = m;
    if (name === undefined || raw === undefined) continue;
    if (raw === "true" || raw === "false") out.set(name, raw === "true");
    else if (raw.startsWith("["))
      out.set(
        name,
        [...raw.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((x) => JSON.parse(`"${x[1] ?? ""}"`) as string),
      );
    else out.set(name, JSON.parse(raw) as string);
  }
  return out;
}

function defaultCredentialsFrom(text: string, path: string): DefaultCredentials | { error: string } | undefined {
  if (text.trimStart().startsWith("{")) {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      return { error: `${path} is not valid JSON` };
    }
    const block = (doc as Record<string, unknown> | null)?.["oci_default_credentials"] as
      Record<string, unknown> | undefined;
    if (block === undefined) return undefined;
    const files = block["docker_style_config_files"];
    const helper = block["docker_credentials_helper"];
    return {
      discoverAmbient: block["discover_ambient_credentials"] !== false,
      files: Array.isArray(files)
        ? files.filter((x): x is string => typeof x === "string").map((f) => joinPath(dirnameOf(path), f))
        : undefined,
      helper: typeof helper === "string" ? helper : undefined,
    };
  }
  let items;
  try {
    items = scanTopLevel(text);
  } catch (error) {
    return { error: `${path} cannot be parsed (${error instanceof HclScanError ? error.message : "syntax error"})` };
  }
  const blocks = items.filter((i) => i.name === "oci_default_credentials" && i.kind === "block");
  if (blocks.length > 1) return { error: `${path} has more than one oci_default_credentials block` };
  const block = blocks[0];
  if (!block) return undefined;
  const inner = text.slice(text.indexOf("{", block.start) + 1, block.end - 1);
  const attrs = readBodyAttributes(inner);
  const files = attrs.get("docker_style_config_files");
  const helper = attrs.get("docker_credentials_helper");
  return {
    discoverAmbient: attrs.get("discover_ambient_credentials") !== false,
    files: Array.isArray(files) ? files.map((f) => joinPath(dirnameOf(path), f)) : undefined,
    helper: typeof helper === "string" ? helper : undefined,
  };
}

interface OciCredentialsBlock {
  readonly label: string;
  readonly username: string | undefined;
  readonly password: string | undefined;
  readonly helper: string | undefined;
}

/**
 * The `oci_credentials "<host[:port][/path]>"` blocks of a CLI configuration (HCL or JSON).
 * OpenTofu considers them before any Docker-style file (explicit wins a specificity tie).
 */
function ociCredentialsBlocksFrom(text: string): OciCredentialsBlock[] {
  const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
  if (text.trimStart().startsWith("{")) {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      return [];
    }
    const raw = (doc as Record<string, unknown> | null)?.["oci_credentials"];
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return [];
    return Object.entries(raw as Record<string, unknown>).flatMap(([label, body]) =>
      (Array.isArray(body) ? body : [body])
        .filter((b): b is Record<string, unknown> => typeof b === "object" && b !== null)
        .map((b) => ({
          label,
          username: str(b["username"]),
          password: str(b["password"]),
          helper: str(b["docker_credentials_helper"]),
        })),
    );
  }
  let items;
  try {
    items = scanTopLevel(text);
  } catch {
    return [];
  }
  return items
    .filter((i) => i.name === "oci_credentials" && i.kind === "block" && i.labels[0] !== undefined)
    .map((i) => {
      const attrs = readBodyAttributes(text.slice(text.indexOf("{", i.start) + 1, i.end - 1));
      return {
        label: i.labels[0] ?? "",
        username: str(attrs.get("username")),
        password: str(attrs.get("password")),
        helper: str(attrs.get("docker_credentials_helper")),
      };
    });
}

/** The CLI configuration file OpenTofu reads, if there is one (the configuration directory's files are not read here). */
function cliConfigPath(env: Env, readFile: ReadFile): string | undefined {
  const { file } = tofuCliConfigLocations(env, "");
  return [...file.candidates, file.otherwise].find((path) => readFile(path) !== undefined);
}

function ambientFiles(env: Env): string[] {
  const home = env["HOME"] ?? "";
  const out: string[] = [];
  if (env["XDG_RUNTIME_DIR"]) out.push(`${env["XDG_RUNTIME_DIR"]}/containers/auth.json`);
  out.push(`${env["XDG_CONFIG_HOME"] || `${home}/.config`}/containers/auth.json`);
  out.push(`${home}/.docker/config.json`, `${home}/.dockercfg`);
  return out.filter((p, i) => out.indexOf(p) === i);
}

/** OpenTofu's specificity: 0 no match, 2 for a host key, 2 + N for N matching path segments. */
export function keySpecificity(key: string, host: string, repository: string): number {
  if (key === "" || withoutScheme(key) !== key) return 0;
  const slash = key.indexOf("/");
  const keyHost = slash < 0 ? key : key.slice(0, slash);
  if (keyHost !== host) return 0;
  const specificity = scopeSpecificity(slash < 0 ? undefined : key.slice(slash + 1), repository);
  return specificity === undefined ? 0 : 2 + specificity;
}

interface Candidate {
  specificity: number;
  order: number;
  resolution: Resolution;
}

function candidatesFromFile(path: string, text: string, host: string, repository: string, order: number): Candidate[] {
  const doc = JSON.parse(text) as {
    auths?: Record<string, { auth?: unknown } | null>;
    credHelpers?: Record<string, unknown>;
    credsStore?: unknown;
  };
  const out: Candidate[] = [];
  for (const [key, entry] of Object.entries(doc.auths ?? {})) {
    const specificity = keySpecificity(key, host, repository);
    if (specificity === 0 || entry === null || typeof entry.auth !== "string" || entry.auth === "") continue;
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    out.push({
      specificity,
      order,
      resolution:
        colon < 0
          ? {
              source: "none",
              file: path,
              key,
              error: `auth for ${JSON.stringify(key)} in ${path} is not base64 username:password`,
            }
          : {
              source: "static",
              username: decoded.slice(0, colon),
              password: decoded.slice(colon + 1),
              file: path,
              key,
            },
    });
  }
  const helper = doc.credHelpers?.[host];
  if (typeof helper === "string" && helper !== "")
    out.push({ specificity: 2, order: order + 0.5, resolution: { source: "helper", helper, file: path, key: host } });
  if (typeof doc.credsStore === "string" && doc.credsStore !== "")
    out.push({
      specificity: 1,
      order: order + 0.5,
      resolution: { source: "helper", helper: doc.credsStore, file: path, key: "(credsStore)" },
    });
  return out;
}

export function resolveOpenTofuCredential(address: string, env: Env, readFile: ReadFile): Resolution {
  const parsed = parseOciAddress(address);
  if (parsed === undefined) return { source: "none", error: `${address} is not an oci://host/repository address` };
  const { host, repository } = parsed;

  let defaults: DefaultCredentials = { discoverAmbient: true, files: undefined, helper: undefined };
  const candidates: Candidate[] = [];
  const configPath = cliConfigPath(env, readFile);
  if (configPath !== undefined) {
    const text = readFile(configPath);
    if (text !== undefined) {
      const parsed = defaultCredentialsFrom(text, configPath);
      if (parsed && "error" in parsed) return { source: "none", error: parsed.error };
      if (parsed) defaults = parsed;
      // Explicit blocks come first: on equal specificity they beat every Docker-style file.
      for (const block of ociCredentialsBlocksFrom(text)) {
        const specificity = keySpecificity(block.label, host, repository);
        if (specificity === 0) continue;
        const resolution: Resolution =
          block.helper !== undefined
            ? { source: "helper", helper: block.helper, file: configPath, key: block.label }
            : block.username !== undefined && block.password !== undefined
              ? {
                  source: "static",
                  username: block.username,
                  password: block.password,
                  file: configPath,
                  key: block.label,
                }
              : {
                  source: "none",
                  file: configPath,
                  key: block.label,
                  error: `oci_credentials "${block.label}" in ${configPath} has neither username and password nor docker_credentials_helper`,
                };
        candidates.push({ specificity, order: -2, resolution });
      }
    }
  }

  if (defaults.discoverAmbient) {
    if (defaults.files !== undefined) {
      for (const [i, path] of defaults.files.entries()) {
        const text = readFile(path);
        if (text === undefined)
          return {
            source: "none",
            error: `docker_style_config_files names ${path}, which does not exist (tofu init fails)`,
          };
        try {
          candidates.push(...candidatesFromFile(path, text, host, repository, i));
        } catch {
          return { source: "none", error: `${path} is not valid JSON (tofu init fails)` };
        }
      }
    } else {
      const found: Candidate[] = [];
      for (const [i, path] of ambientFiles(env).entries()) {
        const text = readFile(path);
        if (text === undefined) continue;
        try {
          found.push(...candidatesFromFile(path, text, host, repository, i));
        } catch {
          // One ambient file that fails to parse drops every ambient file.
          return {
            source: "none",
            error: `the ambient file ${path} does not parse, so OpenTofu ignores every ambient credentials file`,
          };
        }
      }
      candidates.push(...found);
    }
  }
  // The configured global helper has the lowest specificity but comes before the files on a tie.
  if (defaults.helper !== undefined)
    candidates.push({
      specificity: 1,
      order: -1,
      resolution: { source: "helper", helper: defaults.helper, key: "(docker_credentials_helper)" },
    });
  if (candidates.length === 0) return { source: "none" };
  candidates.sort((a, b) => b.specificity - a.specificity || a.order - b.order);
  return candidates[0]?.resolution ?? { source: "none" };
}

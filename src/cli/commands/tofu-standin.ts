/**
 * `oci-cred-agent tofu-standin <phase>`: what `dev` runs when no `tofu` is on PATH. It is
 * clearly labelled as a stand-in; for every `oci://` module source of the configuration it
 * shows which credential OpenTofu's lookup rules pick, and from which file, using only the
 * environment the agent gave the phase. It never prints a secret.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { resolveOpenTofuCredential } from "../../core/opentofu-resolver.js";

export function ociSources(dir: string): { file: string; address: string }[] {
  const out: { file: string; address: string }[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !entry.name.endsWith(".tf")) continue;
    const path = join(entry.parentPath, entry.name);
    for (const m of readFileSync(path, "utf8").matchAll(/source\s*=\s*"(oci:\/\/[^"]+)"/g)) {
      if (m[1]) out.push({ file: path.slice(dir.length + 1), address: m[1] });
    }
  }
  return out;
}

function readOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

export function tofuStandin(phase: string): number {
  const lines = [`[stand-in for tofu ${phase}: no tofu executable was found on PATH, so oci-cred-agent shows what OpenTofu would do]`];
  for (const { file, address } of ociSources(process.cwd())) {
    const r = resolveOpenTofuCredential(address.replace(/\?.*$/, ""), process.env, readOrUndefined);
    if (r.source === "static") {
      lines.push(`${file}: ${address} -> credential of user ${r.username ?? "?"} (key ${JSON.stringify(r.key)} in ${r.file ?? "?"})`);
    } else if (r.source === "helper") {
      lines.push(`${file}: ${address} -> credential helper docker-credential-${r.helper ?? "?"}`);
    } else {
      const hint = /^oci:\/\/docker\.io\//.test(address)
        ? "; OpenTofu never sends credentials to docker.io: write the source as oci://registry-1.docker.io/..."
        : "";
      lines.push(`${file}: ${address} -> no credential: OpenTofu would pull anonymously${r.error ? ` (${r.error})` : ""}${hint}`);
    }
  }
  process.stdout.write(`${lines.join("\n")}\n`);
  return 0;
}

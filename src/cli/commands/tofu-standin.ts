/**
 * `oci-cred-agent tofu-standin <phase>`: what `dev` runs when no `tofu` is on PATH. It is
 * clearly labelled as a stand-in; for every `oci://` module source of the configuration it
 * shows which credential OpenTofu's lookup rules pick, and from which file, using only the
 * environment the agent gave the phase. It never prints a secret.
 */
import { readFileSync } from "node:fs";
import { resolveOpenTofuCredential } from "../../core/opentofu-resolver.js";
import { findOciSources } from "../../fs/oci-sources.js";

function readOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

export async function tofuStandin(phase: string): Promise<number> {
  const lines = [
    `[stand-in for tofu ${phase}: no tofu executable was found on PATH, so oci-cred-agent shows what OpenTofu would do]`,
  ];
  for (const { file, address, host } of await findOciSources(process.cwd())) {
    const r = resolveOpenTofuCredential(address, process.env, readOrUndefined);
    if (r.source === "static") {
      lines.push(
        `${file}: ${address} -> credential of user ${r.username ?? "?"} (key ${JSON.stringify(r.key)} in ${r.file ?? "?"})`,
      );
    } else if (r.source === "helper") {
      lines.push(`${file}: ${address} -> credential helper docker-credential-${r.helper ?? "?"}`);
    } else {
      const hint =
        host === "docker.io"
          ? "; OpenTofu never sends credentials to docker.io: write the source as oci://registry-1.docker.io/..."
          : "";
      lines.push(
        `${file}: ${address} -> no credential: OpenTofu would pull anonymously${r.error ? ` (${r.error})` : ""}${hint}`,
      );
    }
  }
  process.stdout.write(`${lines.join("\n")}\n`);
  return 0;
}

/**
 * Finds the `oci://` module sources a run's configuration names (in its .tf and .tf.json files),
 * for the check before init (which repositories to ask a pull scope for), the docker.io warning,
 * and dev's stand-in.
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

export interface OciSource {
  /** Path relative to the configuration directory. */
  readonly file: string;
  readonly address: string;
  readonly host: string;
  readonly repository: string;
}

const SOURCE = /"source"\s*:\s*"(oci:\/\/[^"]+)"|source\s*=\s*"(oci:\/\/[^"]+)"/g;

function parseOciAddress(address: string): { host: string; repository: string } | undefined {
  const m = /^oci:\/\/([^/?#]+)\/([^?#]+)/.exec(address);
  return m?.[1] && m[2] ? { host: m[1], repository: m[2].replace(/\/+$/, "") } : undefined;
}

export async function findOciSources(dir: string): Promise<OciSource[]> {
  const out: OciSource[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !(entry.name.endsWith(".tf") || entry.name.endsWith(".tf.json"))) continue;
    if (entry.parentPath.split("/").includes(".terraform")) continue;
    const path = join(entry.parentPath, entry.name);
    const text = await readFile(path, "utf8");
    for (const m of text.matchAll(SOURCE)) {
      const address = m[1] ?? m[2];
      const parsed = address === undefined ? undefined : parseOciAddress(address);
      if (address !== undefined && parsed) out.push({ file: path.slice(dir.length + 1), address, ...parsed });
    }
  }
  return out;
}

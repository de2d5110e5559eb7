/**
 * What the configuration's `oci://` sources say before init: which ones OpenTofu will pull
 * anonymously whatever credentials exist (Docker Hub under a name other than
 * registry-1.docker.io: OpenTofu has no aliasing), and which repositories each registry serves
 * (the pull scopes of the pre-flight check). Pure.
 */
import { ociAddress } from "./oci-address.js";
import { DOCKER_HUB_ALIASES, DOCKER_HUB_KEYS, registryOfConfigKey } from "./registry-address.js";

export interface SourceRef {
  readonly host: string;
  readonly repository: string;
}

/** Sources OpenTofu pulls anonymously, each with the address that would get credentials. */
export function anonymousDockerHubSources<S extends SourceRef>(sources: readonly S[]): { source: S; fix: string }[] {
  return sources
    .filter((s) => {
      const host = s.host.toLowerCase();
      return DOCKER_HUB_ALIASES.has(host) && host !== DOCKER_HUB_KEYS.opentofu;
    })
    .map((source) => ({ source, fix: ociAddress(DOCKER_HUB_KEYS.opentofu, source.repository) }));
}

/** Repositories by registry identity (`docker.io` for every Docker Hub name), each listed once. */
export function repositoriesByRegistry(sources: readonly SourceRef[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const s of sources) {
    const registry = registryOfConfigKey(s.host);
    if (registry === undefined) continue;
    const list = out.get(registry) ?? [];
    if (!list.includes(s.repository)) list.push(s.repository);
    out.set(registry, list);
  }
  return out;
}

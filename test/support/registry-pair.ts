/**
 * The integration tests' registries: one htpasswd registry and one token-auth registry (both
 * real docker-registry over TLS), a module package, and the package pushed to each given
 * repository by a `pusher` user that may push anywhere. Whatever started is stopped by stop(),
 * even when something else failed to start.
 */
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildModulePackage, pushModulePackage, type ModulePackage } from "./oci-module-package.js";
import {
  startHtpasswdRegistry,
  startTokenRegistry,
  type LocalRegistry,
  type TokenRegistry,
  type TokenUser,
} from "./registry-fixture.js";

export interface RegistryPair {
  readonly registry: LocalRegistry;
  readonly tokenRegistry: TokenRegistry;
  readonly pkg: ModulePackage;
  stop(): Promise<void>;
}

export async function startRegistryPair(options: {
  readonly pusherPassword: string;
  /** htpasswd users besides `pusher`. */
  readonly htpasswdUsers: Readonly<Record<string, string>>;
  /** token-registry users besides `pusher`. */
  readonly tokenUsers: Readonly<Record<string, TokenUser>>;
  readonly tag: string;
  readonly htpasswdRepositories: readonly string[];
  readonly tokenRepositories: readonly string[];
}): Promise<RegistryPair> {
  const [r, t, p] = await Promise.allSettled([
    startHtpasswdRegistry({ pusher: options.pusherPassword, ...options.htpasswdUsers }),
    startTokenRegistry({
      pusher: { password: options.pusherPassword, acl: [{ pattern: "*", actions: ["pull", "push"] }] },
      ...options.tokenUsers,
    }),
    buildModulePackage({
      layoutDir: join(tmpdir(), `oca-it-modpkg-${randomBytes(4).toString("hex")}`),
      tag: options.tag,
    }),
  ]);
  const cleanups: (() => Promise<void>)[] = [];
  if (r.status === "fulfilled") cleanups.push(() => r.value.stop());
  if (t.status === "fulfilled") cleanups.push(() => t.value.stop());
  if (p.status === "fulfilled") cleanups.push(() => rm(p.value.layoutDir, { recursive: true, force: true }));
  const stop = async (): Promise<void> => {
    await Promise.all(cleanups.map((c) => c()));
  };
  if (r.status === "rejected" || t.status === "rejected" || p.status === "rejected") {
    await stop();
    throw [r, t, p].find((x) => x.status === "rejected")?.reason;
  }
  const pair = { registry: r.value, tokenRegistry: t.value, pkg: p.value, stop };
  const pusher = { username: "pusher", password: options.pusherPassword };
  await Promise.all([
    ...options.htpasswdRepositories.map((repository) =>
      pushModulePackage(pair.pkg, { host: pair.registry.host, repository, certDir: pair.registry.certDir, ...pusher }),
    ),
    ...options.tokenRepositories.map((repository) =>
      pushModulePackage(pair.pkg, {
        host: pair.tokenRegistry.host,
        repository,
        certDir: pair.tokenRegistry.certDir,
        ...pusher,
      }),
    ),
  ]);
  return pair;
}

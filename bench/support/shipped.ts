/**
 * The benchmark measures the code that ships: the tsc build in dist/ (`npm run bench` builds it
 * first), not src/ through tsx, whose transform adds work (`__name` wrappers) that the product
 * never runs. Types come from src/.
 */
import type * as MaterializeRunModule from "../../src/credentials/materialize.js";
import type * as ServerModule from "../../src/control-plane/server.js";
import type * as SqliteStorageModule from "../../src/control-plane/sqlite-storage.js";
import type * as AgentKeyModule from "../../src/crypto/agent-key.js";
import type * as SealedBundleModule from "../../src/crypto/sealed-bundle.js";
import type * as RunDirModule from "../../src/fs/run-dir.js";
import type * as SecureFsModule from "../../src/fs/secure-fs.js";

type MaterializeRun = typeof MaterializeRunModule;
type Server = typeof ServerModule;
type SqliteStorageType = typeof SqliteStorageModule;
type AgentKey = typeof AgentKeyModule;
type SealedBundle = typeof SealedBundleModule;
type RunDir = typeof RunDirModule;
type SecureFs = typeof SecureFsModule;

const dist = (path: string): string => new URL(`../../dist/${path}`, import.meta.url).href;

export const { materializeRun } = (await import(dist("credentials/materialize.js"))) as MaterializeRun;
export const { createControlPlane } = (await import(dist("control-plane/server.js"))) as Server;
export const { SqliteStorage } = (await import(dist("control-plane/sqlite-storage.js"))) as SqliteStorageType;
export const { generatePrivateKeyPem, parsePrivateKeyPem, publicKeyDoc } = (await import(
  dist("crypto/agent-key.js")
)) as AgentKey;
export const { sealBundle, openChallenge } = (await import(dist("crypto/sealed-bundle.js"))) as SealedBundle;
export const { wipeRunDir } = (await import(dist("fs/run-dir.js"))) as RunDir;
export const { realFs } = (await import(dist("fs/secure-fs.js"))) as SecureFs;

/**
 * Open and write in one step: what `oci-cred-agent materialize` does for a script, and what
 * tests and benchmarks use. The run's credentials stay on disk until `wipe`.
 */
import type { CloudMinter } from "../core/cloud-auth.js";
import type { IgnoredEntry } from "../core/credential-selection.js";
import type { FileSystem } from "../fs/secure-fs.js";
import { prepareOperatorConfig, type OperatorConfigTexts } from "./operator-config.js";
import { RunCredentials, type MaterializedRegistry, type OpenRequest, type WipeListener } from "./run-credentials.js";

/** How long materialize waits for cloud credentials (the minter bounds each mint at 30 s). */
const MINT_WAIT_MS = 35_000;

export interface MaterializeRequest extends Omit<OpenRequest, "onWipe">, OperatorConfigTexts {
  readonly runDir: string;
  readonly fs: FileSystem;
  readonly helperExists?: (name: string) => Promise<boolean>;
  /** Mints the credentials of `cloud_auth` entries; without it such an entry is refused (CLOUD_AUTH_FAILED). */
  readonly cloudMinter?: CloudMinter;
  /** Told about the cleanup wipe when a write fails part-way (its failure is also in the thrown error). */
  readonly onWipe?: WipeListener;
}

export interface MaterializeResult {
  readonly runDir: string;
  readonly env: Readonly<Record<string, string>>;
  readonly registries: readonly MaterializedRegistry[];
  readonly ignored: readonly IgnoredEntry[];
  readonly warnings: readonly string[];
  readonly bundleId: string;
}

export async function materializeRun(request: MaterializeRequest): Promise<MaterializeResult> {
  const operator = prepareOperatorConfig(request);
  const credentials = await RunCredentials.open({ ...request, onWipe: request.onWipe ?? (() => undefined) });
  await credentials.mintCloud(request.cloudMinter, AbortSignal.timeout(MINT_WAIT_MS));
  const written = await credentials.write({
    runDir: request.runDir,
    fs: request.fs,
    operator,
    ...(request.helperExists === undefined ? {} : { helperExists: request.helperExists }),
  });
  return {
    ...written,
    registries: credentials.registries,
    ignored: credentials.ignored,
    bundleId: credentials.bundleId,
  };
}

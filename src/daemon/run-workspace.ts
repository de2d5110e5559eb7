/**
 * One run's workspace: the configuration archive fetched (inline in the lease, or from the
 * control plane), checked against the lease's checksum, extracted into a directory of its own,
 * scanned for `oci://` sources, and removed when the run ends.
 */
import { rm } from "node:fs/promises";
import type { ArchiveLimits } from "../core/tar-archive.js";
import { extractConfiguration, verifyChecksum } from "../fs/config-workspace.js";
import { findOciSources, type OciSource } from "../fs/oci-sources.js";
import type { Lease } from "../protocol/agent-api.js";
import type { ControlPlaneClient } from "./control-plane-client.js";

/** Room for the archive's own gzip and tar overhead above the expanded-size limit. */
const ARCHIVE_DOWNLOAD_SLACK_BYTES = 1024 * 1024;

export class RunWorkspace {
  constructor(readonly dir: string) {}

  /** Fetches, verifies and extracts the run's configuration; `signal` (the run's end) stops the download. */
  async prepare(
    lease: Lease,
    client: ControlPlaneClient,
    limits: ArchiveLimits,
    signal: AbortSignal,
  ): Promise<{ files: number; bytes: number }> {
    const { inline_base64: inline, sha256 } = lease.run.configuration;
    const archive =
      inline !== undefined
        ? Buffer.from(inline, "base64")
        : await client.configuration(lease.lease_id, limits.maxBytes + ARCHIVE_DOWNLOAD_SLACK_BYTES, signal);
    verifyChecksum(archive, sha256);
    return extractConfiguration(archive, this.dir, limits);
  }

  /** The configuration's `oci://` module sources. */
  sources(): Promise<OciSource[]> {
    return findOciSources(this.dir);
  }

  /** Removes the workspace and everything in it; rejects with the file system's error. */
  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * `oci://host[:port]/repository[?tag=...|?digest=...]`, the module source addresses OpenTofu
 * installs from an OCI registry. One parser for the configuration scan, the pre-flight scopes,
 * the docker.io warning and the OpenTofu lookup. Pure.
 */

export interface OciAddress {
  /** `host[:port]` exactly as written (OpenTofu matches credential keys case-sensitively). */
  readonly host: string;
  /** The repository path, without a query, a fragment or trailing slashes. */
  readonly repository: string;
}

/** Parses an `oci://host/repository` address; undefined when it is not one. */
export function parseOciAddress(address: string): OciAddress | undefined {
  const m = /^oci:\/\/([^/?#]+)\/([^?#]+)/.exec(address);
  return m?.[1] && m[2] ? { host: m[1], repository: m[2].replace(/\/+$/, "") } : undefined;
}

/** The address of `repository` on `host` (no tag or digest). */
export function ociAddress(host: string, repository: string): string {
  return `oci://${host}/${repository}`;
}

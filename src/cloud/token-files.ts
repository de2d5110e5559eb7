/**
 * The content of the token files a cloud's SDK sends (a projected service-account token, a pod
 * identity token), read by the minters only to take them out of a refusal should the cloud
 * echo them (core/cloud-auth.ts, scrubCloudText). Never logged, never kept.
 */
import { readFileSync } from "node:fs";

/** A real token file is a few KiB; a larger one is not read. */
const MAX_TOKEN_FILE_BYTES = 64 * 1024;

/** The file's content, or undefined when there is none to read. */
export function readTokenFile(path: string | undefined): string | undefined {
  if (path === undefined || path === "") return undefined;
  try {
    const buffer = readFileSync(path);
    return buffer.length > MAX_TOKEN_FILE_BYTES ? undefined : buffer.toString("utf8");
  } catch {
    return undefined;
  }
}

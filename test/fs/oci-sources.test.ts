/** The configuration scan reads each `oci://` source with the one address parser (src/core/oci-address.ts). */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseOciAddress } from "../../src/core/oci-address.js";
import { findOciSources } from "../../src/fs/oci-sources.js";

const ADDRESSES = [
  "oci://ghcr.io/acme/modules/network?tag=1.4.0",
  "oci://localhost:5000/m",
  "oci://ghcr.io/acme/vpc/",
  "oci://ghcr.io/acme/vpc#frag",
  "oci://docker.io/acme/legacy?tag=1.0.0",
  "oci://ghcr.io",
  "oci://ghcr.io/?tag=1",
  "oci://gh#cr.io/acme/vpc",
];

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oci-sources-"));
  await mkdir(join(dir, "nested"));
  await writeFile(join(dir, "main.tf"), ADDRESSES.map((a, i) => `module "m${i}" {\n  source = "${a}"\n}\n`).join(""));
  await writeFile(join(dir, "nested", "more.tf.json"), JSON.stringify({ module: { json: { source: ADDRESSES[0] } } }));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("findOciSources", () => {
  it("keeps the sources parseOciAddress accepts, with its host and repository", async () => {
    const found = await findOciSources(dir);
    const expected = [
      ...ADDRESSES.flatMap((address) => {
        const parsed = parseOciAddress(address);
        return parsed === undefined ? [] : [{ file: "main.tf", address, ...parsed }];
      }),
      {
        file: join("nested", "more.tf.json"),
        address: ADDRESSES[0],
        host: "ghcr.io",
        repository: "acme/modules/network",
      },
    ];
    expect(found.sort((a, b) => a.file.localeCompare(b.file))).toEqual(
      expected.sort((a, b) => a.file.localeCompare(b.file)),
    );
    expect(found.filter((s) => s.file === "main.tf")).toHaveLength(5);
  });
});

// Ad-hoc: where the time goes when materializing a bundle of 10,000 registries.
import { mkdtemp } from "node:fs/promises";
import { join } from "node:path";
import { generatePrivateKeyPem, parsePrivateKeyPem } from "../src/crypto/agent-key.js";
import { openBundle, sealBundle } from "../src/crypto/sealed-bundle.js";
import { parseExport } from "../src/core/export-payload.js";
import { selectCredentials } from "../src/core/credential-selection.js";
import { renderRegistryFiles } from "../src/core/docker-config.js";
import { createRunDir, wipeRunDir, writeRunFile } from "../src/fs/run-dir.js";
import { realFs } from "../src/fs/secure-fs.js";
const n = Number(process.argv[2] ?? 10_000);
const key = await parsePrivateKeyPem(generatePrivateKeyPem(), "k");
const pt = Buffer.from(
  JSON.stringify({
    version: 1,
    registries: Array.from({ length: n }, (_, i) => ({
      id: `int-${i}`,
      name: `r${i}`,
      url: `https://reg-${i}.bench.test`,
      username: `user${i}`,
      password: `pw-${i}-abcdef`,
    })),
  }),
);
const root = await mkdtemp(join("/dev/shm", "scale-"));
for (let rep = 0; rep < 4; rep++) {
  const bundle = Buffer.from(
    await sealBundle({
      recipient: key,
      agentId: "a",
      runId: "r",
      plaintext: pt,
      issuedAtMs: Date.now(),
      ttlSeconds: 600,
    }),
  );
  const t: Record<string, number> = {};
  let t0 = performance.now();
  const o = await openBundle(bundle, {
    keys: new Map([[key.kid, key]]),
    agentId: "a",
    runId: "r",
    nowMs: Date.now(),
    maxLifetimeSeconds: 3600,
    clockSkewSeconds: 60,
  });
  t["open"] = performance.now() - t0;
  t0 = performance.now();
  const parsed = parseExport(new TextDecoder().decode(o.plaintext));
  t["parse"] = performance.now() - t0;
  t0 = performance.now();
  const sel = selectCredentials(parsed);
  t["select"] = performance.now() - t0;
  t0 = performance.now();
  const files = renderRegistryFiles(sel.selected, undefined);
  t["render"] = performance.now() - t0;
  t0 = performance.now();
  const dir = join(root, `r${rep}`);
  await createRunDir(realFs, dir, { runId: "r", agentId: "a", createdAt: "" });
  await writeRunFile(realFs, dir, "dockerConfig", files.dockerConfig);
  await writeRunFile(realFs, dir, "containersAuth", files.containersAuth);
  t["write"] = performance.now() - t0;
  await wipeRunDir(realFs, dir);
  console.log(
    Object.entries(t)
      .map(([k, v]) => `${k} ${v.toFixed(1)}`)
      .join("  "),
  );
}

/**
 * Generates the reference parts of docs/ from the code, so they cannot drift:
 * docs/errors.md from src/core/errors.ts, docs/configuration.md from src/config/schema.ts. `npx tsx scripts/gen-docs.ts` rewrites them;
 * test/docs/generated-docs.test.ts fails when they are stale.
 */
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { renderConfigurationDoc, renderErrorsDoc } from "./docs-render.js";

for (const [name, render] of [
  ["errors.md", renderErrorsDoc],
  ["configuration.md", renderConfigurationDoc],
] as const) {
  const target = fileURLToPath(new URL(`../docs/${name}`, import.meta.url));
  writeFileSync(target, render());
  console.log(`wrote ${target}`);
}

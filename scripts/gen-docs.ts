/**
 * Generates the reference parts of docs/ from the code, so they cannot drift:
 * docs/errors.md from src/core/errors.ts. `npx tsx scripts/gen-docs.ts` rewrites them;
 * test/docs/generated-docs.test.ts fails when they are stale.
 */
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { renderErrorsDoc } from "./docs-render.js";

const target = fileURLToPath(new URL("../docs/errors.md", import.meta.url));
writeFileSync(target, renderErrorsDoc());
console.log(`wrote ${target}`);

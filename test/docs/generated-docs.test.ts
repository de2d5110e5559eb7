import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { renderConfigurationDoc, renderErrorsDoc } from "../../scripts/docs-render.js";
import { RUN_FIELDS } from "../../src/config/schema.js";
import { ERROR_CODES } from "../../src/core/errors.js";

describe("generated docs", () => {
  it("docs/errors.md is up to date with src/core/errors.ts (run: npx tsx scripts/gen-docs.ts)", () => {
    const committed = readFileSync(new URL("../../docs/errors.md", import.meta.url), "utf8");
    expect(committed).toBe(renderErrorsDoc());
    for (const code of Object.keys(ERROR_CODES)) expect(committed).toContain(`\`${code}\``);
  });

  it("docs/configuration.md is up to date with src/config/schema.ts (run: npx tsx scripts/gen-docs.ts)", () => {
    const committed = readFileSync(new URL("../../docs/configuration.md", import.meta.url), "utf8");
    expect(committed).toBe(renderConfigurationDoc());
    for (const f of RUN_FIELDS) expect(committed).toContain(`\`${f.env}\``);
  });
});

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { renderErrorsDoc } from "../../scripts/docs-render.js";
import { ERROR_CODES } from "../../src/core/errors.js";

describe("generated docs", () => {
  it("docs/errors.md is up to date with src/core/errors.ts (run: npx tsx scripts/gen-docs.ts)", () => {
    const committed = readFileSync(new URL("../../docs/errors.md", import.meta.url), "utf8");
    expect(committed).toBe(renderErrorsDoc());
    for (const code of Object.keys(ERROR_CODES)) expect(committed).toContain(`\`${code}\``);
  });
});

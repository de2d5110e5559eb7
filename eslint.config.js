// Type-aware lint for the whole tree; `npm run lint` fails on any warning (--max-warnings 0).
import js from "@eslint/js";
import tseslint from "typescript-eslint";
import globals from "globals";

export default tseslint.config(
  { ignores: ["dist/**", "dist-check/**", "node_modules/**", "bench/results/**", "coverage/**"] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/restrict-template-expressions": ["error", { allowNumber: true, allowBoolean: true }],
      "@typescript-eslint/consistent-type-imports": "error",
      "@typescript-eslint/no-confusing-void-expression": [
        "error",
        { ignoreVoidReturningFunctions: true, ignoreArrowShorthand: true },
      ],
      "@typescript-eslint/no-unused-vars": [
        "error",
        {
          argsIgnorePattern: "^_",
          varsIgnorePattern: "^_",
          destructuredArrayIgnorePattern: "^_",
          ignoreRestSiblings: true,
        },
      ],
      "no-console": "error",
      "no-restricted-properties": [
        "error",
        { object: "process", property: "exit", message: "Only the CLI's top level (src/cli/main.ts) exits." },
      ],
    },
  },
  {
    files: ["src/cli/main.ts"],
    rules: { "no-restricted-properties": "off" },
  },
  {
    files: ["test/**", "bench/**", "scripts/**"],
    rules: { "no-console": "off", "@typescript-eslint/no-non-null-assertion": "off" },
  },
  {
    // A skipped test is a check that did not happen, and `.only` skips every other test: neither
    // may land. The summary line counts skips (test/support/summary-reporter.ts) in case one does.
    files: ["test/**"],
    rules: {
      "no-restricted-syntax": [
        "error",
        ...[
          "MemberExpression[object.name=/^(it|test|describe|suite)$/]",
          "MemberExpression[object.object.name=/^(it|test|describe|suite)$/]",
        ].map((selector) => ({
          selector: `${selector}[property.name=/^(skip|skipIf|runIf|todo|only)$/]`,
          message:
            "Tests never skip (skip, skipIf, runIf, todo) and never narrow the run (only): make the test run everywhere, or delete it.",
        })),
        {
          selector:
            "CallExpression[callee.type='MemberExpression'][callee.property.name='skip'][callee.object.name!=/^(it|test|describe|suite)$/][callee.object.object.name!=/^(it|test|describe|suite)$/]",
          message: "Tests never skip themselves (ctx.skip()): make the test run everywhere, or delete it.",
        },
      ],
    },
  },
  {
    files: ["**/*.js", "**/*.mjs"],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { ...tseslint.configs.disableTypeChecked.languageOptions, globals: globals.node },
  },
  {
    // Test fixtures stand in for other programs (tofu), which exit as they please.
    files: ["test/fixtures/**"],
    rules: { "no-restricted-properties": "off", "no-console": "off" },
  },
);

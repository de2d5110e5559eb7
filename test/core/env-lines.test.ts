import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { plainEnvLines, shellEnvLines, shellQuote } from "../../src/core/env-lines.js";
import { AgentError } from "../../src/core/errors.js";

const dir = mkdtempSync(join(tmpdir(), "oca-env-lines-"));
const canary = join(dir, "pwned");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Each would run a command, end the quoting or expand something if it were quoted carelessly.
const HOSTILE = [
  "plain",
  "",
  "it's",
  "'",
  "''",
  "'\\''",
  `'; touch ${canary}; echo '`,
  `$(touch ${canary})`,
  `\`touch ${canary}\``,
  "${HOME}",
  "$HOME",
  '"double" and \\ backslash\\',
  "a b\tc",
  "*",
  "~",
  "!x !!",
  "semi;colon&amp|pipe>redir<in",
  "ünïcödé €",
  "/run/oci-cred-agent/runs/run-1/tofu/cli.tfrc",
];

function evalIn(shell: string, lines: string, name: string): string {
  return execFileSync(shell, ["-c", `eval "$1"; printf '%s' "$${name}"`, "sh", lines], {
    encoding: "utf8",
    env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: dir },
  });
}

describe("shellEnvLines", () => {
  for (const shell of ["sh", "bash"])
    it(`gives back every hostile value exactly, and runs nothing, when ${shell} evals it`, () => {
      for (const value of HOSTILE) {
        const lines = shellEnvLines({ TF_CLI_CONFIG_FILE: value, DOCKER_CONFIG: "/x" });
        expect(lines.split("\n").filter(Boolean)).toHaveLength(2);
        expect(evalIn(shell, lines, "TF_CLI_CONFIG_FILE")).toBe(value);
      }
      expect(existsSync(canary)).toBe(false);
    });

  it("writes NAME='value' lines", () => {
    expect(shellEnvLines({ A: "x", B: "it's" })).toBe(`A='x'\nB='it'\\''s'\n`);
    expect(shellQuote("'")).toBe(`''\\'''`);
  });

  it("refuses values that cannot be one line, and names that are not shell names, naming the variable only", () => {
    for (const value of ["a\nb", "a\rb", "a\0b", "\n"]) {
      let error: unknown;
      try {
        shellEnvLines({ OK: "x", TF_CLI_CONFIG_FILE: value });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(AgentError);
      expect((error as AgentError).code).toBe("HOOK_ENV_VALUE_REFUSED");
      expect((error as AgentError).message).toContain("TF_CLI_CONFIG_FILE");
      expect(() => plainEnvLines({ TF_CLI_CONFIG_FILE: value })).toThrow(/newline, carriage return or NUL/);
    }
    for (const name of ["1X", "A-B", "A B", "A=B", "", "$(x)"])
      expect(() => shellEnvLines({ [name]: "v" })).toThrow(/not a shell variable name/);
  });
});

describe("plainEnvLines (HCP agents' TFC_AGENT_ENV)", () => {
  it("writes KEY=value lines without quoting: the agent splits at the first = and keeps the rest", () => {
    expect(plainEnvLines({ A: "/p/a b", B: "x=y'z" })).toBe("A=/p/a b\nB=x=y'z\n");
  });
});

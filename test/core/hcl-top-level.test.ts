import { describe, expect, it } from "vitest";
import { HclScanError, lineOf, scanTopLevel } from "../../src/core/hcl-top-level.js";

function summary(text: string): [string, string[], string, string][] {
  return scanTopLevel(text).map((i) => [i.name, [...i.labels], i.kind, text.slice(i.start, i.end)]);
}

describe("scanTopLevel: items and their spans", () => {
  it.each<[string, string, [string, string[], string, string][]]>([
    ["empty file", "", []],
    ["only comments", "# a\n// b\n/* c {\n} */\n", []],
    [
      "an attribute",
      'plugin_cache_dir = "/var/cache"\n',
      [["plugin_cache_dir", [], "attribute", 'plugin_cache_dir = "/var/cache"']],
    ],
    [
      "a boolean attribute",
      "disable_checkpoint = true\n",
      [["disable_checkpoint", [], "attribute", "disable_checkpoint = true"]],
    ],
    [
      "a block without labels",
      "provider_installation {\n  direct {}\n}\n",
      [["provider_installation", [], "block", "provider_installation {\n  direct {}\n}"]],
    ],
    [
      "a block with quoted labels",
      'oci_credentials "ghcr.io/org-a" {\n  username = "u"\n}\n',
      [["oci_credentials", ["ghcr.io/org-a"], "block", 'oci_credentials "ghcr.io/org-a" {\n  username = "u"\n}']],
    ],
    ["labels with escapes are unquoted", 'x "a\\"b" {}', [["x", ['a"b'], "block", 'x "a\\"b" {}']]],
    [
      "an unquoted label",
      "credentials app.terraform.io {}",
      [["credentials", ["app.terraform.io"], "block", "credentials app.terraform.io {}"]],
    ],
    [
      "braces inside strings do not count",
      'a { b = "}}}" c = "{" }\nd = 1',
      [
        ["a", [], "block", 'a { b = "}}}" c = "{" }'],
        ["d", [], "attribute", "d = 1"],
      ],
    ],
    [
      "braces inside comments do not count",
      "a {\n  # }\n  // }\n  /* } */\n}\nb {}",
      [
        ["a", [], "block", "a {\n  # }\n  // }\n  /* } */\n}"],
        ["b", [], "block", "b {}"],
      ],
    ],
    [
      "a heredoc hides what looks like blocks",
      "e = <<EOT\n}\noci_default_credentials {\nEOT\nf {}\n",
      [
        ["e", [], "attribute", "e = <<EOT\n}\noci_default_credentials {\nEOT\n"],
        ["f", [], "block", "f {}"],
      ],
    ],
    [
      "an indented heredoc (<<-)",
      "a = <<-EOT\n    x }\n    EOT\nb = 2",
      [
        ["a", [], "attribute", "a = <<-EOT\n    x }\n    EOT\n"],
        ["b", [], "attribute", "b = 2"],
      ],
    ],
    [
      "a heredoc inside a block",
      "a {\n  x = <<EOT\n}\nEOT\n}\nb = 1",
      [
        ["a", [], "block", "a {\n  x = <<EOT\n}\nEOT\n}"],
        ["b", [], "attribute", "b = 1"],
      ],
    ],
    ["a template with a nested string holding a brace", 'i = "${ "}" }"', [["i", [], "attribute", 'i = "${ "}" }"']]],
    [
      "nested lists and objects",
      'f "l1" "l2" { g = [1, 2, {h = "}"}] }\nj = { k = [1] }',
      [
        ["f", ["l1", "l2"], "block", 'f "l1" "l2" { g = [1, 2, {h = "}"}] }'],
        ["j", [], "attribute", "j = { k = [1] }"],
      ],
    ],
    [
      "a trailing comment after a value",
      "a = 1 # { not a block\nb {}",
      [
        ["a", [], "attribute", "a = 1 "],
        ["b", [], "block", "b {}"],
      ],
    ],
    [
      "CRLF line endings",
      "a = 1\r\nb {\r\n}\r\n",
      [
        ["a", [], "attribute", "a = 1\r"],
        ["b", [], "block", "b {\r\n}"],
      ],
    ],
    [
      "an oci_default_credentials inside a string is not a block",
      'comment = "oci_default_credentials { }"\n',
      [["comment", [], "attribute", 'comment = "oci_default_credentials { }"']],
    ],
  ])("%s", (_name, text, expected) => {
    expect(summary(text)).toEqual(expected);
  });

  it("finds a real oci_default_credentials block among decoys", () => {
    const text = [
      "# oci_default_credentials {",
      "/* oci_default_credentials { } */",
      'x = "oci_default_credentials {"',
      "y = <<EOT",
      "oci_default_credentials {}",
      "EOT",
      "oci_default_credentials {",
      '  docker_style_config_files = ["/a}"]',
      "}",
    ].join("\n");
    const found = scanTopLevel(text).filter((i) => i.name === "oci_default_credentials");
    expect(found).toHaveLength(1);
    expect(found[0]?.kind).toBe("block");
    expect(lineOf(text, found[0]?.start ?? -1)).toBe(7);
  });
});

describe("scanTopLevel: syntax errors", () => {
  it.each<[string, string, RegExp, number]>([
    ["an unterminated block", "a {", /unterminated block/, 2],
    ["an unterminated string", 'a = "x', /unterminated string/, 4],
    ["a string broken by a newline", 'a = "x\n"', /unterminated string/, 4],
    ["an unterminated comment", "/* x", /unterminated comment/, 0],
    ["an unterminated heredoc", "a = <<EOT\nx\n", /unterminated heredoc/, 4],
    ["a malformed heredoc", "a = <<\nx", /malformed heredoc/, 4],
    ["an attribute without a name", "= 1", /malformed attribute/, 0],
    ["an attribute with two names", "a b = 1", /malformed attribute/, 4],
    ["a stray closing brace", "a }", /unexpected '}'/, 2],
    ["a mismatched bracket", "a { ] }", /unbalanced/, 4],
    ["a key at end of file", "a", /unexpected end of file/, 0],
  ])("%s", (_name, text, message, offset) => {
    let caught: unknown;
    try {
      scanTopLevel(text);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(HclScanError);
    expect((caught as HclScanError).message).toMatch(message);
    expect((caught as HclScanError).offset).toBe(offset);
  });
});

describe("lineOf", () => {
  it.each([
    ["abc", 0, 1],
    ["a\nb\nc", 2, 2],
    ["a\nb\nc", 4, 3],
    ["a\n", 99, 2],
  ])("lineOf(%j, %d) = %d", (text, offset, line) => {
    expect(lineOf(text, offset)).toBe(line);
  });
});

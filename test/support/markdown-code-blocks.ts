/**
 * The fenced code blocks of a Markdown document, with the heading they sit under, so that a
 * test runs a guide's own commands rather than a retyped copy of them.
 */
export interface CodeBlock {
  /** The info string's first word: `sh`, `ini`, `json`, or "" when none. */
  readonly lang: string;
  readonly text: string;
  /** The nearest heading above the block, without its `#`s. */
  readonly heading: string;
  /** 1-based line of the opening fence. */
  readonly line: number;
}

export function codeBlocks(markdown: string): CodeBlock[] {
  const blocks: CodeBlock[] = [];
  const lines = markdown.split("\n");
  let heading = "";
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? "";
    const fence = /^(`{3,}|~{3,})\s*([^\s`]*)/.exec(line);
    if (fence !== null) {
      const [, marker = "```", lang = ""] = fence;
      const start = i;
      const body: string[] = [];
      for (i++; i < lines.length && !(lines[i] ?? "").startsWith(marker); i++) body.push(lines[i] ?? "");
      blocks.push({ lang, text: body.join("\n"), heading, line: start + 1 });
      continue;
    }
    const h = /^#{1,6}\s+(.*)$/.exec(line);
    if (h !== null) heading = (h[1] ?? "").trim();
  }
  return blocks;
}

/** The lines of a shell block that are commands (not blank, not whole-line comments). */
export function commandLines(block: CodeBlock): string[] {
  return block.text.split("\n").filter((l) => l.trim() !== "" && !l.trim().startsWith("#"));
}

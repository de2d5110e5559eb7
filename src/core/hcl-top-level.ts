/**
 * A small scanner for HCL 1 (the OpenTofu CLI configuration language) that finds the top-level
 * items of a file and their spans: enough to tell whether an operator's configuration already
 * has an `oci_default_credentials` block and to cut out `oci_credentials` blocks, without
 * interpreting anything else. It understands comments (#, //, block), quoted strings with
 * escapes and ${...} templates, heredocs, and nesting. Pure.
 */

export interface TopLevelItem {
  /** The first key: a block type or an attribute name. */
  readonly name: string;
  /** Further keys (block labels), unquoted. */
  readonly labels: readonly string[];
  readonly kind: "block" | "attribute";
  /** Offsets of the item's first and one-past-last character. */
  readonly start: number;
  readonly end: number;
}

export class HclScanError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(message);
  }
}

function isIdentChar(c: string): boolean {
  return /[A-Za-z0-9_\-.]/.test(c);
}

/** Returns the offset just past the quoted string starting at `i` (which holds `"`). */
function skipString(text: string, i: number): number {
  let j = i + 1;
  let templateDepth = 0;
  while (j < text.length) {
    const c = text[j];
    if (c === "\\") {
      j += 2;
      continue;
    }
    if (templateDepth > 0) {
      if (c === '"') {
        j = skipString(text, j);
        continue;
      }
      if (c === "{") templateDepth++;
      else if (c === "}") templateDepth--;
      j++;
      continue;
    }
    if (c === "$" && text[j + 1] === "{") {
      templateDepth = 1;
      j += 2;
      continue;
    }
    if (c === '"') return j + 1;
    if (c === "\n") throw new HclScanError("unterminated string", i);
    j++;
  }
  throw new HclScanError("unterminated string", i);
}

function unquote(token: string): string {
  if (!token.startsWith('"')) return token;
  try {
    return JSON.parse(token) as string;
  } catch {
    return token.slice(1, -1);
  }
}

/** Skips whitespace and comments; returns the next significant offset. */
function skipTrivia(text: string, i: number): number {
  let j = i;
  while (j < text.length) {
    const c = text[j];
    if (c === " " || c === "\t" || c === "\r" || c === "\n") {
      j++;
    } else if (c === "#" || (c === "/" && text[j + 1] === "/")) {
      const nl = text.indexOf("\n", j);
      j = nl === -1 ? text.length : nl + 1;
    } else if (c === "/" && text[j + 1] === "*") {
      const close = text.indexOf("*/", j + 2);
      if (close === -1) throw new HclScanError("unterminated comment", j);
      j = close + 2;
    } else {
      break;
    }
  }
  return j;
}

/** Skips a heredoc starting at `i` (which holds `<<`); returns the offset past its end marker line. */
function skipHeredoc(text: string, i: number): number {
  const header = /^<<-?([A-Za-z_][A-Za-z0-9_]*)\r?\n/.exec(text.slice(i, i + 300));
  if (!header?.[1]) throw new HclScanError("malformed heredoc", i);
  const marker = header[1];
  let j = i + header[0].length;
  while (j <= text.length) {
    const nl = text.indexOf("\n", j);
    const line = text.slice(j, nl === -1 ? text.length : nl);
    if (line.trim() === marker) return nl === -1 ? text.length : nl + 1;
    if (nl === -1) break;
    j = nl + 1;
  }
  throw new HclScanError("unterminated heredoc", i);
}

/** Skips a balanced {...} or [...] group starting at `i`. */
function skipGroup(text: string, i: number): number {
  const stack: string[] = [];
  let j = i;
  while (j < text.length) {
    j = skipTrivia(text, j);
    if (j >= text.length) break;
    const c = text[j] ?? "";
    if (c === '"') {
      j = skipString(text, j);
      continue;
    }
    if (c === "<" && text[j + 1] === "<") {
      j = skipHeredoc(text, j);
      continue;
    }
    if (c === "{" || c === "[") stack.push(c === "{" ? "}" : "]");
    else if (c === "}" || c === "]") {
      if (stack.pop() !== c) throw new HclScanError(`unbalanced '${c}'`, j);
      if (stack.length === 0) return j + 1;
    }
    j++;
  }
  throw new HclScanError("unterminated block", i);
}

/** Skips an attribute's value starting at `i` (just after `=`). */
function skipValue(text: string, i: number): number {
  let j = skipTrivia(text, i);
  const c = text[j];
  if (c === "{" || c === "[") return skipGroup(text, j);
  if (c === '"') return skipString(text, j);
  if (c === "<" && text[j + 1] === "<") return skipHeredoc(text, j);
  // A bare value (number, bool, identifier) ends at the line's end or at a comment, which may
  // span lines (/* ... */) and is left to skipTrivia.
  while (
    j < text.length &&
    text[j] !== "\n" &&
    text[j] !== "#" &&
    !(text[j] === "/" && (text[j + 1] === "/" || text[j + 1] === "*"))
  )
    j++;
  return j;
}

export function scanTopLevel(text: string): TopLevelItem[] {
  const items: TopLevelItem[] = [];
  let i = skipTrivia(text, 0);
  while (i < text.length) {
    const start = i;
    const keys: string[] = [];
    for (;;) {
      i = skipTrivia(text, i);
      const c = text[i];
      if (c === undefined) throw new HclScanError("unexpected end of file", start);
      if (c === '"') {
        const end = skipString(text, i);
        keys.push(unquote(text.slice(i, end)));
        i = end;
      } else if (isIdentChar(c)) {
        let end = i;
        while (end < text.length && isIdentChar(text[end] ?? "")) end++;
        keys.push(text.slice(i, end));
        i = end;
      } else if (c === "{") {
        if (keys.length === 0) throw new HclScanError("block without a type", i);
        const end = skipGroup(text, i);
        items.push({ name: keys[0] ?? "", labels: keys.slice(1), kind: "block", start, end });
        i = end;
        break;
      } else if (c === "=") {
        if (keys.length !== 1) throw new HclScanError("malformed attribute", i);
        const end = skipValue(text, i + 1);
        items.push({ name: keys[0] ?? "", labels: [], kind: "attribute", start, end });
        i = end;
        break;
      } else {
        throw new HclScanError(`unexpected '${c}'`, i);
      }
    }
    i = skipTrivia(text, i);
    if (text[i] === ",") i = skipTrivia(text, i + 1);
  }
  return items;
}

export function lineOf(text: string, offset: number): number {
  let line = 1;
  for (let k = 0; k < offset && k < text.length; k++) if (text[k] === "\n") line++;
  return line;
}

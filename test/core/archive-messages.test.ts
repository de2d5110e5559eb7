/**
 * Every refusal of a configuration archive names a fix that exists: each `--flag` a message
 * names must be a flag of `oci-cred-agent run`, both in the configuration schema (RUN_FIELDS)
 * and in the real command line's `run --help`. One refusal per ARCHIVE_* code and per distinct
 * message, produced by the code itself from crafted archives.
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RUN_FIELDS } from "../../src/config/schema.js";
import { AgentError, ERROR_CODES, type ErrorCode } from "../../src/core/errors.js";
import { parseTar, type ArchiveLimits } from "../../src/core/tar-archive.js";
import { extractConfiguration, verifyChecksum } from "../../src/fs/config-workspace.js";
import { AGENT_BIN } from "../support/agent-process.js";
import { tar, tarGzOf } from "../support/reliability-tar.js";

const LIMITS: ArchiveLimits = { maxBytes: 1024, maxEntries: 3 };
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-archive-msg-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function withByte(buf: Buffer, offset: number, value: number): Buffer {
  const copy = Buffer.from(buf);
  copy[offset] = value;
  return copy;
}

/** A header whose checksum is right but whose size field is not octal. */
function nonOctalSize(): Buffer {
  const t = tar([{ name: "a", data: "x" }]);
  t.write("9", 124, "latin1");
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : (t[i] ?? 0);
  t.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
  return t;
}

const file = (name: string, data = "x"): { name: string; data: string } => ({ name, data });

type Produce = () => unknown;
const parse =
  (bytes: Buffer): Produce =>
  () =>
    parseTar(bytes, LIMITS);

const CASES: [string, ErrorCode, Produce][] = [
  ["a header checksum mismatch", "ARCHIVE_INVALID", parse(withByte(tar([file("a")]), 0, 0x62))],
  ["a size field that is not octal", "ARCHIVE_INVALID", parse(nonOctalSize())],
  ["a truncated entry", "ARCHIVE_INVALID", parse(tar([{ name: "a", data: "x", declaredSize: 4096 }]))],
  [
    "a malformed pax header",
    "ARCHIVE_INVALID",
    parse(tar([{ name: "a", data: "x", pax: { path: "a" } }]).fill(0x78, 512, 513)),
  ],
  [
    "bytes that are not gzip",
    "ARCHIVE_INVALID",
    () => extractConfiguration(Buffer.from("not gzip"), join(dir, "w1"), LIMITS),
  ],
  ["more entries than the fixed limit", "ARCHIVE_TOO_LARGE", parse(tar([file("a"), file("b"), file("c"), file("d")]))],
  [
    "files past the size limit",
    "ARCHIVE_TOO_LARGE",
    parse(tar([file("a", "a".repeat(1000)), file("b", "b".repeat(100))])),
  ],
  [
    "hardlinks past the size limit",
    "ARCHIVE_TOO_LARGE",
    parse(tar([file("a", "a".repeat(600)), { name: "b", type: "1", linkname: "a" }])),
  ],
  [
    "a gzip bomb past the size limit",
    "ARCHIVE_TOO_LARGE",
    () =>
      extractConfiguration(gzipSync(tar([{ name: "z", data: new Uint8Array(64 * 1024) }])), join(dir, "w2"), LIMITS),
  ],
  ["an absolute path", "ARCHIVE_UNSAFE_PATH", parse(tar([file("/etc/x")]))],
  ["a control character", "ARCHIVE_UNSAFE_PATH", parse(tar([file("a\u0001b")]))],
  ["'..'", "ARCHIVE_UNSAFE_PATH", parse(tar([file("../x")]))],
  ["a path twice", "ARCHIVE_UNSAFE_PATH", parse(tar([file("a"), file("a")]))],
  ["a path beneath a file", "ARCHIVE_UNSAFE_PATH", parse(tar([file("a"), file("a/b")]))],
  ["a file where a directory's entries lie", "ARCHIVE_UNSAFE_PATH", parse(tar([file("a/b"), file("a")]))],
  [
    "an entry through a symlink",
    "ARCHIVE_UNSAFE_LINK",
    parse(tar([{ name: "l", type: "2", linkname: "d" }, file("l/x")])),
  ],
  ["a symlink to an absolute path", "ARCHIVE_UNSAFE_LINK", parse(tar([{ name: "l", type: "2", linkname: "/etc" }]))],
  ["a symlink outside", "ARCHIVE_UNSAFE_LINK", parse(tar([{ name: "l", type: "2", linkname: "../x" }]))],
  ["a hardlink to no earlier file", "ARCHIVE_UNSAFE_LINK", parse(tar([{ name: "h", type: "1", linkname: "nothing" }]))],
  [
    "a symlink loop",
    "ARCHIVE_UNSAFE_LINK",
    parse(
      tar([
        { name: "a", type: "2", linkname: "b/x" },
        { name: "b", type: "2", linkname: "a/y" },
      ]),
    ),
  ],
  [
    "a symlink outside through another symlink",
    "ARCHIVE_UNSAFE_LINK",
    parse(
      tar([
        { name: "d/up", type: "2", linkname: ".." },
        { name: "l", type: "2", linkname: "d/up/.." },
      ]),
    ),
  ],
  ["a FIFO", "ARCHIVE_ENTRY_UNSUPPORTED", parse(tar([{ name: "p", type: "6" }]))],
  [
    "a checksum the lease did not announce",
    "ARCHIVE_CHECKSUM_MISMATCH",
    () => verifyChecksum(tarGzOf([file("a")]), "0".repeat(64)),
  ],
];

async function refusalOf(produce: Produce): Promise<AgentError> {
  try {
    await produce();
  } catch (error) {
    if (error instanceof AgentError) return error;
    throw error;
  }
  throw new Error("expected a refusal");
}

/** The flags of `oci-cred-agent run`, as its real command line lists them. */
function runHelpFlags(): Set<string> {
  const help = execFileSync(AGENT_BIN, ["run", "--help"], { encoding: "utf8" });
  return new Set(help.match(/--[a-z][a-z-]*/g) ?? []);
}

describe("archive refusals", () => {
  const help = runHelpFlags();
  const schemaFlags = new Set(RUN_FIELDS.filter((f) => f.noFlag !== true).map((f) => f.flag));

  it.each(CASES)("%s is refused with %s, and every flag the message names exists", async (_name, code, produce) => {
    const e = await refusalOf(produce);
    expect(e.code).toBe(code);
    for (const flag of e.message.match(/--[a-z][a-z-]*/g) ?? []) {
      expect(schemaFlags.has(flag), `${flag} in "${e.message}" is a setting of src/config/schema.ts RUN_FIELDS`).toBe(
        true,
      );
      expect(help.has(flag), `${flag} in "${e.message}" is listed by \`oci-cred-agent run --help\``).toBe(true);
    }
  });

  it("covers every ARCHIVE_* code", () => {
    const codes = Object.keys(ERROR_CODES).filter((c) => c.startsWith("ARCHIVE_"));
    expect(new Set(CASES.map(([, code]) => code))).toEqual(new Set(codes));
  });

  it("says the entry limit is fixed and what to leave out, and names the setting that raises the size limit", async () => {
    const entries = await refusalOf(CASES.find(([name]) => name === "more entries than the fixed limit")![2]);
    expect(entries.message).toContain("more than 3 entries");
    expect(entries.message).toContain("no setting raises");
    expect(entries.message).toContain(".terraform/");
    const bytes = await refusalOf(CASES.find(([name]) => name === "files past the size limit")![2]);
    expect(bytes.message).toContain("--max-config-bytes");
    expect(help.has("--max-config-bytes")).toBe(true);
  });
});

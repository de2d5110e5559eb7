/**
 * The sandbox's system call filter, run through a small classic-BPF interpreter: what it answers
 * for each system call on each architecture it knows. (The filter's effect on real processes is
 * in test/isolation/hostile-run.test.ts: the keyring probe.)
 */
import { describe, expect, it } from "vitest";
import { sandboxSeccompProgram } from "../../src/execution/sandbox-seccomp.js";

const ALLOW = 0x7fff0000;
const errno = (n: number): number => 0x00050000 | n;

/** Runs the program on seccomp_data {nr, arch, args[0]}; supports the opcodes a filter uses. */
function run(program: Buffer, data: { nr: number; arch: number; arg0?: number }): number {
  const word = (offset: number): number =>
    offset === 0 ? data.nr : offset === 4 ? data.arch : offset === 16 ? (data.arg0 ?? 0) >>> 0 : 0;
  let acc = 0;
  for (let pc = 0; pc < program.length / 8; pc++) {
    const code = program.readUInt16LE(pc * 8);
    const jt = program.readUInt8(pc * 8 + 2);
    const jf = program.readUInt8(pc * 8 + 3);
    const k = program.readUInt32LE(pc * 8 + 4);
    if (code === 0x20) acc = word(k);
    else if (code === 0x06) return k;
    else if (code === 0x15) pc += acc === k ? jt : jf;
    else if (code === 0x35) pc += acc >>> 0 >= k ? jt : jf;
    else if (code === 0x45) pc += (acc & k) !== 0 ? jt : jf;
    else throw new Error(`unknown opcode ${code}`);
  }
  throw new Error("ran off the end of the program");
}

const X64 = 0xc000003e;
const ARM64 = 0xc00000b7;

describe("sandboxSeccompProgram", () => {
  it("x64: refuses the keyrings, new user namespaces, x32 and foreign ABIs; clone3 answers ENOSYS; allows the rest", () => {
    const p = sandboxSeccompProgram("x64");
    expect(p).toBeDefined();
    const f = (nr: number, arg0 = 0, arch = X64): number => run(p as Buffer, { nr, arch, arg0 });
    for (const nr of [248, 249, 250]) expect(f(nr)).toBe(errno(1));
    expect(f(435)).toBe(errno(38));
    expect(f(56, 0x10000000 | 0x11)).toBe(errno(1)); // clone(CLONE_NEWUSER | SIGCHLD)
    expect(f(272, 0x10000000)).toBe(errno(1)); // unshare(CLONE_NEWUSER)
    expect(f(56, 0x01200011)).toBe(ALLOW); // fork-like clone
    expect(f(272, 0x00020000)).toBe(ALLOW); // unshare(CLONE_NEWNS): no new user namespace
    expect(f(0x40000000 + 250)).toBe(errno(1)); // x32 keyctl
    expect(f(288, 0, 0x40000003)).toBe(errno(1)); // i386
    for (const nr of [0, 1, 2, 59, 231]) expect(f(nr)).toBe(ALLOW); // read, write, open, execve, exit_group
  });

  it("arm64: its own numbers", () => {
    const p = sandboxSeccompProgram("arm64") as Buffer;
    const f = (nr: number, arg0 = 0): number => run(p, { nr, arch: ARM64, arg0 });
    for (const nr of [217, 218, 219]) expect(f(nr)).toBe(errno(1));
    expect(f(220, 0x10000000)).toBe(errno(1));
    expect(f(97, 0x10000000)).toBe(errno(1));
    expect(f(435)).toBe(errno(38));
    expect(f(221)).toBe(ALLOW); // execve
    expect(run(p, { nr: 221, arch: X64 })).toBe(errno(1));
  });

  it("knows no other architecture (the agent then refuses to start)", () => {
    expect(sandboxSeccompProgram("ia32")).toBeUndefined();
  });
});

/**
 * The sandbox's system call filter, as the classic BPF program bubblewrap loads (`--seccomp FD`).
 * It refuses, with EPERM, what the namespaces do not cover: the kernel keyrings (`add_key`,
 * `request_key`, `keyctl`), which a new user namespace does not separate, so that a phase cannot
 * read a key the agent keeps in its session keyring (`--key keyring:` without a Secret Service);
 * new user namespaces inside the sandbox (`clone`/`unshare` with CLONE_NEWUSER; `clone3`, whose
 * flags a filter cannot read, answers ENOSYS so that libc falls back to `clone`), which would
 * hand a phase capabilities over the kernel's namespaced code; and every system call of a foreign
 * ABI (i386 or x32 on x86_64), whose numbers the filter does not know, as Docker's default
 * profile and systemd's SystemCallArchitectures=native do. Pure: the program's bytes for this
 * machine's architecture.
 */

const LD_W_ABS = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JSET_K = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET_K = 0x06; // BPF_RET | BPF_K
const SECCOMP_RET_ALLOW = 0x7fff0000;
const SECCOMP_RET_ERRNO = 0x00050000;
const EPERM = 1;
const ENOSYS = 38;
/** struct seccomp_data: nr at offset 0, arch at 4, the low half of args[0] at 16 (little-endian). */
const NR = 0;
const ARCH = 4;
const ARG0_LOW = 16;
/** x32 system calls on x86_64 carry this bit. */
const X32_SYSCALL_BIT = 0x40000000;
const CLONE_NEWUSER = 0x10000000;

interface ArchSyscalls {
  readonly audit: number;
  readonly addKey: number;
  readonly requestKey: number;
  readonly keyctl: number;
  readonly clone: number;
  readonly clone3: number;
  readonly unshare: number;
}

/** Linux's numbers (asm/unistd_64.h, asm-generic/unistd.h) for the architectures Node ships for. */
const ARCHES: Readonly<Record<string, ArchSyscalls>> = {
  x64: { audit: 0xc000003e, addKey: 248, requestKey: 249, keyctl: 250, clone: 56, clone3: 435, unshare: 272 },
  arm64: { audit: 0xc00000b7, addKey: 217, requestKey: 218, keyctl: 219, clone: 220, clone3: 435, unshare: 97 },
};

type Label = "allow" | "eperm" | "enosys" | "flags";
/** One instruction; a jump names its targets, which `assemble` turns into offsets. */
type Instruction =
  | { readonly code: number; readonly k: number; readonly label?: Label }
  | {
      readonly code: number;
      readonly k: number;
      readonly yes: Label | "next";
      readonly no: Label | "next";
      readonly label?: Label;
    };

function assemble(program: readonly Instruction[]): Buffer {
  const at = (label: Label): number => program.findIndex((i) => i.label === label);
  const bytes = Buffer.alloc(program.length * 8);
  program.forEach((ins, i) => {
    const offset = (target: Label | "next"): number => (target === "next" ? 0 : at(target) - i - 1);
    bytes.writeUInt16LE(ins.code, i * 8);
    bytes.writeUInt8("yes" in ins ? offset(ins.yes) : 0, i * 8 + 2);
    bytes.writeUInt8("no" in ins ? offset(ins.no) : 0, i * 8 + 3);
    bytes.writeUInt32LE(ins.k >>> 0, i * 8 + 4);
  });
  return bytes;
}

/** The filter for `arch` (`process.arch`), or undefined where the agent knows no numbers. */
export function sandboxSeccompProgram(arch: string): Buffer | undefined {
  const a = ARCHES[arch];
  if (a === undefined) return undefined;
  return assemble([
    { code: LD_W_ABS, k: ARCH },
    { code: JEQ_K, k: a.audit, yes: "next", no: "eperm" }, // a foreign ABI
    { code: LD_W_ABS, k: NR },
    { code: JGE_K, k: X32_SYSCALL_BIT, yes: "eperm", no: "next" },
    { code: JEQ_K, k: a.addKey, yes: "eperm", no: "next" },
    { code: JEQ_K, k: a.requestKey, yes: "eperm", no: "next" },
    { code: JEQ_K, k: a.keyctl, yes: "eperm", no: "next" },
    // clone3 passes its flags in memory, out of a filter's reach: ENOSYS, and libc falls back to clone.
    { code: JEQ_K, k: a.clone3, yes: "enosys", no: "next" },
    { code: JEQ_K, k: a.clone, yes: "flags", no: "next" },
    { code: JEQ_K, k: a.unshare, yes: "flags", no: "next" },
    { code: RET_K, k: SECCOMP_RET_ALLOW, label: "allow" },
    // clone and unshare: no new user namespace inside the sandbox (the kernel surface they open).
    { code: LD_W_ABS, k: ARG0_LOW, label: "flags" },
    { code: JSET_K, k: CLONE_NEWUSER, yes: "eperm", no: "next" },
    { code: RET_K, k: SECCOMP_RET_ALLOW },
    { code: RET_K, k: SECCOMP_RET_ERRNO | ENOSYS, label: "enosys" },
    { code: RET_K, k: SECCOMP_RET_ERRNO | EPERM, label: "eperm" },
  ]);
}

/**
 * The sandbox's system call filter, as the classic BPF program bubblewrap loads (`--seccomp FD`).
 * It refuses, with EPERM, what the namespaces do not cover: the kernel keyrings (`add_key`,
 * `request_key`, `keyctl`), which a new user namespace does not separate, so that a phase cannot
 * read a key the agent keeps in its session keyring (`--key keyring:` without a Secret Service);
 * and every system call of a foreign ABI (i386 or x32 on x86_64), whose numbers the filter does
 * not know, as Docker's default profile and systemd's SystemCallArchitectures=native do. Pure:
 * the program's bytes for this machine's architecture.
 */

const LD_W_ABS = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const RET_K = 0x06; // BPF_RET | BPF_K
const SECCOMP_RET_ALLOW = 0x7fff0000;
const SECCOMP_RET_ERRNO = 0x00050000;
const EPERM = 1;
/** struct seccomp_data: nr at offset 0, arch at offset 4. */
const NR = 0;
const ARCH = 4;
/** x32 system calls on x86_64 carry this bit. */
const X32_SYSCALL_BIT = 0x40000000;

interface ArchSyscalls {
  readonly audit: number;
  readonly keyrings: readonly [addKey: number, requestKey: number, keyctl: number];
}

/** Linux's numbers (asm/unistd_64.h, asm-generic/unistd.h) for the architectures Node ships for. */
const ARCHES: Readonly<Record<string, ArchSyscalls>> = {
  x64: { audit: 0xc000003e, keyrings: [248, 249, 250] },
  arm64: { audit: 0xc00000b7, keyrings: [217, 218, 219] },
};

/** The filter for `arch` (`process.arch`), or undefined where the agent knows no numbers. */
export function sandboxSeccompProgram(arch: string): Buffer | undefined {
  const a = ARCHES[arch];
  if (a === undefined) return undefined;
  const [addKey, requestKey, keyctl] = a.keyrings;
  // [code, jump if true, jump if false, k]; jumps count the instructions skipped.
  const program: [number, number, number, number][] = [
    [LD_W_ABS, 0, 0, ARCH],
    [JEQ_K, 0, 6, a.audit], // a foreign ABI: refuse (to the last instruction)
    [LD_W_ABS, 0, 0, NR],
    [JGE_K, 4, 0, X32_SYSCALL_BIT],
    [JEQ_K, 3, 0, addKey],
    [JEQ_K, 2, 0, requestKey],
    [JEQ_K, 1, 0, keyctl],
    [RET_K, 0, 0, SECCOMP_RET_ALLOW],
    [RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM],
  ];
  const bytes = Buffer.alloc(program.length * 8);
  program.forEach(([code, jt, jf, k], i) => {
    bytes.writeUInt16LE(code, i * 8);
    bytes.writeUInt8(jt, i * 8 + 2);
    bytes.writeUInt8(jf, i * 8 + 3);
    bytes.writeUInt32LE(k >>> 0, i * 8 + 4);
  });
  return bytes;
}

/**
 * What a phase sees in the sandbox, as bubblewrap's arguments: an allow-list. Pure.
 *
 * The phase gets new user, mount, PID, IPC and UTS namespaces; the network stays, because tofu
 * needs the registries and providers. Its root is empty and read-only but for: the system's
 * directories read-only (`/usr`, `/bin`, `/sbin`, `/lib*`, `/etc`, with the agent's own
 * configuration under `/etc` masked), DNS state of systemd-resolved hosts, the tofu executable
 * and what it needs, the run's credential directory read-only, its workspace read-write, a
 * private HOME and TMPDIR, a fresh `/proc` of its own PID namespace, a minimal `/dev`, an empty
 * `/tmp`. Nothing of the agent: not its keys, token, state directory, HOME or processes, nor any
 * other run. It runs in a new session (no controlling terminal to inject input into), with no
 * capabilities, and dies with the agent; when its first process exits, the kernel ends every
 * process left in its PID namespace, whatever it did to leave its process group.
 */

/** The system's directories, shown read-only when they exist (`/bin` may be a link into `/usr`). */
export const SYSTEM_DIRS: readonly string[] = [
  "/usr",
  "/bin",
  "/sbin",
  "/lib",
  "/lib32",
  "/lib64",
  "/libx32",
  "/etc",
  // systemd-resolved's stub resolv.conf, which /etc/resolv.conf points into on such hosts.
  "/run/systemd/resolve",
];

/** The agent's own configuration directory, masked inside `/etc`. */
export const AGENT_ETC_DIR = "/etc/oci-cred-agent";

export interface SandboxLayout {
  /** The phase's command: an absolute executable and its arguments. */
  readonly command: readonly string[];
  /** The run's workspace: read-write, and the working directory. */
  readonly workspace: string;
  /** The run's credential directory: read-only. */
  readonly credentials: string;
  /** The run's private HOME and TMPDIR: read-write. */
  readonly home: string;
  readonly tmp: string;
  /** The tofu executable and what it needs, and the operator's --sandbox-ro-bind paths. */
  readonly readOnly: readonly string[];
  /** The operator's --sandbox-bind paths. */
  readonly readWrite: readonly string[];
  /** Agent paths inside the system's directories to mask: directories get an empty tmpfs, files /dev/null. */
  readonly hide: readonly { readonly path: string; readonly kind: "dir" | "file" }[];
  /** The file descriptor bubblewrap reads the system call filter from (sandbox-seccomp.ts). */
  readonly seccompFd: number;
}

export function bwrapArgs(layout: SandboxLayout): string[] {
  const pairs = (option: string, paths: readonly string[]): string[] => paths.flatMap((p) => [option, p, p]);
  return [
    "--unshare-user",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--die-with-parent",
    "--new-session",
    "--cap-drop",
    "ALL",
    "--seccomp",
    String(layout.seccompFd),
    ...pairs("--ro-bind-try", SYSTEM_DIRS),
    ...layout.hide.flatMap((h) => (h.kind === "dir" ? ["--tmpfs", h.path] : ["--ro-bind", "/dev/null", h.path])),
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",
    ...pairs("--ro-bind", layout.readOnly),
    ...pairs("--bind", layout.readWrite),
    ...pairs("--ro-bind", [layout.credentials]),
    ...pairs("--bind", [layout.workspace, layout.home, layout.tmp]),
    // The sandbox's own root (where the mount points above were made) is read-only too: a
    // phase writes only to its workspace, HOME, TMPDIR, /tmp and what the operator allowed.
    "--remount-ro",
    "/",
    "--chdir",
    layout.workspace,
    "--setenv",
    "HOME",
    layout.home,
    "--setenv",
    "TMPDIR",
    layout.tmp,
    "--",
    ...layout.command,
  ];
}

/** Whether `path` is `dir` or below it. */
function within(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith("/") ? dir : `${dir}/`);
}

/** Which of the agent's paths the system's directories would show, and so must be masked. */
export function pathsToHide(
  agentPaths: readonly { readonly path: string; readonly kind: "dir" | "file" }[],
): { path: string; kind: "dir" | "file" }[] {
  const shown = agentPaths.filter((p) => SYSTEM_DIRS.some((d) => within(p.path, d)));
  // A directory hides what is below it: no need to mask those again.
  return shown.filter((p) => !shown.some((q) => q !== p && q.kind === "dir" && within(p.path, q.path)));
}

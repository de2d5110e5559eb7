/**
 * The sandbox's allow-list as bubblewrap arguments (pure), and how bubblewrap's exit status maps
 * back to a phase's. The sandbox itself is exercised for real in test/isolation/ and the boot test.
 */
import { describe, expect, it } from "vitest";
import { fromBubblewrapStatus } from "../../src/execution/sandbox-executor.js";
import { bwrapArgs, pathsToHide, SYSTEM_DIRS, type SandboxLayout } from "../../src/execution/sandbox-layout.js";

const layout: SandboxLayout = {
  command: ["/usr/local/bin/tofu", "init", "-input=false"],
  workspace: "/var/lib/a/work/workspaces/run-1",
  credentials: "/run/a/credentials/run-1",
  home: "/var/lib/a/work/homes/run-1/home",
  tmp: "/var/lib/a/work/homes/run-1/tmp",
  readOnly: ["/usr/local/bin/tofu", "/opt/ca.pem"],
  readWrite: ["/var/cache/plugins"],
  hide: [
    { path: "/etc/oci-cred-agent", kind: "dir" },
    { path: "/etc/agent.token", kind: "file" },
  ],
  seccompFd: 3,
};

/** The (option, source, destination) triples of an argument list. */
function binds(args: string[], option: string): string[] {
  return args.flatMap((a, i) => (a === option ? [`${args[i + 1] ?? ""}->${args[i + 2] ?? ""}`] : []));
}

describe("bwrapArgs", () => {
  const args = bwrapArgs(layout);

  it("new user, mount, PID, IPC and UTS namespaces, never a network one; no capabilities; a new session; dies with the agent", () => {
    for (const flag of [
      "--unshare-user",
      "--unshare-pid",
      "--unshare-ipc",
      "--unshare-uts",
      "--die-with-parent",
      "--new-session",
    ])
      expect(args).toContain(flag);
    expect(args).not.toContain("--unshare-net");
    expect(args).not.toContain("--unshare-all");
    expect(args.slice(args.indexOf("--cap-drop"), args.indexOf("--cap-drop") + 2)).toEqual(["--cap-drop", "ALL"]);
    expect(args.slice(args.indexOf("--seccomp"), args.indexOf("--seccomp") + 2)).toEqual(["--seccomp", "3"]);
  });

  it("shows the system read-only, the run's credentials read-only, its workspace, HOME and TMPDIR read-write, and nothing else", () => {
    expect(binds(args, "--ro-bind-try")).toEqual(SYSTEM_DIRS.map((d) => `${d}->${d}`));
    expect(binds(args, "--ro-bind")).toEqual([
      "/dev/null->/etc/agent.token",
      "/usr/local/bin/tofu->/usr/local/bin/tofu",
      "/opt/ca.pem->/opt/ca.pem",
      `${layout.credentials}->${layout.credentials}`,
    ]);
    expect(binds(args, "--bind")).toEqual([
      "/var/cache/plugins->/var/cache/plugins",
      `${layout.workspace}->${layout.workspace}`,
      `${layout.home}->${layout.home}`,
      `${layout.tmp}->${layout.tmp}`,
    ]);
    // The agent's own configuration directory is masked by an empty tmpfs, after /etc is shown.
    expect(args.indexOf("/etc/oci-cred-agent")).toBeGreaterThan(args.indexOf("/etc"));
    expect(args[args.indexOf("/etc/oci-cred-agent") - 1]).toBe("--tmpfs");
  });

  it("makes the sandbox's own root read-only after the mount points, runs in the workspace with the private HOME and TMPDIR", () => {
    const remount = args.indexOf("--remount-ro");
    expect(args[remount + 1]).toBe("/");
    expect(remount).toBeGreaterThan(args.lastIndexOf("--bind"));
    expect(args.slice(args.indexOf("--chdir"), args.indexOf("--chdir") + 2)).toEqual(["--chdir", layout.workspace]);
    expect(args.join(" ")).toContain(`--setenv HOME ${layout.home} --setenv TMPDIR ${layout.tmp}`);
    expect(args.slice(args.indexOf("--") + 1)).toEqual(layout.command);
  });
});

describe("pathsToHide", () => {
  it("keeps only the agent's paths the system's directories would show, a directory covering what is below it", () => {
    expect(
      pathsToHide([
        { path: "/etc/oci-cred-agent", kind: "dir" },
        { path: "/etc/oci-cred-agent/agent.token", kind: "file" },
        { path: "/var/lib/oci-cred-agent/keys", kind: "dir" },
        { path: "/etc/agent.yaml", kind: "file" },
        { path: "/etcetera/x", kind: "file" },
      ]),
    ).toEqual([
      { path: "/etc/oci-cred-agent", kind: "dir" },
      { path: "/etc/agent.yaml", kind: "file" },
    ]);
  });
});

describe("fromBubblewrapStatus", () => {
  const base = { durationMs: 1, canceled: false };
  it("reports 128 + N as signal N, as a phase run without the sandbox would be", () => {
    expect(fromBubblewrapStatus({ ...base, exitCode: 137, signal: null })).toEqual({
      ...base,
      exitCode: null,
      signal: "SIGKILL",
    });
    expect(fromBubblewrapStatus({ ...base, exitCode: 143, signal: null })).toEqual({
      ...base,
      exitCode: null,
      signal: "SIGTERM",
    });
  });
  it("leaves ordinary exit codes and real signals alone", () => {
    expect(fromBubblewrapStatus({ ...base, exitCode: 1, signal: null })).toEqual({
      ...base,
      exitCode: 1,
      signal: null,
    });
    expect(fromBubblewrapStatus({ ...base, exitCode: 128, signal: null })).toEqual({
      ...base,
      exitCode: 128,
      signal: null,
    });
    expect(fromBubblewrapStatus({ ...base, exitCode: null, signal: "SIGKILL" })).toEqual({
      ...base,
      exitCode: null,
      signal: "SIGKILL",
    });
  });
});

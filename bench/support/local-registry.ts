/**
 * A real Docker Registry (Debian's docker-registry) on 127.0.0.1 with TLS (a throwaway CA made
 * with openssl) and htpasswd (bcrypt, from apache2-utils), for the benchmark's comparison with
 * a `skopeo login` hook.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { Agent, request } from "undici";

export interface LocalRegistry {
  readonly host: string;
  readonly certDir: string;
  readonly caPem: string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => {
        resolve(port);
      });
    });
  });
}

export async function startLocalRegistry(user: string, password: string): Promise<LocalRegistry> {
  const dir = await mkdtemp(join(tmpdir(), "oca-registry-"));
  const certDir = join(dir, "certs");
  execFileSync("mkdir", ["-p", certDir, join(dir, "data")]);
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "2",
      "-subj",
      "/CN=bench-ca",
      "-keyout",
      join(dir, "ca.key"),
      "-out",
      join(certDir, "ca.crt"),
    ],
    { stdio: "ignore" },
  );
  execFileSync(
    "openssl",
    [
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-subj",
      "/CN=127.0.0.1",
      "-keyout",
      join(dir, "server.key"),
      "-out",
      join(dir, "server.csr"),
    ],
    { stdio: "ignore" },
  );
  await writeFile(join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  execFileSync(
    "openssl",
    [
      "x509",
      "-req",
      "-in",
      join(dir, "server.csr"),
      "-CA",
      join(certDir, "ca.crt"),
      "-CAkey",
      join(dir, "ca.key"),
      "-CAcreateserial",
      "-days",
      "2",
      "-extfile",
      join(dir, "san.ext"),
      "-out",
      join(dir, "server.crt"),
    ],
    { stdio: "ignore" },
  );
  const htpasswd = execFileSync("htpasswd", ["-Bbn", user, password], { encoding: "utf8" });
  await writeFile(join(dir, "htpasswd"), htpasswd);
  const caPem = execFileSync("cat", [join(certDir, "ca.crt")], { encoding: "utf8" });

  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    await writeFile(
      join(dir, "config.yml"),
      [
        "version: 0.1",
        "log: { level: error }",
        `storage: { filesystem: { rootdirectory: ${join(dir, "data")} } }`,
        `http: { addr: "127.0.0.1:${port}", tls: { certificate: ${join(dir, "server.crt")}, key: ${join(dir, "server.key")} } }`,
        `auth: { htpasswd: { realm: bench, path: ${join(dir, "htpasswd")} } }`,
        "",
      ].join("\n"),
    );
    const child: ChildProcess = spawn("docker-registry", ["serve", join(dir, "config.yml")], { stdio: "ignore" });
    const dispatcher = new Agent({ connect: { ca: caPem } });
    // Readiness poll (bounded): the registry answers 401 on /v2/ once it listens.
    for (let i = 0; i < 100 && child.exitCode === null; i++) {
      try {
        const res = await request(`https://127.0.0.1:${port}/v2/`, { dispatcher });
        await res.body.dump();
        if (res.statusCode === 401) {
          await dispatcher.close();
          return {
            host: `127.0.0.1:${port}`,
            certDir,
            caPem,
            async stop() {
              child.kill("SIGTERM");
              await rm(dir, { recursive: true, force: true });
            },
          };
        }
      } catch {
        await delay(100);
      }
    }
    child.kill("SIGKILL");
    await dispatcher.close();
  }
  throw new Error("docker-registry did not start");
}

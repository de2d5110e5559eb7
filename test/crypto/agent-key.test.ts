import { execFileSync } from "node:child_process";
import { createHash, createPublicKey, generateKeyPairSync } from "node:crypto";
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ErrorCode } from "../../src/core/errors.js";
import {
  generatePrivateKeyPem,
  kidOf,
  parsePrivateKeyPem,
  parsePublicKeyDoc,
  publicKeyDoc,
  publicKeyOfPem,
} from "../../src/crypto/agent-key.js";
import { createKeyFile, readProtectedKeyFile } from "../../src/fs/key-file.js";
import { realFs } from "../../src/fs/secure-fs.js";
import { ownedByAnotherUser } from "../support/foreign-owner.js";
import { refusal, refusalSync } from "../support/refusal.js";

let dir: string;
let pem: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "agent-key-test-"));
  pem = generatePrivateKeyPem();
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("key id and public key document", () => {
  it("kid is the RFC 7638 thumbprint computed from Node's own JWK export", () => {
    const { publicKey } = generateKeyPairSync("x25519");
    const jwk = publicKey.export({ format: "jwk" });
    // RFC 7638: required members only, lexicographic order, no whitespace.
    const thumbprint = createHash("sha256")
      .update(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x }))
      .digest("base64url");
    const raw = new Uint8Array(Buffer.from(jwk.x ?? "", "base64url"));
    expect(kidOf(raw)).toBe(thumbprint);
    expect(publicKeyDoc(raw)).toEqual({ kid: thumbprint, public_key: jwk.x });
  });

  it("a generated key is PKCS#8 PEM X25519, and parsing it gives the same public key and kid", async () => {
    expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----\n[\s\S]+\n-----END PRIVATE KEY-----\n$/);
    const fromNode = createPublicKey(pem).export({ format: "jwk" });
    expect(fromNode.crv).toBe("X25519");
    const parsed = await parsePrivateKeyPem(pem, "k");
    expect(Buffer.from(parsed.publicKey).toString("base64url")).toBe(fromNode.x);
    expect(parsed.kid).toBe(kidOf(parsed.publicKey));
    expect(publicKeyOfPem(pem, "k")).toEqual(parsed.publicKey);
  });

  it("accepts a key written by openssl genpkey -algorithm X25519", async () => {
    let opensslPem: string;
    try {
      opensslPem = execFileSync("openssl", ["genpkey", "-algorithm", "X25519"], { encoding: "utf8" });
    } catch {
      // openssl is part of the test dependencies; without it, check Node's identical PKCS#8 form.
      opensslPem = generateKeyPairSync("x25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    }
    const parsed = await parsePrivateKeyPem(opensslPem, "openssl key");
    expect(parsed.publicKey).toHaveLength(32);
  });

  it.each<[string, () => string]>([
    ["garbage", () => "not a key"],
    [
      "an Ed25519 key",
      () => generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    ],
    [
      "an EC P-256 key",
      () =>
        generateKeyPairSync("ec", { namedCurve: "P-256" })
          .privateKey.export({ type: "pkcs8", format: "pem" })
          .toString(),
    ],
    ["a public key", () => generateKeyPairSync("x25519").publicKey.export({ type: "spki", format: "pem" }).toString()],
  ])("refuses %s with KEY_FILE_INVALID and says how to make one", async (_name, make) => {
    const e = await refusal(parsePrivateKeyPem(make(), "/etc/agent.key"));
    expect(e.code).toBe("KEY_FILE_INVALID");
    expect(e.message).toContain("/etc/agent.key");
    expect(e.message).toContain("oci-cred-agent keygen");
    expect(refusalSync(() => publicKeyOfPem(make(), "x")).code).toBe("KEY_FILE_INVALID");
  });

  it.each<[string, (doc: { kid: string; public_key: string }) => string, RegExp]>([
    ["not JSON", () => "nope", /not JSON/],
    ["missing kid", (d) => JSON.stringify({ public_key: d.public_key }), /"kid" and "public_key"/],
    ["a number for public_key", (d) => JSON.stringify({ kid: d.kid, public_key: 5 }), /"kid" and "public_key"/],
    // Another last character: "A" unless the kid already ends with one (1 in 64 keys).
    [
      "a kid that does not match",
      (d) =>
        JSON.stringify({ kid: `${d.kid.slice(0, -1)}${d.kid.endsWith("A") ? "B" : "A"}`, public_key: d.public_key }),
      /kid does not match/,
    ],
    [
      "a short key",
      () => {
        const x = Buffer.alloc(31).toString("base64url");
        return JSON.stringify({ kid: kidOf(new Uint8Array(31)), public_key: x });
      },
      /31 bytes/,
    ],
    [
      "padded base64",
      (d) => JSON.stringify({ kid: d.kid, public_key: Buffer.from(d.public_key, "base64url").toString("base64") }),
      /base64url/,
    ],
    ["null", () => "null", /"kid" and "public_key"/],
  ])("parsePublicKeyDoc refuses %s with PUBLIC_KEY_INVALID", (_name, make, message) => {
    const doc = publicKeyDoc(publicKeyOfPem(pem, "k"));
    const e = refusalSync(() => parsePublicKeyDoc(make(doc), "agent.pub.json"));
    expect(e.code).toBe("PUBLIC_KEY_INVALID");
    expect(e.message).toMatch(message);
    expect(e.message).toContain("agent.pub.json");
    expect(e.message).toContain("oci-cred-agent pubkey");
  });

  it("parsePublicKeyDoc accepts what publicKeyDoc prints", () => {
    const publicKey = publicKeyOfPem(pem, "k");
    expect(parsePublicKeyDoc(JSON.stringify(publicKeyDoc(publicKey)), "x")).toEqual({
      kid: kidOf(publicKey),
      publicKey,
    });
  });
});

describe("key files: loading refuses what OpenSSH refuses", () => {
  function keyFile(name: string, mode = 0o600): string {
    const path = join(dir, name);
    writeFileSync(path, pem, { mode });
    chmodSync(path, mode);
    return path;
  }

  it("reads a 0600 (and a 0400) file owned by the agent", async () => {
    expect(await readProtectedKeyFile(realFs, keyFile("ok.key"))).toBe(pem);
    expect(await readProtectedKeyFile(realFs, keyFile("ro.key", 0o400))).toBe(pem);
  });

  it.each<[string, () => string, ErrorCode, RegExp]>([
    ["a missing file", () => join(dir, "absent.key"), "KEY_FILE_NOT_FOUND", /does not exist.*keygen --key-file/],
    [
      "a symlink to a good key",
      () => {
        const link = join(dir, "link.key");
        symlinkSync(keyFile("target.key"), link);
        return link;
      },
      "KEY_FILE_SYMLINK",
      /symbolic link.*Point --key-file at the real file/,
    ],
    [
      "a dangling symlink",
      () => {
        const link = join(dir, "dangling.key");
        symlinkSync(join(dir, "nowhere"), link);
        return link;
      },
      "KEY_FILE_SYMLINK",
      /symbolic link/,
    ],
    [
      "a directory",
      () => {
        const d = join(dir, "dir.key");
        mkdirSync(d);
        return d;
      },
      "KEY_FILE_NOT_REGULAR",
      /not a regular file/,
    ],
    [
      "a FIFO",
      () => {
        const f = join(dir, "fifo.key");
        execFileSync("mkfifo", ["-m", "600", f]);
        return f;
      },
      "KEY_FILE_NOT_REGULAR",
      /not a regular file/,
    ],
    [
      "group-readable (0640)",
      () => keyFile("g.key", 0o640),
      "KEY_FILE_PERMISSIONS",
      /UNPROTECTED PRIVATE KEY FILE.*0640.*chmod 600/,
    ],
    ["other-readable (0604)", () => keyFile("o.key", 0o604), "KEY_FILE_PERMISSIONS", /0604.*chmod 600/],
    ["group-writable (0620)", () => keyFile("gw.key", 0o620), "KEY_FILE_PERMISSIONS", /0620/],
    ["world-executable (0601)", () => keyFile("x.key", 0o601), "KEY_FILE_PERMISSIONS", /0601/],
  ])("refuses %s with %s and a fix", async (_name, make, code, message) => {
    const path = make();
    const e = await refusal(readProtectedKeyFile(realFs, path));
    expect(e.code).toBe(code);
    expect(e.message).toContain(path);
    expect(e.message).toMatch(message);
    // The key itself never appears in a refusal.
    expect(e.message).not.toContain("PRIVATE KEY-----");
  });

  it("refuses a file owned by another user with KEY_FILE_WRONG_OWNER (as root via chown, else as lstat reports it)", async () => {
    const path = keyFile("foreign.key");
    const fs = ownedByAnotherUser(path);
    const e = await refusal(readProtectedKeyFile(fs, path));
    expect(e.code).toBe("KEY_FILE_WRONG_OWNER");
    expect(e.message).toContain("uid 4242");
    expect(e.message).toContain(`chown $(id -u) ${path}`);
    expect(e.details).toMatchObject({ uid: 4242 });
  });
});

describe("key files: creation", () => {
  it("creates the file 0600 with exactly the PEM, and never overwrites", async () => {
    const path = join(dir, "new.key");
    await createKeyFile(realFs, path, pem);
    expect(lstatSync(path).mode & 0o777).toBe(0o600);
    expect(readFileSync(path, "utf8")).toBe(pem);
    const e = await refusal(createKeyFile(realFs, path, generatePrivateKeyPem()));
    expect(e.code).toBe("KEY_FILE_EXISTS");
    expect(readFileSync(path, "utf8")).toBe(pem);
  });

  it("creates 0600 whatever the umask", async () => {
    const old = process.umask(0o000);
    try {
      const path = join(dir, "umask.key");
      await createKeyFile(realFs, path, pem);
      expect(lstatSync(path).mode & 0o777).toBe(0o600);
    } finally {
      process.umask(old);
    }
  });

  it("refuses to write through a symlink, dangling or not, and leaves its target alone", async () => {
    const target = join(dir, "victim.txt");
    writeFileSync(target, "victim");
    const link = join(dir, "via-link.key");
    symlinkSync(target, link);
    expect((await refusal(createKeyFile(realFs, link, pem))).code).toBe("KEY_FILE_EXISTS");
    expect(readFileSync(target, "utf8")).toBe("victim");

    const dangling = join(dir, "via-dangling.key");
    const wouldBe = join(dir, "would-be-created.txt");
    symlinkSync(wouldBe, dangling);
    expect((await refusal(createKeyFile(realFs, dangling, pem))).code).toBe("KEY_FILE_EXISTS");
    expect(() => lstatSync(wouldBe)).toThrow();
  });

  it("refuses a missing directory with INVALID_ARGUMENT", async () => {
    const e = await refusal(createKeyFile(realFs, join(dir, "no", "such", "dir.key"), pem));
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.message).toContain("does not exist");
  });
});

/**
 * A file or directory owned by another user, so that ownership checks run on every host. As
 * root the path is chowned for real; otherwise the file system handed to the code under test
 * reports that owner for the path from lstat and stat, the only way the agent learns an owner.
 */
import { chownSync, type Stats } from "node:fs";
import { resolve } from "node:path";
import { realFs, type FileSystem } from "../../src/fs/secure-fs.js";

const FOREIGN_UID = 4242;

function withOwner(st: Stats): Stats {
  return Object.assign(Object.create(Object.getPrototypeOf(st) as object) as Stats, st, {
    uid: FOREIGN_UID,
    gid: FOREIGN_UID,
  });
}

/** Makes `path` another user's (uid and gid 4242); returns the file system to give the code under test. */
export function ownedByAnotherUser(path: string, base: FileSystem = realFs): FileSystem {
  if (process.getuid?.() === 0) {
    chownSync(path, FOREIGN_UID, FOREIGN_UID);
    return base;
  }
  const target = resolve(path);
  const lstat = (async (p: string, ...rest: unknown[]) => {
    const st = await (base.lstat as (p: string, ...r: unknown[]) => Promise<Stats>)(p, ...rest);
    return resolve(p) === target ? withOwner(st) : st;
  }) as FileSystem["lstat"];
  const stat = (async (p: string, ...rest: unknown[]) => {
    const st = await (base.stat as (p: string, ...r: unknown[]) => Promise<Stats>)(p, ...rest);
    return resolve(p) === target ? withOwner(st) : st;
  }) as FileSystem["stat"];
  return { ...base, lstat, stat };
}

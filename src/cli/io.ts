/** Reading inputs and writing outputs for one-shot commands: a path, or "-" for stdin/stdout. */
import { readFile } from "node:fs/promises";
import { AgentError, errnoCode } from "../core/errors.js";
import { isAlreadyThere, openNewFile, realFs } from "../fs/secure-fs.js";

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export async function readInput(pathOrDash: string, what: string): Promise<Buffer> {
  if (pathOrDash === "-") return readStdin();
  try {
    return await readFile(pathOrDash);
  } catch (error) {
    throw new AgentError(
      "INPUT_UNREADABLE",
      `cannot read ${what} ${pathOrDash} (${errnoCode(error) ?? "error"}); check the path`,
      { path: pathOrDash },
    );
  }
}

export async function writeOutput(pathOrDash: string, data: string): Promise<void> {
  if (pathOrDash === "-") {
    await new Promise<void>((resolve, reject) => {
      process.stdout.write(data, (error) => {
        if (error) reject(error);
        else resolve();
      });
    });
    return;
  }
  // A new file only (never overwritten, never through a symlink), readable by its owner.
  let handle;
  try {
    handle = await openNewFile(realFs, pathOrDash);
  } catch (error) {
    if (isAlreadyThere(error)) {
      throw new AgentError(
        "OUTPUT_EXISTS",
        `${pathOrDash} exists already; the agent never overwrites an output: choose another path, or remove it first`,
        { path: pathOrDash },
      );
    }
    throw new AgentError(
      "OUTPUT_UNWRITABLE",
      `cannot create ${pathOrDash} (${errnoCode(error) ?? "error"}); check the directory`,
      { path: pathOrDash },
    );
  }
  try {
    await handle.writeFile(data);
  } finally {
    await handle.close();
  }
}

export function printJson(value: unknown): Promise<void> {
  return writeOutput("-", `${JSON.stringify(value, null, 2)}\n`);
}

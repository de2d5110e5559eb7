/** Reading inputs and writing outputs for one-shot commands: a path, or "-" for stdin/stdout. */
import { readFile, writeFile } from "node:fs/promises";
import { AgentError, errnoCode } from "../core/errors.js";

export async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export async function readInput(pathOrDash: string, what: string): Promise<Buffer> {
  if (pathOrDash === "-") return readStdin();
  try {
    return await readFile(pathOrDash);
  } catch (error) {
    throw new AgentError("INPUT_UNREADABLE", `cannot read ${what} ${pathOrDash} (${errnoCode(error) ?? "error"}); check the path`, { path: pathOrDash });
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
  await writeFile(pathOrDash, data, { mode: 0o644 });
}

export function printJson(value: unknown): Promise<void> {
  return writeOutput("-", `${JSON.stringify(value, null, 2)}\n`);
}

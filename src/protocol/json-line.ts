/** One line of a newline-delimited JSON protocol (the runner's, the sidecar's) checked against its schema. */
import type { z } from "zod";

/** The line's message, or undefined when it is not JSON or not a valid message. */
export function parseJsonLine<T>(schema: z.ZodType<T>, line: string): T | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  const parsed = schema.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}

/** The AgentError a call refuses with; fails the test if it succeeds or throws something else. */
import { AgentError } from "../../src/core/errors.js";

export async function refusal(p: Promise<unknown>): Promise<AgentError> {
  try {
    await p;
  } catch (error) {
    if (error instanceof AgentError) return error;
    throw error;
  }
  throw new Error("expected a refusal");
}

export function refusalSync(fn: () => unknown): AgentError {
  try {
    fn();
  } catch (error) {
    if (error instanceof AgentError) return error;
    throw error;
  }
  throw new Error("expected a refusal");
}

/** The AgentError a call refuses with; fails the test if it succeeds or throws something else. */
import { type AgentError, isAgentError } from "../../src/core/errors.js";

export async function refusal(p: Promise<unknown>): Promise<AgentError> {
  try {
    await p;
  } catch (error) {
    if (isAgentError(error)) return error;
    throw error;
  }
  throw new Error("expected a refusal");
}

export function refusalSync(fn: () => unknown): AgentError {
  try {
    fn();
  } catch (error) {
    if (isAgentError(error)) return error;
    throw error;
  }
  throw new Error("expected a refusal");
}

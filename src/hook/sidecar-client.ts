/**
 * The hook's half of the sidecar protocol (src/protocol/sidecar-api.ts): one connection to the
 * sidecar's Unix socket, one request line, one answer line, within a deadline for the whole
 * exchange. Nothing else: the hook starts fast and loads neither the daemon nor any crypto.
 */
import { connect } from "node:net";
import { AgentError, errnoCode } from "../core/errors.js";
import {
  encodeHookLine,
  MAX_SIDECAR_LINE_BYTES,
  parseHookAnswer,
  type HookAnswer,
  type HookRequest,
} from "../protocol/sidecar-api.js";

function unreachable(socketPath: string, error: unknown): AgentError {
  const errno = errnoCode(error) ?? "error";
  const fix =
    errno === "ENOENT" || errno === "ENOTDIR"
      ? `no socket at ${socketPath}: start oci-cred-agent sidecar, and give the hook its --socket path (--socket or OCI_CRED_AGENT_SOCKET)`
      : errno === "EACCES" || errno === "EPERM"
        ? `permission denied on ${socketPath}: run the hook as a member of the sidecar's --socket-group`
        : errno === "ECONNREFUSED"
          ? `nothing listens on ${socketPath} (a socket left by a sidecar that stopped): start oci-cred-agent sidecar`
          : `connecting to ${socketPath} failed (${errno}): check that oci-cred-agent sidecar runs and listens there`;
  return new AgentError("HOOK_SIDECAR_UNREACHABLE", fix, { socket: socketPath, errno });
}

/**
 * Sends `request` and resolves with the sidecar's answer (a refusal included); rejects with
 * HOOK_SIDECAR_UNREACHABLE (no socket, no answer within `timeoutMs`) or
 * HOOK_SIDECAR_PROTOCOL_ERROR (an answer that is not one).
 */
export function askSidecar(socketPath: string, request: HookRequest, timeoutMs: number): Promise<HookAnswer> {
  const line = encodeHookLine(request);
  return new Promise<HookAnswer>((resolve, reject) => {
    const socket = connect({ path: socketPath });
    let connected = false;
    let settled = false;
    const chunks: Buffer[] = [];
    let bytes = 0;
    const finish = (error: AgentError | undefined, answer?: HookAnswer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error !== undefined) reject(error);
      else if (answer !== undefined) resolve(answer);
    };
    const protocolError = (what: string): AgentError =>
      new AgentError(
        "HOOK_SIDECAR_PROTOCOL_ERROR",
        `the sidecar on ${socketPath} ${what}; run the same oci-cred-agent version as hook and sidecar`,
        { socket: socketPath },
      );
    const timer = setTimeout(() => {
      finish(
        new AgentError(
          "HOOK_SIDECAR_UNREACHABLE",
          `the sidecar on ${socketPath} did not answer within ${Math.round(timeoutMs / 1000)}s: check its log; raise --timeout if its control plane is slow`,
          { socket: socketPath, errno: "ETIMEDOUT" },
        ),
      );
    }, timeoutMs);
    socket.once("connect", () => {
      connected = true;
      socket.write(line);
    });
    socket.on("data", (chunk: Buffer) => {
      const nl = chunk.indexOf(0x0a);
      const piece = nl >= 0 ? chunk.subarray(0, nl) : chunk;
      bytes += piece.length + (nl >= 0 ? 1 : 0);
      if (bytes > MAX_SIDECAR_LINE_BYTES) {
        finish(protocolError(`answered a line longer than ${MAX_SIDECAR_LINE_BYTES} bytes`));
        return;
      }
      chunks.push(piece);
      if (nl < 0) return;
      const answer = parseHookAnswer(Buffer.concat(chunks).toString("utf8"));
      finish(answer === undefined ? protocolError("answered something that is not a hook answer") : undefined, answer);
    });
    socket.once("end", () => finish(protocolError("closed the connection without an answer")));
    socket.once("error", (error) => {
      finish(
        connected
          ? new AgentError(
              "HOOK_SIDECAR_UNREACHABLE",
              `the connection to the sidecar on ${socketPath} broke (${errnoCode(error) ?? "error"}) before its answer: check its log`,
              {
                socket: socketPath,
                errno: errnoCode(error) ?? "error",
              },
            )
          : unreachable(socketPath, error),
      );
    });
  });
}

/**
 * What a TLS failure of a connection means and how to fix it, from the error's code (Node and
 * OpenSSL codes, as undici passes them on). Pure; the callers give it `errnoCode(error)`.
 */

const UNTRUSTED = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "CERT_SIGNATURE_FAILURE",
  "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
  "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
  "INVALID_CA",
  "PATH_LENGTH_EXCEEDED",
  "INVALID_PURPOSE",
]);

/** The reason and its fix when `code` is a TLS failure, else undefined. */
export function tlsFailure(code: string | undefined): string | undefined {
  if (code === undefined) return undefined;
  if (UNTRUSTED.has(code))
    return "its certificate is not signed by a CA this agent trusts: give that CA's certificate with --ca-file or NODE_EXTRA_CA_CERTS";
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID")
    return "its certificate is not valid for the host name of --control-plane-url: use a name the certificate lists, or issue a certificate for this name";
  if (code === "CERT_HAS_EXPIRED" || code === "CERT_NOT_YET_VALID")
    return "its certificate has expired or is not valid yet: renew it, and check both clocks";
  if (code === "ERR_SSL_WRONG_VERSION_NUMBER" || code === "EPROTO")
    return "it does not speak TLS at that address: check the port, and whether it serves plain HTTP";
  return undefined;
}

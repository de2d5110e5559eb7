/**
 * Which AWS identity the SDK's default chain will use, read from the environment without loading
 * the SDK: for the token cache's key and for refusals. Never a secret (an access key id is an
 * identifier AWS itself prints in its errors; the secret key and session token are never read).
 */
export function awsIdentity(env: NodeJS.ProcessEnv): string {
  const role = env["AWS_ROLE_ARN"];
  if (role !== undefined && role !== "" && (env["AWS_WEB_IDENTITY_TOKEN_FILE"] ?? "") !== "") return role;
  const keyId = env["AWS_ACCESS_KEY_ID"];
  if (keyId !== undefined && keyId !== "") return `access key ${keyId} (environment)`;
  if (
    (env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] ?? "") !== "" ||
    (env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] ?? "") !== ""
  )
    return "the container's role (EKS Pod Identity or ECS task role)";
  if ((env["AWS_PROFILE"] ?? "") !== "") return `profile ${env["AWS_PROFILE"] ?? ""}`;
  return "the instance role (IMDSv2)";
}

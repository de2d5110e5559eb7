/**
 * Which credential serves a repository when several cover it: a credential is host-wide or
 * scoped to a repository path prefix, and the most specific one wins (the longest prefix of
 * whole segments, then the host-wide one). OpenTofu's lookup ranks Docker-style keys this way
 * (ociauthconfig, dockerCLIStyleAuthMatch), and the pre-flight check asks each credential for
 * the repositories it will serve. Pure.
 */

/**
 * How specifically a credential scoped to `scope` covers `repository`: 0 for a host-wide one
 * (scope undefined), N for a scope of N whole path segments that starts the repository
 * (`org` covers `org/mod`, not `organ/mod`), undefined when it does not cover it. A scope with
 * an empty segment (`""`, `org/`, `a//b`) covers nothing.
 */
export function scopeSpecificity(scope: string | undefined, repository: string): number | undefined {
  if (scope === undefined) return 0;
  const scopeSegments = scope.split("/");
  const repositorySegments = repository.split("/");
  if (scopeSegments.length > repositorySegments.length || scopeSegments.some((s) => s === "")) return undefined;
  return scopeSegments.every((s, i) => s === repositorySegments[i]) ? scopeSegments.length : undefined;
}

/** The candidate whose scope covers `repository` most specifically (the first on a tie), or undefined if none covers it. */
export function mostSpecificScope<T>(
  candidates: Iterable<T>,
  scopeOf: (candidate: T) => string | undefined,
  repository: string,
): T | undefined {
  let best: T | undefined;
  let bestSpecificity = -1;
  for (const candidate of candidates) {
    const specificity = scopeSpecificity(scopeOf(candidate), repository);
    if (specificity !== undefined && specificity > bestSpecificity) {
      best = candidate;
      bestSpecificity = specificity;
    }
  }
  return best;
}

/**
 * Prints the closing line CI reads after vitest's own summary: `N passed, N failed`, followed by
 * `, N skipped` only when a test was skipped (.ci/run greps for exactly this shape).
 *
 * - A test skipped with skip/todo/skipIf/runIf/`ctx.skip()` counts as skipped (lint forbids all
 *   of them in test/**, so the count is 0 unless one slipped in).
 * - A test vitest reports as skipped because a beforeAll hook above it failed did not run because
 *   of a failure: it counts as failed.
 * - A test that never finished (pending) counts as failed: a check that did not happen.
 * - A test file that failed with no failed test (an import error, a failing afterAll) counts as
 *   one failure, and so does every error vitest reports outside any test.
 */
import type { Reporter, TestCase, TestModule } from "vitest/node";

export interface Summary {
  readonly passed: number;
  readonly failed: number;
  readonly skipped: number;
}

/** Whether a suite or the file above the test holds an error of its own (a failed hook). */
function underFailedHook(test: TestCase): boolean {
  for (
    let parent: TestCase["parent"] | undefined = test.parent;
    parent !== undefined;
    parent = parent.type === "suite" ? parent.parent : undefined
  ) {
    if (parent.errors().length > 0) return true;
  }
  return false;
}

export function summarize(testModules: readonly TestModule[], unhandledErrors: readonly unknown[]): Summary {
  let passed = 0;
  let failed = unhandledErrors.length;
  let skipped = 0;
  for (const mod of testModules) {
    let failedHere = 0;
    for (const test of mod.children.allTests()) {
      const state = test.result().state;
      if (state === "passed") passed++;
      else if (state === "skipped" && !underFailedHook(test)) skipped++;
      else failedHere++;
    }
    if (mod.state() === "failed" && failedHere === 0) failedHere = 1;
    failed += failedHere;
  }
  return { passed, failed, skipped };
}

export function summaryLine({ passed, failed, skipped }: Summary): string {
  return `${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ""}`;
}

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: readonly TestModule[], unhandledErrors: readonly unknown[]): void {
    process.stdout.write(`\n${summaryLine(summarize(testModules, unhandledErrors))}\n`);
  }
}

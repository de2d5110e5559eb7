import { describe, expect, it } from "vitest";
import { normalizeRegistryUrl } from "../../src/core/registry-address.js";

describe("normalizeRegistryUrl: the fast path agrees with the full URL parse", () => {
  it.each([
    "https://127.1:5000",
    "https://0x7f.0.0.1:5000",
    "https://1.2.3:5000",
    "https://0177.0.0.1",
    "https://4294967295",
    "https://1.2.3.4.5",
    "https://10.0.0.1:5000",
    "https://ghcr.io",
  ])("%s", (raw) => {
    expect(normalizeRegistryUrl(raw)).toEqual(normalizeRegistryUrl(` ${raw}`));
  });
});

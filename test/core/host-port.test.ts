/**
 * HOST:PORT has one parser (src/core/host-port.ts). The table holds what the former copies
 * (`--listen` of run and control-plane, the `listen` setting's check, and the settings' own
 * parse) accepted and refused; every caller is run against it so none can drift again.
 */
import { describe, expect, it } from "vitest";
import { hostPort as flagHostPort } from "../../src/cli/options.js";
import { parseFieldValue, RUN_FIELDS } from "../../src/config/schema.js";
import { AgentError } from "../../src/core/errors.js";
import { hostPort, parseHostPort, type HostPort } from "../../src/core/host-port.js";

const CASES: [string, HostPort | undefined][] = [
  ["127.0.0.1:9480", { host: "127.0.0.1", port: 9480 }],
  ["0.0.0.0:8480", { host: "0.0.0.0", port: 8480 }],
  ["localhost:0", { host: "localhost", port: 0 }],
  ["agent.example.com:65535", { host: "agent.example.com", port: 65535 }],
  [":8080", { host: "127.0.0.1", port: 8080 }],
  ["[::1]:8080", { host: "::1", port: 8080 }],
  ["[::]:80", { host: "::", port: 80 }],
  ["[fe80::1%eth0]:9480", { host: "fe80::1%eth0", port: 9480 }],
  ["host:00080", { host: "host", port: 80 }],
  // The `listen` setting's check once let these through (no upper bound): the listener then
  // failed at start-up. Every copy now refuses them, as --listen always did.
  ["127.0.0.1:65536", undefined],
  ["127.0.0.1:99999", undefined],
  ["127.0.0.1:123456", undefined],
  ["127.0.0.1", undefined],
  ["127.0.0.1:", undefined],
  ["::1:8080", undefined],
  ["[::1]", undefined],
  ["[::1]8080", undefined],
  ["a:b:80", undefined],
  ["host:80x", undefined],
  ["host:-1", undefined],
  ["host:+80", undefined],
  ["", undefined],
  ["off", undefined],
];

const LISTEN = RUN_FIELDS.find((f) => f.key === "listen");

describe("parseHostPort", () => {
  it.each(CASES)("%j → %j", (text, expected) => {
    expect(parseHostPort(text)).toEqual(expected);
  });
});

describe("every HOST:PORT caller applies parseHostPort", () => {
  it.each(CASES)("--listen %j", (text, expected) => {
    if (expected === undefined) {
      let caught: unknown;
      try {
        flagHostPort("--listen", text);
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(AgentError);
      expect(caught).toMatchObject({ code: "INVALID_ARGUMENT", details: { flag: "--listen" } });
      expect((caught as Error).message).toBe(
        `--listen ${JSON.stringify(text)} is not HOST:PORT; write it like 127.0.0.1:8080 or [::1]:8080`,
      );
    } else {
      expect(flagHostPort("--listen", text)).toEqual(expected);
    }
  });

  it.each(CASES)("the listen setting %j, and the settings' parse of it", (text, expected) => {
    if (LISTEN === undefined) throw new Error("RUN_FIELDS has no listen field");
    const checked = parseFieldValue(LISTEN, text);
    if (text === "off") {
      expect(checked).toEqual({ ok: true, value: "off" });
      return;
    }
    if (expected === undefined) {
      expect(checked).toEqual({ ok: false, expected: "HOST:PORT (such as 127.0.0.1:9480) or off" });
      expect(() => hostPort(text)).toThrow(AgentError);
    } else {
      expect(checked).toEqual({ ok: true, value: text });
      expect(hostPort(text)).toEqual(expected);
    }
  });
});

/**
 * The connection policy alone (src/control-plane/connection-policy.ts): which connection a flood
 * evicts, when a new one is refused, and how proven connections are kept. In memory, with the
 * time passed in.
 */
import { describe, expect, it } from "vitest";
import {
  ADMIN_IDENTITY,
  addressKey,
  ConnectionTable,
  type ConnectionLimits,
} from "../../src/control-plane/connection-policy.js";

const small: ConnectionLimits = { maxConnections: 8, maxUnproven: 4, maxUnprovenPerAddress: 3, maxPerIdentity: 2 };

function admitted(table: ConnectionTable, address: string, now: number): number {
  const a = table.open(address, now);
  if (!a.admitted) throw new Error("refused");
  return a.id;
}

describe("unproven connections", () => {
  it("a flood from one address evicts its own oldest idle connection, never refuses the new one", () => {
    const t = new ConnectionTable(small);
    const ids = [1, 2, 3].map((n) => admitted(t, "10.0.0.1", n));
    const a = t.open("10.0.0.1", 4);
    expect(a).toMatchObject({ admitted: true, evict: [ids[0]] });
    expect(t.unprovenCount).toBe(3);
  });

  it("at the per-address cap, the address's oldest idle goes first; busy ones only when none is idle", () => {
    const t = new ConnectionTable(small);
    const [a, b, c] = [1, 2, 3].map((n) => admitted(t, "10.0.0.1", n));
    t.requestStarted(a!, 4);
    expect(t.open("10.0.0.1", 5)).toMatchObject({ admitted: true, evict: [b] });
    const t2 = new ConnectionTable(small);
    const [x, y, z] = [1, 2, 3].map((n) => admitted(t2, "10.0.0.1", n));
    t2.requestStarted(y!, 4);
    t2.requestStarted(x!, 5);
    t2.requestStarted(z!, 6);
    // All busy: the one whose request started longest ago.
    expect(t2.open("10.0.0.1", 7)).toMatchObject({ admitted: true, evict: [y] });
    expect(c).toBeDefined();
  });

  it("another address's connections are not evicted for a flooding address", () => {
    const t = new ConnectionTable(small);
    const agent = admitted(t, "10.0.0.2", 0);
    for (let n = 1; n <= 20; n++) admitted(t, "10.0.0.1", n);
    // The per-address cap (3) keeps the flood to 3; the agent's connection stays.
    expect(t.unprovenCount).toBe(4);
    t.prove(agent, "agent:a", 21);
    expect(t.isProven(agent)).toBe(true);
  });

  it("at the total unproven cap, the oldest unproven of any address goes", () => {
    const t = new ConnectionTable(small);
    const first = admitted(t, "10.0.0.1", 1);
    admitted(t, "10.0.0.2", 2);
    admitted(t, "10.0.0.3", 3);
    admitted(t, "10.0.0.4", 4);
    expect(t.open("10.0.0.5", 5)).toMatchObject({ admitted: true, evict: [first] });
  });

  it("an idle connection that served a request is as old as its last answer", () => {
    const t = new ConnectionTable(small);
    const a = admitted(t, "10.0.0.1", 1);
    const b = admitted(t, "10.0.0.1", 2);
    admitted(t, "10.0.0.1", 3);
    t.requestStarted(a, 4);
    t.requestEnded(a, 5);
    expect(t.open("10.0.0.1", 6)).toMatchObject({ evict: [b] });
  });
});

describe("proven connections", () => {
  it("proving moves a connection out of the unproven caps; a flood never evicts it", () => {
    const t = new ConnectionTable(small);
    const agent = admitted(t, "10.0.0.1", 0);
    t.requestStarted(agent, 1);
    expect(t.prove(agent, "agent:a", 1)).toEqual({ proven: true, evict: [] });
    t.requestEnded(agent, 2);
    for (let n = 3; n < 100; n++) {
      const a = t.open(`10.0.${n}.1`, n);
      expect(a.evict).not.toContain(agent);
    }
    expect(t.isProven(agent)).toBe(true);
  });

  it("an identity over its cap evicts its own oldest idle connection; with all busy, the new one stays unproven", () => {
    const t = new ConnectionTable(small);
    const [a, b, c] = [1, 2, 3].map((n) => admitted(t, "10.0.0.1", n));
    t.prove(a!, "agent:x", 4);
    t.prove(b!, "agent:x", 5);
    expect(t.prove(c!, "agent:x", 6)).toEqual({ proven: true, evict: [a] });
    const d = admitted(t, "10.0.0.1", 7);
    t.requestStarted(b!, 8);
    t.requestStarted(c!, 8);
    expect(t.prove(d, "agent:x", 9)).toEqual({ proven: false, evict: [] });
    expect(t.isProven(d)).toBe(false);
    // Another identity is not limited by agent:x.
    expect(t.prove(d, "agent:y", 10)).toEqual({ proven: true, evict: [] });
  });

  it("at the hard cap, an unproven connection goes first, then an idle proven one, then the oldest of the agent holding the most", () => {
    const t = new ConnectionTable({ maxConnections: 4, maxUnproven: 2, maxUnprovenPerAddress: 2, maxPerIdentity: 4 });
    const proven = [1, 2, 3].map((n) => {
      const id = admitted(t, `10.0.0.${n}`, n);
      t.prove(id, "agent:a", n);
      return id;
    });
    const unproven = admitted(t, "10.0.0.4", 4);
    // 3 proven and 1 unproven: the unproven one goes.
    const next = t.open("10.0.0.9", 5);
    expect(next).toMatchObject({ admitted: true, evict: [unproven] });
    if (!next.admitted) return;
    t.prove(next.id, "agent:b", 6);
    for (const id of proven) t.requestStarted(id, 7);
    // 4 proven, one idle (agent:b's): it goes.
    const again = t.open("10.0.0.10", 8);
    expect(again).toMatchObject({ admitted: true, evict: [next.id] });
    if (!again.admitted) return;
    t.prove(again.id, "agent:c", 9);
    t.requestStarted(again.id, 9);
    // 4 proven and busy: agent:a holds 3 of them, and its oldest goes (not agent:c's, newer).
    const third = t.open("10.0.0.11", 10);
    expect(third).toMatchObject({ admitted: true, evict: [proven[0]] });
    if (!third.admitted) return;
    t.prove(third.id, "agent:c", 11);
    t.requestStarted(third.id, 11);
    // agent:a 2, agent:c 2: a tie goes to the oldest connection.
    expect(t.open("10.0.0.12", 12)).toMatchObject({ admitted: true, evict: [proven[1]] });
    expect(t.size).toBe(4);
  });

  it("busy admin connections are never evicted for others; with every connection the admin's, a new one is refused", () => {
    const t = new ConnectionTable({ maxConnections: 4, maxUnproven: 2, maxUnprovenPerAddress: 2, maxPerIdentity: 4 });
    const agent = admitted(t, "10.0.0.1", 1);
    t.prove(agent, "agent:a", 1);
    t.requestStarted(agent, 1);
    const admin = [2, 3, 4].map((n) => {
      const id = admitted(t, "10.0.0.2", n);
      t.prove(id, ADMIN_IDENTITY, n);
      t.requestStarted(id, n);
      return id;
    });
    // The agent holds the fewest, but it is the only one that may go.
    const next = t.open("10.0.0.3", 5);
    expect(next).toMatchObject({ admitted: true, evict: [agent] });
    if (!next.admitted) return;
    t.prove(next.id, ADMIN_IDENTITY, 6);
    t.requestStarted(next.id, 6);
    expect(t.open("10.0.0.3", 7)).toEqual({ admitted: false, evict: [] });
    for (const id of admin) expect(t.isProven(id)).toBe(true);
  });

  it("closing frees every count", () => {
    const t = new ConnectionTable(small);
    const a = admitted(t, "10.0.0.1", 1);
    const b = admitted(t, "10.0.0.1", 2);
    t.prove(b, "admin", 3);
    t.close(a);
    t.close(b);
    t.close(b);
    expect(t.size).toBe(0);
    for (let n = 0; n < 3; n++) expect(t.open("10.0.0.1", 4 + n).evict).toEqual([]);
  });

  it("refuses limits that leave no room for proven connections", () => {
    expect(
      () => new ConnectionTable({ maxConnections: 4, maxUnproven: 4, maxUnprovenPerAddress: 1, maxPerIdentity: 1 }),
    ).toThrow(/maxUnproven/);
    expect(
      () => new ConnectionTable({ maxConnections: 4, maxUnproven: 0, maxUnprovenPerAddress: 1, maxPerIdentity: 1 }),
    ).toThrow(/positive integer/);
  });
});

describe("addressKey", () => {
  it.each([
    ["127.0.0.1", "127.0.0.1"],
    ["::ffff:10.1.2.3", "10.1.2.3"],
    ["2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"],
    ["2001:db8:1:2::5", "2001:db8:1:2::/64"],
    ["2001:0db8::1", "2001:db8:0:0::/64"],
    ["::1", "0:0:0:0::/64"],
    ["fe80::1%eth0", "fe80:0:0:0::/64"],
    [undefined, "unknown"],
  ])("%s -> %s", (input, key) => {
    expect(addressKey(input)).toBe(key);
  });
});

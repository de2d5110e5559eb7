/**
 * Which connections the reference control plane keeps when it is flooded. Pure: no sockets and
 * no clock; server.ts tells it what happens on each connection and does what it decides.
 *
 * A connection is *unproven* until a request on it carries a valid per-agent credential or the
 * admin token; then it is *proven* (the pool token proves nothing: anyone holding it could flood).
 * A flood of unproven connections must never keep an agent out, even an agent behind the same
 * address (NAT, a proxy, or every test on 127.0.0.1), so a new connection is never refused to
 * make room for unproven ones: when an unproven cap is reached, the oldest unproven connection
 * (idle first, else the one whose request started longest ago) is evicted instead. A new agent
 * connection thus always gets in, and proves itself with its first request. Proven connections
 * are evicted when idle, for another proven connection of the same identity (over its own cap)
 * or at the hard cap. At the hard cap with every connection proven and busy (anyone holding the
 * pool token can enroll agents and keep each one's connections busy), the oldest busy connection
 * of the agent holding the most is evicted: a flood of proven connections then closes its own,
 * and a new connection of another agent or of the admin still gets in. The admin's connections
 * are never evicted while busy, so the admin needs no reserved connections; only when every
 * connection is the admin's is a new one refused.
 */

export interface ConnectionLimits {
  /** Open connections in all; a new one past it is admitted only by evicting another. */
  readonly maxConnections: number;
  /** Unproven connections in all. */
  readonly maxUnproven: number;
  /** Unproven connections from one address (an IPv6 /64 counts as one address). */
  readonly maxUnprovenPerAddress: number;
  /** Proven connections of one identity (one agent, or the admin). */
  readonly maxPerIdentity: number;
}

/** The identity server.ts proves admin connections with; never evicted while busy. */
export const ADMIN_IDENTITY = "admin";

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  maxConnections: 1024,
  maxUnproven: 256,
  maxUnprovenPerAddress: 64,
  maxPerIdentity: 64,
};

export type Admission =
  | { readonly admitted: true; readonly id: number; readonly evict: readonly number[] }
  | { readonly admitted: false; readonly evict: readonly number[] };

interface Entry {
  readonly id: number;
  readonly address: string;
  identity: string | undefined;
  /** Requests in progress on the connection. */
  busy: number;
  /** When it last became idle or busy: the age that decides who is evicted first. */
  since: number;
}

/**
 * The key per-address limits count by: IPv4 as is (an IPv4-mapped IPv6 address as its IPv4),
 * IPv6 by its /64, which one host usually holds whole.
 */
export function addressKey(remoteAddress: string | undefined): string {
  const address = (remoteAddress ?? "").split("%")[0] ?? "";
  if (address === "") return "unknown";
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1] !== undefined) return mapped[1];
  if (!address.includes(":")) return address;
  const [head = "", tail = ""] = address.split("::", 2);
  const left = head === "" ? [] : head.split(":");
  const right = tail === "" ? [] : tail.split(":");
  const groups = address.includes("::")
    ? [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((g) => g.toLowerCase().replace(/^0+(?=.)/, ""))
    .join(":")}::/64`;
}

function checkLimits(limits: ConnectionLimits): void {
  for (const [name, value] of Object.entries(limits))
    if (!Number.isInteger(value) || (value as number) < 1)
      throw new RangeError(`connection limit ${name} must be a positive integer, not ${String(value)}`);
  if (limits.maxUnproven >= limits.maxConnections)
    throw new RangeError("maxUnproven must be below maxConnections, or proven connections would have no room");
}

export class ConnectionTable {
  private nextId = 1;
  /** Both in the order of `since`, oldest first: an entry is moved to the end when it changes. */
  private readonly unproven = new Map<number, Entry>();
  private readonly proven = new Map<number, Entry>();
  private readonly unprovenByAddress = new Map<string, number>();
  private readonly provenByIdentity = new Map<string, number>();

  constructor(private readonly limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS) {
    checkLimits(limits);
  }

  get size(): number {
    return this.unproven.size + this.proven.size;
  }

  get unprovenCount(): number {
    return this.unproven.size;
  }

  get provenCount(): number {
    return this.proven.size;
  }

  /** A new connection from `address` (see addressKey): admitted, perhaps by evicting others. */
  open(address: string, nowMs: number): Admission {
    const evict: number[] = [];
    const drop = (entry: Entry | undefined): boolean => {
      if (entry === undefined) return false;
      this.close(entry.id);
      evict.push(entry.id);
      return true;
    };
    if ((this.unprovenByAddress.get(address) ?? 0) >= this.limits.maxUnprovenPerAddress)
      drop(this.oldestUnproven((e) => e.address === address));
    if (this.unproven.size >= this.limits.maxUnproven) drop(this.oldestUnproven(() => true));
    if (
      this.size >= this.limits.maxConnections &&
      !drop(this.oldestUnproven(() => true) ?? this.oldestIdleProven() ?? this.oldestOfBusiestAgent())
    )
      return { admitted: false, evict };
    const entry: Entry = { id: this.nextId++, address, identity: undefined, busy: 0, since: nowMs };
    this.unproven.set(entry.id, entry);
    this.unprovenByAddress.set(address, (this.unprovenByAddress.get(address) ?? 0) + 1);
    return { admitted: true, id: entry.id, evict };
  }

  /**
   * A request on connection `id` authenticated as `identity`: the connection becomes proven,
   * evicting the identity's oldest idle proven connection if it is at its cap. When all of the
   * identity's connections are busy, this one stays unproven (served, but evictable).
   */
  prove(id: number, identity: string, nowMs: number): { readonly proven: boolean; readonly evict: readonly number[] } {
    if (this.proven.has(id)) return { proven: true, evict: [] };
    const entry = this.unproven.get(id);
    if (entry === undefined) return { proven: false, evict: [] };
    const evict: number[] = [];
    if ((this.provenByIdentity.get(identity) ?? 0) >= this.limits.maxPerIdentity) {
      const victim = this.first(this.proven, (e) => e.identity === identity && e.busy === 0);
      if (victim === undefined) return { proven: false, evict };
      this.close(victim.id);
      evict.push(victim.id);
    }
    this.forgetUnproven(entry);
    entry.identity = identity;
    entry.since = nowMs;
    this.proven.set(id, entry);
    this.provenByIdentity.set(identity, (this.provenByIdentity.get(identity) ?? 0) + 1);
    return { proven: true, evict };
  }

  requestStarted(id: number, nowMs: number): void {
    const entry = this.find(id);
    if (entry === undefined) return;
    entry.busy++;
    if (entry.busy === 1) this.touch(entry, nowMs);
  }

  requestEnded(id: number, nowMs: number): void {
    const entry = this.find(id);
    if (entry === undefined || entry.busy === 0) return;
    entry.busy--;
    if (entry.busy === 0) this.touch(entry, nowMs);
  }

  isProven(id: number): boolean {
    return this.proven.has(id);
  }

  close(id: number): void {
    const entry = this.unproven.get(id);
    if (entry !== undefined) {
      this.forgetUnproven(entry);
      return;
    }
    const proven = this.proven.get(id);
    if (proven === undefined) return;
    this.proven.delete(id);
    const identity = proven.identity ?? "";
    const left = (this.provenByIdentity.get(identity) ?? 1) - 1;
    if (left > 0) this.provenByIdentity.set(identity, left);
    else this.provenByIdentity.delete(identity);
  }

  private forgetUnproven(entry: Entry): void {
    this.unproven.delete(entry.id);
    const left = (this.unprovenByAddress.get(entry.address) ?? 1) - 1;
    if (left > 0) this.unprovenByAddress.set(entry.address, left);
    else this.unprovenByAddress.delete(entry.address);
  }

  private find(id: number): Entry | undefined {
    return this.unproven.get(id) ?? this.proven.get(id);
  }

  /** Moves the entry to the end of its map: the maps stay in the order of `since`. */
  private touch(entry: Entry, nowMs: number): void {
    entry.since = nowMs;
    const map = this.proven.has(entry.id) ? this.proven : this.unproven;
    map.delete(entry.id);
    map.set(entry.id, entry);
  }

  /** The oldest idle unproven connection that matches, else the oldest busy one. */
  private oldestUnproven(match: (e: Entry) => boolean): Entry | undefined {
    return this.first(this.unproven, (e) => match(e) && e.busy === 0) ?? this.first(this.unproven, (e) => match(e));
  }

  private oldestIdleProven(): Entry | undefined {
    return this.first(this.proven, (e) => e.busy === 0);
  }

  /** The oldest connection of the agent identity that holds the most proven connections. */
  private oldestOfBusiestAgent(): Entry | undefined {
    let busiest: string | undefined;
    let most = 0;
    for (const [identity, count] of this.provenByIdentity)
      if (identity !== ADMIN_IDENTITY && count > most) {
        busiest = identity;
        most = count;
      }
    return busiest === undefined ? undefined : this.first(this.proven, (e) => e.identity === busiest);
  }

  private first(map: Map<number, Entry>, match: (e: Entry) => boolean): Entry | undefined {
    for (const e of map.values()) if (match(e)) return e;
    return undefined;
  }
}

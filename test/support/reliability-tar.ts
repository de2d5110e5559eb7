/**
 * A tar writer for hostile archives: any name, link target, type and size, ustar prefixes, pax
 * extended headers and GNU long names, written byte by byte (the system tar refuses to create
 * most of what the tests need).
 */
import { gzipSync } from "node:zlib";

export interface TarEntrySpec {
  readonly name: string;
  /** "0" file, "1" hardlink, "2" symlink, "3" char device, "4" block device, "5" dir, "6" FIFO, ... */
  readonly type?: string;
  readonly data?: Uint8Array | string;
  readonly linkname?: string;
  readonly mode?: number;
  /** Written in the ustar prefix field (the name is then `${prefix}/${name}`). */
  readonly prefix?: string;
  /** Size written in the header when it must differ from the data's length. */
  readonly declaredSize?: number;
  /** Emit the name (and link name) through a pax extended header instead of the header fields. */
  readonly pax?: Readonly<Record<string, string>>;
  /** Emit the name through a GNU long-name ("L") entry. */
  readonly gnuLongName?: boolean;
}

const BLOCK = 512;

function put(buf: Buffer, offset: number, length: number, text: string): void {
  const bytes = Buffer.from(text, "utf8");
  bytes.copy(buf, offset, 0, Math.min(length, bytes.length));
}

function octal(value: number, length: number): string {
  return `${value.toString(8).padStart(length - 1, "0")}\0`;
}

function header(spec: {
  name: string;
  type: string;
  size: number;
  linkname?: string;
  mode?: number;
  prefix?: string;
}): Buffer {
  const h = Buffer.alloc(BLOCK);
  put(h, 0, 100, spec.name);
  put(h, 100, 8, octal(spec.mode ?? 0o644, 8));
  put(h, 108, 8, octal(0, 8));
  put(h, 116, 8, octal(0, 8));
  put(h, 124, 12, octal(spec.size, 12));
  put(h, 136, 12, octal(1_700_000_000, 12));
  h.fill(0x20, 148, 156);
  put(h, 156, 1, spec.type);
  put(h, 157, 100, spec.linkname ?? "");
  put(h, 257, 6, "ustar\0");
  put(h, 263, 2, "00");
  put(h, 345, 155, spec.prefix ?? "");
  let sum = 0;
  for (const b of h) sum += b;
  put(h, 148, 8, `${sum.toString(8).padStart(6, "0")}\0 `);
  return h;
}

function padded(data: Uint8Array): Buffer {
  const pad = (BLOCK - (data.byteLength % BLOCK)) % BLOCK;
  return Buffer.concat([Buffer.from(data), Buffer.alloc(pad)]);
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

export function tar(entries: readonly TarEntrySpec[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = typeof e.data === "string" ? Buffer.from(e.data, "utf8") : Buffer.from(e.data ?? new Uint8Array());
    if (e.pax) {
      const text = Buffer.from(
        Object.entries(e.pax)
          .map(([k, v]) => paxRecord(k, v))
          .join(""),
        "utf8",
      );
      parts.push(header({ name: "PaxHeader", type: "x", size: text.byteLength }), padded(text));
    }
    if (e.gnuLongName) {
      const name = Buffer.from(`${e.name}\0`, "utf8");
      parts.push(header({ name: "././@LongLink", type: "L", size: name.byteLength }), padded(name));
    }
    parts.push(
      header({
        name: e.gnuLongName ? e.name.slice(0, 99) : e.name,
        type: e.type ?? "0",
        size: e.declaredSize ?? data.byteLength,
        ...(e.linkname === undefined ? {} : { linkname: e.linkname }),
        ...(e.mode === undefined ? {} : { mode: e.mode }),
        ...(e.prefix === undefined ? {} : { prefix: e.prefix }),
      }),
      padded(data),
    );
  }
  parts.push(Buffer.alloc(BLOCK * 2));
  return Buffer.concat(parts);
}

export function tarGzOf(entries: readonly TarEntrySpec[]): Buffer {
  return gzipSync(tar(entries));
}

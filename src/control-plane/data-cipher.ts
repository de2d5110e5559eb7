/**
 * Values at rest in the control plane's data file (passwords, configuration archives, log text,
 * events, lease ids) are sealed with AES-256-GCM. Each value gets its own key, derived with
 * HKDF-SHA256 from the data key and a random 128-bit salt, and a random 96-bit IV, so the data
 * key has no practical limit on the number of values it seals. The associated data names the
 * value's place (table, row id, column): a sealed value moved to another row or column fails to
 * open. Computation only.
 *
 * Layout: version (1 byte, 1) | salt (16) | iv (12) | tag (16) | ciphertext.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";

const VERSION = 1;
const SALT_BYTES = 16;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = 1 + SALT_BYTES + IV_BYTES + TAG_BYTES;
const INFO = Buffer.from("oci-cred-agent control-plane data v1", "ascii");

export const DATA_KEY_BYTES = 32;

/** Where a sealed value lives; it is authenticated with the value. */
export interface ValuePlace {
  readonly table: string;
  readonly row: string;
  readonly column: string;
}

function aad(place: ValuePlace): Buffer {
  return Buffer.from(`${place.table}\0${place.row}\0${place.column}`, "utf8");
}

function valueKey(dataKey: Buffer, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync("sha256", dataKey, salt, INFO, DATA_KEY_BYTES));
}

export function sealValue(dataKey: Buffer, place: ValuePlace, plaintext: Buffer): Buffer {
  const salt = randomBytes(SALT_BYTES);
  const iv = randomBytes(IV_BYTES);
  const key = valueKey(dataKey, salt);
  try {
    const cipher = createCipheriv("aes-256-gcm", key, iv);
    cipher.setAAD(aad(place));
    const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([Buffer.from([VERSION]), salt, iv, cipher.getAuthTag(), ct]);
  } finally {
    key.fill(0);
  }
}

/** The plaintext, or undefined when the value does not open (another key, another place, altered). */
export function openValue(dataKey: Buffer, place: ValuePlace, sealed: Uint8Array): Buffer | undefined {
  const bytes = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  if (bytes.byteLength < HEADER_BYTES || bytes[0] !== VERSION) return undefined;
  const salt = bytes.subarray(1, 1 + SALT_BYTES);
  const iv = bytes.subarray(1 + SALT_BYTES, 1 + SALT_BYTES + IV_BYTES);
  const tag = bytes.subarray(1 + SALT_BYTES + IV_BYTES, HEADER_BYTES);
  const key = valueKey(dataKey, salt);
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, iv);
    decipher.setAAD(aad(place));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(bytes.subarray(HEADER_BYTES)), decipher.final()]);
  } catch {
    return undefined;
  } finally {
    key.fill(0);
  }
}

/**
 * Every form in which a password could leak into an answer, a log or a file: raw, JSON-escaped,
 * URL-encoded, hex, and base64 / base64url of the password and of `username:password` at all
 * three base64 alignments (as inside a longer encoded text).
 */
export function leakForms(secret: string, username: string): string[] {
  const forms = [
    secret,
    JSON.stringify(secret).slice(1, -1),
    encodeURIComponent(secret),
    Buffer.from(secret, "utf8").toString("hex"),
  ];
  for (const text of [secret, `${username}:${secret}`]) {
    const bytes = Buffer.from(text, "utf8");
    forms.push(bytes.toString("base64").replace(/=+$/, ""), bytes.toString("base64url"));
    for (const pad of [1, 2]) {
      const shifted = Buffer.concat([Buffer.alloc(pad, 0x41), bytes]).toString("base64");
      forms.push(shifted.slice(4, shifted.length - 4));
    }
  }
  return forms;
}

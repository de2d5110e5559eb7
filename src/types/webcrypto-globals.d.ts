// @hpke/core's typings name the Web Crypto types as globals (as in browsers and Deno); in Node
// they live in node:crypto's webcrypto namespace. These aliases make them resolve without
// pulling in the whole DOM library.
import type { webcrypto } from "node:crypto";

declare global {
  type CryptoKey = webcrypto.CryptoKey;
  type CryptoKeyPair = webcrypto.CryptoKeyPair;
  type JsonWebKey = webcrypto.JsonWebKey;
}

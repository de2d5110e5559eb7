// The layer table (docs/architecture.md) as dependency-cruiser rules: `npm run layers` fails on
// any import a folder of src/ is not allowed, on any import cycle within src/, on an I/O module in
// the pure core, and on src/ reaching into test/, bench/ or scripts/. Type-only imports count.
// test/tooling/layers.test.ts proves the rules fire.

/**
 * Lowest layer first. Each folder of src/ may import itself and the folders listed for it, and
 * nothing else in src/. A folder missing here may import nothing in src/ (add it to the table).
 */
const LAYERS = {
  core: [],
  protocol: ["core"],
  crypto: ["core"],
  http: ["core"],
  fs: ["core"],
  keys: ["core", "crypto", "fs"],
  config: ["core", "keys"],
  registry: ["core", "http"],
  // Registry credentials minted from the pool's cloud identity; handed to credentials, daemon and
  // sidecar by the composition root (they see only the CloudMinter interface of core).
  cloud: ["core", "http"],
  credentials: ["core", "crypto", "fs", "keys", "registry", "http"],
  // How phases run: a process, the bubblewrap sandbox, or the runner over a socket.
  execution: ["core", "protocol", "fs"],
  // The runner: runs phases for an agent in another container; never holds a key or token.
  runner: ["core", "protocol", "execution", "fs"],
  // The hook a foreign runner calls (`oci-cred-agent hook`): a socket client, never a key or token of the agent.
  hook: ["core", "protocol", "fs"],
  // config: the typed settings the daemon runs with (AgentSettings), nothing that reads them.
  daemon: ["core", "protocol", "crypto", "http", "fs", "keys", "config", "registry", "credentials", "execution"],
  ops: ["core", "protocol", "daemon"],
  // Sidecar mode: the daemon's control-plane client and lease keeper are reused, never execution
  // (a sidecar runs no phase) nor the runner.
  sidecar: ["core", "protocol", "crypto", "fs", "keys", "credentials", "daemon"],
  // fs: the data file is written with the same exclusive create as the agent's files.
  "control-plane": ["core", "protocol", "crypto", "http", "fs", "registry"],
  app: [
    "core",
    "protocol",
    "crypto",
    "http",
    "fs",
    "keys",
    "config",
    "registry",
    "cloud",
    "credentials",
    "execution",
    "runner",
    "daemon",
    "ops",
    "sidecar",
    "control-plane",
  ],
  cli: null, // everything
  // Ambient type declarations (webcrypto globals for @hpke/core); nothing imports them.
  types: [],
};

/** Modules the pure core must not import: files, processes, sockets, HTTP. */
const CORE_FORBIDDEN_MODULES =
  "^(node:)?(fs|fs/promises|child_process|net|http|https|http2|dgram|tls)$|(^|/)node_modules/undici/";

const layerRules = Object.entries(LAYERS)
  .filter(([, allowed]) => allowed !== null)
  .map(([folder, allowed]) => ({
    name: `layer-${folder}`,
    comment: allowed.length
      ? `src/${folder}/ may import only src/{${allowed.join(",")}}/ (layer table, docs/architecture.md)`
      : `src/${folder}/ may import nothing else in src/ (layer table, docs/architecture.md)`,
    severity: "error",
    from: { path: `^src/${folder}/` },
    to: { path: "^src/", pathNot: `^src/(${[folder, ...allowed].join("|")})/` },
  }));

export default {
  forbidden: [
    ...layerRules,
    {
      name: "layer-unknown-folder",
      comment: "every folder of src/ has a row in the layer table (.dependency-cruiser.mjs LAYERS)",
      severity: "error",
      from: { path: "^src/", pathNot: `^src/(${Object.keys(LAYERS).join("|")})/` },
      to: {},
    },
    {
      name: "core-is-pure",
      comment: "src/core/ does no I/O: no file system, processes, sockets or HTTP (pass them in from an edge)",
      severity: "error",
      from: { path: "^src/core/" },
      to: { path: CORE_FORBIDDEN_MODULES },
    },
    {
      name: "src-not-to-tests",
      comment: "src/ never imports test/, bench/ or scripts/ (they may import src/)",
      severity: "error",
      from: { path: "^src/" },
      to: { path: "^(test|bench|scripts)/" },
    },
    {
      name: "no-circular",
      comment: "no import cycle within src/",
      severity: "error",
      from: { path: "^src/" },
      to: { circular: true },
    },
    {
      name: "not-to-unresolvable",
      comment: "an import that resolves to nothing hides a dependency from every other rule",
      severity: "error",
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^(dist|dist-check|coverage)/" },
    // Count `import type` too: a type is a dependency on the layer that defines it.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default", "types"],
      mainFields: ["module", "main", "types", "typings"],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};

/**
 * The control plane's state in SQLite (`--data-file`), through Node's built-in `node:sqlite`: the
 * store's write-through persistence (store.ts, `StorePersistence`).
 *
 * Durability: WAL with synchronous=FULL, so every commit syncs the WAL before the store call
 * returns, and so before the HTTP answer: what was acknowledged survives a kill -9 and a power
 * loss (NORMAL survives a kill -9 only). The file is created 0600 by the control plane; SQLite
 * gives its -wal and -shm files the database's mode. Deleted rows are overwritten
 * (secure_delete), and the WAL is truncated after checkpoints past 64 MiB.
 *
 * Secrets at rest are sealed under the data key (data-cipher.ts), bound to their table, row and
 * column: integration passwords, configuration archives, events, log text, lease ids. Integration,
 * agent and run records are JSON without those; an agent holds the SHA-256 of its credential,
 * never the credential.
 *
 * A write that fails (disk full, I/O error, the file taken over by another control plane) is
 * rolled back and poisons the storage: every later write is refused with the same error and
 * `onFailure` is called once, so the control plane stops instead of serving from memory what the
 * file does not hold. Restarted, it serves what was committed.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { constants } from "node:fs";
import { open, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { AgentError, errnoCode } from "../core/errors.js";
import { openNewFile, realFs } from "../fs/secure-fs.js";
import type { RunEvent } from "../protocol/agent-api.js";
import { openValue, sealValue, type ValuePlace } from "./data-cipher.js";
import type { AuditEntry } from "./integration-audit.js";
import type {
  AgentRecord,
  Integration,
  LeaseRecord,
  RunLog,
  RunRecord,
  StorePersistence,
  StoreSnapshot,
  EnrollmentTokenRecord,
} from "./store.js";

/** `PRAGMA application_id`: "OCAC". A database with another id belongs to something else. */
const APPLICATION_ID = 0x4f434143;
const SQLITE_HEADER = Buffer.from("SQLite format 3\0", "latin1");
const KEY_CHECK = Buffer.from("oci-cred-agent control-plane data key check", "ascii");

/**
 * MIGRATIONS[v] takes a database from schema version v (`PRAGMA user_version`) to v + 1, in one
 * transaction with the version change. Append only; never edit a released step.
 */
const MIGRATIONS: readonly ((db: DatabaseSync, key: Buffer) => void)[] = [
  (db, key) => {
    db.exec(`
      CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
      CREATE TABLE integrations (id TEXT PRIMARY KEY, record TEXT NOT NULL, password BLOB NOT NULL);
      CREATE TABLE agents (id TEXT PRIMARY KEY, record TEXT NOT NULL);
      CREATE TABLE audit (seq INTEGER PRIMARY KEY, record TEXT NOT NULL);
      CREATE TABLE enrollment_tokens (id TEXT PRIMARY KEY, record TEXT NOT NULL);
      CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        record TEXT NOT NULL,
        lease_id BLOB,
        error BLOB,
        finished_at_ms INTEGER
      );
      CREATE INDEX runs_finished ON runs (finished_at_ms) WHERE finished_at_ms IS NOT NULL;
      CREATE TABLE run_configurations (
        run_id TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
        data BLOB NOT NULL
      );
      CREATE TABLE run_events (
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        data BLOB NOT NULL,
        UNIQUE (run_id, seq)
      );
      CREATE TABLE run_logs (
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        data BLOB NOT NULL,
        UNIQUE (run_id, seq)
      );
    `);
    db.prepare("INSERT INTO meta (name, value) VALUES ('key_check', ?)").run(
      sealValue(key, { table: "meta", row: "key_check", column: "value" }, KEY_CHECK),
    );
    db.exec(`PRAGMA application_id = ${APPLICATION_ID}`);
  },
];

const SCHEMA_VERSION = MIGRATIONS.length;

export interface SqliteStorageOptions {
  /** FULL unless said (the storage benchmark measures NORMAL beside it). */
  readonly synchronous?: "FULL" | "NORMAL";
  /** Called once, with the error, when a write fails: the control plane must stop. */
  readonly onFailure?: (error: AgentError) => void;
}

function sqliteErrcode(error: unknown): number | undefined {
  if (errnoCode(error) !== "ERR_SQLITE_ERROR" || typeof error !== "object" || error === null) return undefined;
  const code = (error as { errcode?: unknown }).errcode;
  return typeof code === "number" ? code : -1;
}

function sqliteReason(error: unknown): string {
  const errstr = typeof error === "object" && error !== null ? (error as { errstr?: unknown }).errstr : undefined;
  return typeof errstr === "string" ? errstr : (errnoCode(error) ?? "error");
}

/** SQLITE_CORRUPT (11) and SQLITE_NOTADB (26), with their extended codes. */
function isCorruption(error: unknown): boolean {
  const code = sqliteErrcode(error);
  return code !== undefined && ((code & 0xff) === 11 || (code & 0xff) === 26);
}

function corrupt(path: string, what: string, cause?: unknown): AgentError {
  return new AgentError(
    "DATA_FILE_CORRUPT",
    `the data file ${path} is damaged (${what}); restore it from a backup (docs/operations.md, "The reference control plane's data file"), or move it away to start empty`,
    { path },
    { cause },
  );
}

/** Checks what is at `path` before SQLite opens it, and creates it (0600) when nothing is. */
async function prepareFile(path: string): Promise<void> {
  let st;
  try {
    st = await stat(path);
  } catch (error) {
    if (errnoCode(error) !== "ENOENT") throw openFailed(path, error);
    await createFile(path);
    return;
  }
  if (!st.isFile())
    throw new AgentError(
      "DATA_FILE_OPEN_FAILED",
      `--data-file ${path} is not a regular file; point it at the database file`,
      {
        path,
      },
    );
  for (const [file, mode] of [[path, st.mode] as const, ...(await siblings(path))]) {
    if ((mode & 0o077) !== 0)
      throw new AgentError(
        "DATA_FILE_PERMISSIONS",
        `${file} has mode ${(mode & 0o777).toString(8).padStart(4, "0")}: group or others may read the control plane's state; run: chmod 600 ${file}`,
        { path: file },
      );
  }
  if (st.size === 0) return;
  const handle = await open(path, constants.O_RDONLY);
  const head = Buffer.alloc(SQLITE_HEADER.byteLength);
  try {
    await handle.read(head, 0, head.byteLength, 0);
  } finally {
    await handle.close();
  }
  if (head.equals(SQLITE_HEADER)) return;
  if (/^\s*\{/.test(head.toString("latin1")))
    throw new AgentError(
      "DATA_FILE_OLD_FORMAT",
      `--data-file ${path} is a JSON data file of an earlier version, not an SQLite database; it cannot be read any more: move it away (with its ${path}.key), start with a new --data-file, and create the integrations again`,
      { path },
    );
  throw corrupt(path, "not an SQLite database");
}

async function siblings(path: string): Promise<[string, number][]> {
  const out: [string, number][] = [];
  for (const file of [`${path}-wal`, `${path}-shm`]) {
    try {
      out.push([file, (await stat(file)).mode]);
    } catch (error) {
      if (errnoCode(error) !== "ENOENT") throw openFailed(file, error);
    }
  }
  return out;
}

async function createFile(path: string): Promise<void> {
  try {
    const handle = await openNewFile(realFs, path);
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    const dir = await open(dirname(path), constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch (error) {
    throw openFailed(path, error);
  }
}

function openFailed(path: string, error: unknown): AgentError {
  const code = errnoCode(error);
  const hint =
    code === "ENOENT"
      ? `create its directory ${dirname(path)} first (mode 0700, owned by the control plane's user)`
      : "check the owner and mode of the file and its directory";
  return new AgentError(
    "DATA_FILE_OPEN_FAILED",
    `cannot open --data-file ${path} (${code === "ERR_SQLITE_ERROR" ? sqliteReason(error) : (code ?? "error")}); ${hint}`,
    { path },
    { cause: error },
  );
}

interface Statements {
  owner: StatementSync;
  putIntegration: StatementSync;
  deleteIntegration: StatementSync;
  putAgent: StatementSync;
  deleteAgent: StatementSync;
  insertRun: StatementSync;
  insertConfiguration: StatementSync;
  updateRun: StatementSync;
  deleteConfiguration: StatementSync;
  appendEvent: StatementSync;
  appendLog: StatementSync;
  deleteRun: StatementSync;
  appendAudit: StatementSync;
  putEnrollmentToken: StatementSync;
  deleteEnrollmentToken: StatementSync;
}

type StoredLease = Omit<LeaseRecord, "id">;

export class SqliteStorage implements StorePersistence {
  private readonly statements: Statements;
  private depth = 0;
  private failure: AgentError | undefined;
  private closed = false;

  private constructor(
    private readonly path: string,
    private readonly db: DatabaseSync,
    private readonly key: Buffer,
    private readonly ownerToken: Buffer,
    private readonly onFailure: (error: AgentError) => void,
  ) {
    const p = (sql: string): StatementSync => db.prepare(sql);
    this.statements = {
      owner: p("SELECT value FROM meta WHERE name = 'owner'"),
      putIntegration: p(
        "INSERT INTO integrations (id, record, password) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET record = excluded.record, password = excluded.password",
      ),
      deleteIntegration: p("DELETE FROM integrations WHERE id = ?"),
      putAgent: p(
        "INSERT INTO agents (id, record) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET record = excluded.record",
      ),
      deleteAgent: p("DELETE FROM agents WHERE id = ?"),
      insertRun: p("INSERT INTO runs (id, status, record, lease_id, error, finished_at_ms) VALUES (?, ?, ?, ?, ?, ?)"),
      insertConfiguration: p("INSERT INTO run_configurations (run_id, data) VALUES (?, ?)"),
      updateRun: p("UPDATE runs SET status = ?, record = ?, lease_id = ?, error = ?, finished_at_ms = ? WHERE id = ?"),
      deleteConfiguration: p("DELETE FROM run_configurations WHERE run_id = ?"),
      appendEvent: p("INSERT INTO run_events (run_id, seq, data) VALUES (?, ?, ?)"),
      appendLog: p("INSERT INTO run_logs (run_id, seq, data) VALUES (?, ?, ?)"),
      deleteRun: p("DELETE FROM runs WHERE id = ?"),
      appendAudit: p("INSERT INTO audit (seq, record) VALUES (?, ?)"),
      putEnrollmentToken: p(
        "INSERT INTO enrollment_tokens (id, record) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET record = excluded.record",
      ),
      deleteEnrollmentToken: p("DELETE FROM enrollment_tokens WHERE id = ?"),
    };
  }

  /**
   * Opens (or creates, 0600) the database at `path` with the data key: refuses an earlier JSON
   * data file, a foreign or damaged database, one of a newer schema, and a key that does not open
   * its check value. Migrates an older schema. Takes the file over: a control plane still writing
   * to it stops at its next write (DATA_FILE_TAKEN_OVER).
   */
  static async open(path: string, key: Buffer, options: SqliteStorageOptions = {}): Promise<SqliteStorage> {
    await prepareFile(path);
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(path);
    } catch (error) {
      throw openFailed(path, error);
    }
    try {
      const ownerToken = SqliteStorage.setUp(db, path, key, options.synchronous ?? "FULL");
      // A copy of its own: the caller may wipe the key it read.
      return new SqliteStorage(path, db, Buffer.from(key), ownerToken, options.onFailure ?? (() => undefined));
    } catch (error) {
      db.close();
      if (error instanceof AgentError) throw error;
      if (isCorruption(error)) throw corrupt(path, sqliteReason(error), error);
      throw openFailed(path, error);
    }
  }

  private static setUp(db: DatabaseSync, path: string, key: Buffer, synchronous: "FULL" | "NORMAL"): Buffer {
    const pragma = (sql: string): unknown => Object.values(db.prepare(`PRAGMA ${sql}`).get() ?? {})[0];
    db.exec("PRAGMA busy_timeout = 5000");
    if (pragma("journal_mode = WAL") !== "wal")
      throw new AgentError(
        "DATA_FILE_OPEN_FAILED",
        `--data-file ${path}: SQLite cannot use write-ahead logging there (a network file system?); put the data file on a local file system`,
        { path },
      );
    db.exec(`PRAGMA synchronous = ${synchronous}`);
    db.exec("PRAGMA secure_delete = ON");
    db.exec("PRAGMA foreign_keys = ON");
    db.exec(`PRAGMA journal_size_limit = ${64 * 1024 * 1024}`);
    const check = db.prepare("PRAGMA quick_check").all();
    const problems = check.map((r) => String(Object.values(r)[0])).filter((r) => r !== "ok");
    if (problems.length > 0) throw corrupt(path, problems.slice(0, 3).join("; "));

    const appId = pragma("application_id");
    const version = Number(pragma("user_version"));
    const tables = Number(db.prepare("SELECT count(*) AS n FROM sqlite_master").get()?.["n"] ?? 0);
    if (!(appId === 0 && version === 0 && tables === 0) && appId !== APPLICATION_ID)
      throw new AgentError(
        "DATA_FILE_FOREIGN",
        `--data-file ${path} is an SQLite database of something else, not of the control plane; give a new path (the control plane creates the file)`,
        { path },
      );
    if (version > SCHEMA_VERSION)
      throw new AgentError(
        "DATA_FILE_TOO_NEW",
        `--data-file ${path} has schema version ${version}, newer than this control plane's ${SCHEMA_VERSION}; run the version that wrote it, or a newer one`,
        { path, version },
      );
    for (let v = version; v < SCHEMA_VERSION; v++) {
      db.exec("BEGIN IMMEDIATE");
      try {
        MIGRATIONS[v]?.(db, key);
        db.exec(`PRAGMA user_version = ${v + 1}`);
        db.exec("COMMIT");
      } catch (error) {
        db.exec("ROLLBACK");
        throw error;
      }
    }

    const sealed = db.prepare("SELECT value FROM meta WHERE name = 'key_check'").get()?.["value"];
    const opened =
      sealed instanceof Uint8Array
        ? openValue(key, { table: "meta", row: "key_check", column: "value" }, sealed)
        : undefined;
    if (opened === undefined || !opened.equals(KEY_CHECK))
      throw new AgentError(
        "DATA_KEY_WRONG",
        `the data key does not open --data-file ${path}: it was written under another key; give the key it was created with (--data-key-file, or the systemd credential data-key)`,
        { path },
      );
    const ownerToken = randomBytes(16);
    db.prepare(
      "INSERT INTO meta (name, value) VALUES ('owner', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    ).run(ownerToken);
    return ownerToken;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.db.close();
    } catch {
      // Closing checkpoints the WAL; whatever was committed is in the WAL already.
    }
    this.key.fill(0);
  }

  // ---- sealing ----------------------------------------------------------------------------

  private seal(place: ValuePlace, plaintext: Buffer | string): Buffer {
    return sealValue(this.key, place, typeof plaintext === "string" ? Buffer.from(plaintext, "utf8") : plaintext);
  }

  private open(place: ValuePlace, sealed: unknown): Buffer {
    const plain = sealed instanceof Uint8Array ? openValue(this.key, place, sealed) : undefined;
    if (plain === undefined)
      throw corrupt(this.path, `${place.table} ${place.row} ${place.column} does not open under the data key`);
    return plain;
  }

  // ---- writes -----------------------------------------------------------------------------

  transaction<T>(fn: () => T): T {
    if (this.depth > 0) return fn();
    if (this.failure) throw this.failure;
    if (this.closed) throw new Error("the data file is closed");
    try {
      this.db.exec("BEGIN IMMEDIATE");
    } catch (error) {
      throw this.fail(error);
    }
    this.depth = 1;
    try {
      const owner = this.statements.owner.get()?.["value"];
      if (!(owner instanceof Uint8Array) || owner.byteLength !== 16 || !timingSafeEqual(owner, this.ownerToken))
        throw this.fail(
          new AgentError(
            "DATA_FILE_TAKEN_OVER",
            `another control plane opened --data-file ${this.path} and writes to it now; this one stops. Run one control plane per data file`,
            { path: this.path },
          ),
        );
      const result = fn();
      this.db.exec("COMMIT");
      return result;
    } catch (error) {
      try {
        this.db.exec("ROLLBACK");
      } catch {
        // No transaction left to roll back (SQLite ended it), or the failure below is what counts.
      }
      if (sqliteErrcode(error) !== undefined) throw this.fail(error);
      throw error;
    } finally {
      this.depth = 0;
    }
  }

  private fail(error: unknown): AgentError {
    if (this.failure) return this.failure;
    this.failure =
      error instanceof AgentError
        ? error
        : new AgentError(
            "DATA_FILE_WRITE_FAILED",
            `writing --data-file ${this.path} failed (${sqliteReason(error)}); the control plane stops rather than serve what the file does not hold. Free space or repair the disk, then start it again: what was acknowledged is in the file`,
            { path: this.path },
            { cause: error },
          );
    this.onFailure(this.failure);
    return this.failure;
  }

  putIntegration(integration: Integration): void {
    const { password, ...rest } = integration;
    const sealed = this.seal({ table: "integrations", row: integration.id, column: "password" }, password);
    this.transaction(() => this.statements.putIntegration.run(integration.id, JSON.stringify(rest), sealed));
  }

  deleteIntegration(id: string): void {
    this.transaction(() => this.statements.deleteIntegration.run(id));
  }

  putAgent(agent: AgentRecord): void {
    this.transaction(() => this.statements.putAgent.run(agent.id, JSON.stringify(agent)));
  }

  deleteAgent(id: string): void {
    this.transaction(() => this.statements.deleteAgent.run(id));
  }

  /**
   * A run's row: the record in clear, its lease id and its error sealed (the error's message is
   * the agent's text, as free as its logs).
   */
  private runColumns(run: RunRecord): [string, string, Buffer | null, Buffer | null, number | null] {
    const { configuration: _c, events: _e, logs: _l, lease, error, ...rest } = run;
    let stored: StoredLease | undefined;
    let leaseId: Buffer | null = null;
    if (lease) {
      const { id, ...others } = lease;
      stored = others;
      leaseId = this.seal({ table: "runs", row: run.id, column: "lease_id" }, id);
    }
    const sealedError =
      error === undefined ? null : this.seal({ table: "runs", row: run.id, column: "error" }, JSON.stringify(error));
    const finished = run.finished_at === undefined ? null : Date.parse(run.finished_at);
    return [run.status, JSON.stringify({ ...rest, lease: stored }), leaseId, sealedError, finished];
  }

  insertRun(run: RunRecord): void {
    const [status, record, leaseId, error, finished] = this.runColumns(run);
    const configuration = this.seal({ table: "run_configurations", row: run.id, column: "data" }, run.configuration);
    this.transaction(() => {
      this.statements.insertRun.run(run.id, status, record, leaseId, error, finished);
      this.statements.insertConfiguration.run(run.id, configuration);
    });
  }

  updateRun(run: RunRecord): void {
    const [status, record, leaseId, error, finished] = this.runColumns(run);
    this.transaction(() => {
      this.statements.updateRun.run(status, record, leaseId, error, finished, run.id);
      // The configuration (tfvars) goes as soon as the run ends, whatever ended it.
      if (run.finished_at !== undefined) this.statements.deleteConfiguration.run(run.id);
    });
  }

  appendEvent(runId: string, index: number, event: RunEvent): void {
    const row = `${runId}/${index}`;
    const sealed = this.seal({ table: "run_events", row, column: "data" }, JSON.stringify(event));
    this.transaction(() => this.statements.appendEvent.run(runId, index, sealed));
  }

  appendLog(runId: string, index: number, log: RunLog): void {
    const row = `${runId}/${index}`;
    const sealed = this.seal({ table: "run_logs", row, column: "data" }, JSON.stringify(log));
    this.transaction(() => this.statements.appendLog.run(runId, index, sealed));
  }

  /** Audit entries name changes, never a secret: stored as they are. */
  appendAudit(entry: AuditEntry): void {
    this.transaction(() => this.statements.appendAudit.run(entry.seq, JSON.stringify(entry)));
  }

  /** An enrollment token is kept as its SHA-256 only, like an agent's credential. */
  putEnrollmentToken(token: EnrollmentTokenRecord): void {
    this.transaction(() => this.statements.putEnrollmentToken.run(token.id, JSON.stringify(token)));
  }

  deleteEnrollmentToken(id: string): void {
    this.transaction(() => this.statements.deleteEnrollmentToken.run(id));
  }

  deleteRuns(ids: readonly string[]): void {
    this.transaction(() => {
      for (const id of ids) this.statements.deleteRun.run(id);
    });
  }

  // ---- load -------------------------------------------------------------------------------

  load(): StoreSnapshot {
    try {
      return this.loadAll();
    } catch (error) {
      if (error instanceof AgentError) throw error;
      throw corrupt(this.path, error instanceof SyntaxError ? "a record is not JSON" : sqliteReason(error), error);
    }
  }

  private loadAll(): StoreSnapshot {
    const integrations = this.db
      .prepare("SELECT id, record, password FROM integrations ORDER BY rowid")
      .all()
      .map((row): Integration => {
        const id = String(row["id"]);
        const rest = JSON.parse(String(row["record"])) as Omit<Integration, "password">;
        const password = this.open({ table: "integrations", row: id, column: "password" }, row["password"]);
        return { ...rest, password: password.toString("utf8") };
      });
    const agents = this.db
      .prepare("SELECT record FROM agents ORDER BY rowid")
      .all()
      // Records of earlier versions have no role: they are agents.
      .map(
        (row): AgentRecord =>
          ({ role: "agent", ...(JSON.parse(String(row["record"])) as Partial<AgentRecord>) }) as AgentRecord,
      );
    const events = this.grouped(
      "run_events",
      (place, data) => JSON.parse(this.open(place, data).toString("utf8")) as RunEvent,
    );
    const logs = this.grouped(
      "run_logs",
      (place, data) => JSON.parse(this.open(place, data).toString("utf8")) as RunLog,
    );
    const configurations = new Map<string, Buffer>();
    for (const row of this.db.prepare("SELECT run_id, data FROM run_configurations").all()) {
      const runId = String(row["run_id"]);
      configurations.set(runId, this.open({ table: "run_configurations", row: runId, column: "data" }, row["data"]));
    }
    const runs = this.db
      .prepare("SELECT id, record, lease_id, error FROM runs ORDER BY rowid")
      .all()
      .map((row): RunRecord => {
        const id = String(row["id"]);
        const { lease, ...rest } = JSON.parse(String(row["record"])) as Omit<
          RunRecord,
          "configuration" | "events" | "logs" | "lease" | "error" | "executor" | "run_token_sha256"
        > &
          Partial<Pick<RunRecord, "executor" | "run_token_sha256">> & { lease?: StoredLease };
        const error =
          row["error"] === null
            ? undefined
            : (JSON.parse(this.open({ table: "runs", row: id, column: "error" }, row["error"]).toString("utf8")) as {
                code: string;
                message: string;
              });
        const leaseId =
          lease === undefined
            ? undefined
            : this.open({ table: "runs", row: id, column: "lease_id" }, row["lease_id"]).toString("utf8");
        return {
          // Records of earlier versions: runs an agent executes.
          executor: "agent",
          run_token_sha256: null,
          ...rest,
          configuration: configurations.get(id) ?? Buffer.alloc(0),
          events: events.get(id) ?? [],
          logs: logs.get(id) ?? [],
          lease: lease === undefined || leaseId === undefined ? undefined : { ...lease, id: leaseId },
          error,
        };
      });
    const audit = this.db
      .prepare("SELECT record FROM audit ORDER BY seq")
      .all()
      .map((row) => JSON.parse(String(row["record"])) as AuditEntry);
    const enrollmentTokens = this.db
      .prepare("SELECT record FROM enrollment_tokens ORDER BY rowid")
      .all()
      .map((row) => JSON.parse(String(row["record"])) as EnrollmentTokenRecord);
    return { integrations, agents, runs, audit, enrollmentTokens };
  }

  private grouped<T>(
    table: "run_events" | "run_logs",
    parse: (place: ValuePlace, data: unknown) => T,
  ): Map<string, T[]> {
    const out = new Map<string, T[]>();
    for (const row of this.db.prepare(`SELECT run_id, seq, data FROM ${table} ORDER BY run_id, seq`).all()) {
      const runId = String(row["run_id"]);
      const place = { table, row: `${runId}/${String(row["seq"])}`, column: "data" };
      let list = out.get(runId);
      if (!list) out.set(runId, (list = []));
      list.push(parse(place, row["data"]));
    }
    return out;
  }
}

//! The ledger: one row per request. [`Ledger`] is the storage seam; [`SqliteLedger`] the default
//! (one file, WAL mode). The schema is documented in `docs/metering.md`.

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, Row};

use crate::{LedgerRecord, MeterError};

/// Schema version kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// Where ledger records are stored.
///
/// Writes come in two steps so the writer can spread a batch's work over its interval:
/// [`Ledger::stage`] adds rows to the open batch as they arrive, [`Ledger::commit`] makes the
/// whole batch land at once. Why: inserting a 200 ms batch in one go is a few milliseconds of
/// CPU in one burst, which on a small machine delays the request threads sharing the cores;
/// committing every few milliseconds instead costs about 3× the SQLite CPU per row (the WAL pages are
/// written per commit; `cargo run --release -p switchyard-meter --example meter_bench`).
pub trait Ledger: Send {
    /// Adds records to the open batch, opening one if none is. They are neither visible nor
    /// durable until [`Ledger::commit`]. On error the whole open batch is discarded.
    fn stage(&mut self, records: &[LedgerRecord]) -> Result<(), MeterError>;
    /// Ends the open batch: everything staged since the last commit lands, or none of it does.
    /// A no-op when nothing is staged.
    fn commit(&mut self) -> Result<(), MeterError>;
    /// Writes all records in one transaction: all land or none do.
    fn insert_batch(&mut self, records: &[LedgerRecord]) -> Result<(), MeterError> {
        self.stage(records)?;
        self.commit()
    }
    /// Records that started at or after `since_ms` (Unix ms), oldest first.
    fn records_since(&self, since_ms: i64) -> Result<Vec<LedgerRecord>, MeterError>;
}

const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS requests (
    "id" TEXT NOT NULL,
    "started_at_ms" INTEGER NOT NULL,
    "finished_at_ms" INTEGER NOT NULL,
    "operation" TEXT NOT NULL,
    "route" TEXT NOT NULL,
    "class" TEXT,
    "key" TEXT,
    "team" TEXT,
    "task" TEXT,
    "provider" TEXT,
    "provider_kind" TEXT,
    "target" TEXT,
    "model" TEXT,
    "response_model" TEXT,
    "stream" INTEGER NOT NULL,
    "status" INTEGER NOT NULL,
    "error_type" TEXT,
    "input_tokens" INTEGER NOT NULL,
    "output_tokens" INTEGER NOT NULL,
    "cached_input_tokens" INTEGER NOT NULL,
    "cache_creation_input_tokens" INTEGER NOT NULL,
    "reasoning_tokens" INTEGER NOT NULL,
    "tokens_estimated" INTEGER NOT NULL,
    "cost_usd" REAL,
    "price_source" TEXT,
    "ttft_ms" REAL,
    "latency_ms" REAL NOT NULL,
    "upstream_latency_ms" REAL,
    "overhead_us" REAL,
    "attempts" INTEGER NOT NULL,
    "fallbacks" INTEGER NOT NULL,
    "energy_wh" REAL,
    "energy_method" TEXT NOT NULL,
    "carbon_g" REAL
);
CREATE INDEX IF NOT EXISTS requests_started_at ON requests ("started_at_ms");
"#;

const COLUMNS: &str = r#""id", "started_at_ms", "finished_at_ms", "operation", "route", "class", "key", "team", "task",
    "provider", "provider_kind", "target", "model", "response_model", "stream", "status", "error_type",
    "input_tokens", "output_tokens", "cached_input_tokens", "cache_creation_input_tokens", "reasoning_tokens",
    "tokens_estimated", "cost_usd", "price_source", "ttft_ms", "latency_ms", "upstream_latency_ms",
    "overhead_us", "attempts", "fallbacks", "energy_wh", "energy_method", "carbon_g""#;

/// SQLite ledger: WAL mode so the report can read while the writer writes; `synchronous=NORMAL`
/// (a power cut may lose the last transactions, never corrupt the file).
pub struct SqliteLedger {
    conn: Connection,
}

impl SqliteLedger {
    /// Opens or creates the ledger file and its schema.
    pub fn open(path: &Path) -> Result<SqliteLedger, MeterError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        match version {
            0 => {
                conn.execute_batch(CREATE)?;
                conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            SCHEMA_VERSION => {}
            found => {
                return Err(MeterError::SchemaVersion {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
        }
        Ok(SqliteLedger { conn })
    }

    /// Opens an existing ledger for reading (the usage report).
    pub fn open_read_only(path: &Path) -> Result<SqliteLedger, MeterError> {
        if !path.exists() {
            return Err(MeterError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no ledger file here",
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != SCHEMA_VERSION {
            return Err(MeterError::SchemaVersion {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(SqliteLedger { conn })
    }
}

impl SqliteLedger {
    /// Streams the records that started at or after `since_ms`, oldest first, without
    /// collecting them (the usage report over a large ledger).
    pub fn for_each_since(
        &self,
        since_ms: i64,
        mut f: impl FnMut(LedgerRecord),
    ) -> Result<(), MeterError> {
        let mut stmt = self.conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM requests WHERE \"started_at_ms\" >= ?1 ORDER BY \"started_at_ms\", \"id\""
    ))?;
        for r in stmt.query_map([since_ms], from_row)? {
            f(r?);
        }
        Ok(())
    }
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<LedgerRecord> {
    Ok(LedgerRecord {
        id: r.get(0)?,
        started_at_ms: r.get(1)?,
        finished_at_ms: r.get(2)?,
        operation: r.get(3)?,
        route: r.get(4)?,
        class: r.get(5)?,
        key: r.get(6)?,
        team: r.get(7)?,
        task: r.get(8)?,
        provider: r.get(9)?,
        provider_kind: r.get(10)?,
        target: r.get(11)?,
        model: r.get(12)?,
        response_model: r.get(13)?,
        stream: r.get(14)?,
        status: r.get(15)?,
        error_type: r.get(16)?,
        input_tokens: r.get::<_, i64>(17)? as u64,
        output_tokens: r.get::<_, i64>(18)? as u64,
        cached_input_tokens: r.get::<_, i64>(19)? as u64,
        cache_creation_input_tokens: r.get::<_, i64>(20)? as u64,
        reasoning_tokens: r.get::<_, i64>(21)? as u64,
        tokens_estimated: r.get(22)?,
        cost_usd: r.get(23)?,
        price_source: r.get(24)?,
        ttft_ms: r.get(25)?,
        latency_ms: r.get(26)?,
        upstream_latency_ms: r.get(27)?,
        overhead_us: r.get(28)?,
        attempts: r.get(29)?,
        fallbacks: r.get(30)?,
        energy_wh: r.get(31)?,
        energy_method: r.get(32)?,
        carbon_g: r.get(33)?,
    })
}

/// Token counts fit i64 in practice; saturate rather than wrap if one does not.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SqliteLedger {
    fn insert_rows(&self, records: &[LedgerRecord]) -> Result<(), MeterError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "INSERT INTO requests ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
             ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, \
             ?31, ?32, ?33, ?34)"
        ))?;
        for r in records {
            stmt.execute(params![
                r.id,
                r.started_at_ms,
                r.finished_at_ms,
                r.operation,
                r.route,
                r.class,
                r.key,
                r.team,
                r.task,
                r.provider,
                r.provider_kind,
                r.target,
                r.model,
                r.response_model,
                r.stream,
                r.status,
                r.error_type,
                int(r.input_tokens),
                int(r.output_tokens),
                int(r.cached_input_tokens),
                int(r.cache_creation_input_tokens),
                int(r.reasoning_tokens),
                r.tokens_estimated,
                r.cost_usd,
                r.price_source,
                r.ttft_ms,
                r.latency_ms,
                r.upstream_latency_ms,
                r.overhead_us,
                r.attempts,
                r.fallbacks,
                r.energy_wh,
                r.energy_method,
                r.carbon_g,
            ])?;
        }
        Ok(())
    }

    /// A write transaction is open: rows are staged and not yet committed. SQLite's own state,
    /// so it also knows when SQLite rolled back by itself (e.g. on a full disk).
    fn in_batch(&self) -> bool {
        !self.conn.is_autocommit()
    }

    fn rollback(&self) {
        if self.in_batch() {
            // Cannot fail with a transaction open; nothing to report if it does.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl Ledger for SqliteLedger {
    fn stage(&mut self, records: &[LedgerRecord]) -> Result<(), MeterError> {
        if records.is_empty() {
            return Ok(());
        }
        if !self.in_batch() {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
        }
        self.insert_rows(records).inspect_err(|_| self.rollback())
    }

    fn commit(&mut self) -> Result<(), MeterError> {
        if !self.in_batch() {
            return Ok(());
        }
        self.conn.execute_batch("COMMIT").map_err(|e| {
            self.rollback();
            e.into()
        })
    }

    fn records_since(&self, since_ms: i64) -> Result<Vec<LedgerRecord>, MeterError> {
        let mut out = Vec::new();
        self.for_each_since(since_ms, |r| out.push(r))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, started: i64) -> LedgerRecord {
        LedgerRecord {
            id: id.into(),
            started_at_ms: started,
            finished_at_ms: started + 10,
            operation: "chat".into(),
            route: "r \"quoted\"".into(),
            class: Some("code".into()),
            key: Some("k".into()),
            target: Some("p/m".into()),
            stream: true,
            status: 200,
            input_tokens: 10,
            output_tokens: 20,
            cached_input_tokens: 4,
            tokens_estimated: true,
            cost_usd: Some(0.25),
            ttft_ms: Some(12.5),
            latency_ms: 40.0,
            attempts: 2,
            fallbacks: 1,
            energy_method: "unknown".into(),
            ..Default::default()
        }
    }

    #[test]
    fn records_round_trip_and_filter_by_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ledger.sqlite");
        let mut l = SqliteLedger::open(&path).unwrap();
        let rows = vec![record("a", 1_000), record("b", 2_000), record("c", 3_000)];
        l.insert_batch(&rows).unwrap();
        assert_eq!(l.records_since(0).unwrap(), rows);
        assert_eq!(l.records_since(2_000).unwrap(), rows[1..].to_vec());
        drop(l);
        // Reopening keeps the rows; the read-only handle sees them.
        let r = SqliteLedger::open_read_only(&path).unwrap();
        assert_eq!(r.records_since(0).unwrap().len(), 3);
    }

    #[test]
    fn staged_rows_land_together_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let mut l = SqliteLedger::open(&path).unwrap();
        let reader = SqliteLedger::open_read_only(&path).unwrap();
        l.stage(&[record("a", 1_000)]).unwrap();
        l.stage(&[record("b", 2_000), record("c", 3_000)]).unwrap();
        assert!(
            reader.records_since(0).unwrap().is_empty(),
            "visible before commit"
        );
        l.commit().unwrap();
        assert_eq!(reader.records_since(0).unwrap().len(), 3);
        // Nothing staged: commit does nothing and does not fail.
        l.commit().unwrap();
        assert_eq!(reader.records_since(0).unwrap().len(), 3);
    }

    #[test]
    fn a_failed_stage_discards_the_whole_open_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let mut l = SqliteLedger::open(&path).unwrap();
        // Another connection makes one id fail to insert, as a full disk would fail any row.
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON requests WHEN NEW.id = 'bad' \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        l.stage(&[record("a", 1_000)]).unwrap();
        assert!(l
            .stage(&[record("b", 2_000), record("bad", 2_500)])
            .is_err());
        l.commit().unwrap();
        assert!(
            l.records_since(0).unwrap().is_empty(),
            "rows of a failed batch landed"
        );
        // The next batch starts afresh.
        l.stage(&[record("c", 3_000)]).unwrap();
        l.commit().unwrap();
        let ids: Vec<_> = l
            .records_since(0)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["c"]);
    }

    #[test]
    fn opens_in_wal_mode_with_versioned_schema_and_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let l = SqliteLedger::open(&path).unwrap();
        let mode: String = l
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = l
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "NORMAL");
        let v: i64 = l
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let mut stmt = l
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'requests' ORDER BY name")
            .unwrap();
        let names: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(names, ["requests_started_at"]);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        drop(SqliteLedger::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            SqliteLedger::open(&path),
            Err(MeterError::SchemaVersion { found: 99, .. })
        ));
    }
}

//! The database file: its tables, its schema version and migrations, reading it whole at start
//! and writing one batch per commit. The only module that names `redb`.
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `schema`, `key0`, `key1` | the schema version; the file-identity key |
//! | `tasks` | task id | [`record::encode_task`] |
//! | `seen` | task id | [`record::encode_seen`] |
//! | `counters` | `downloads/<zone>`, `yara/<rule>` | the fleet counter's value |
//! | `discovery` | task id | [`record::encode_listed`] |
//! | `events` | event id | [`record::encode_event`] (schema 2) |
//! | `hours` | Unix hour | [`record::encode_hour`] (schema 2) |

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tracing::warn;

use super::record;
use super::{Batch, Counter, Restored, StoreError};
use crate::config::TaskId;
use crate::journal::MAX_EVENTS;

/// redb's page cache: what restarts and commits touch stays hot; the rest is the OS's.
const CACHE_BYTES: usize = 4 << 20;

/// The format this build writes. Older files are migrated on open; newer ones are moved aside.
pub const SCHEMA: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const SEEN: TableDefinition<&str, &[u8]> = TableDefinition::new("seen");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const DISCOVERY: TableDefinition<&str, &[u8]> = TableDefinition::new("discovery");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const HOURS: TableDefinition<u64, &[u8]> = TableDefinition::new("hours");

/// `MIGRATIONS[n - 1]` turns a schema-`n` file into a schema-`n + 1` one.
const MIGRATIONS: [Migration; 1] = [v1_to_v2];

type Migration = fn(&WriteTransaction) -> Result<(), redb::Error>;

/// Schema 1 had no activity feed: schema 2 adds its two tables.
fn v1_to_v2(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(EVENTS)?;
    txn.open_table(HOURS)?;
    Ok(())
}

/// An open database file.
pub struct Db {
    db: Database,
}

/// Why a file could not be used.
#[derive(Debug)]
pub enum OpenError {
    /// The file is damaged or not a store: move it aside.
    Unusable(String),
    /// The file is from a newer build: move it aside too (never overwrite what may be read
    /// again after a downgrade is undone).
    NewerSchema(u64),
    /// The file could not be opened or created (permissions, disk): keep it, retry later.
    Io(String),
}

impl Db {
    /// Opens or creates the file, migrates an older schema, and sets the identity key if the
    /// file is new (`fresh_key`). Returns the key kept in the file.
    pub fn open(path: &Path, fresh_key: fn() -> [u64; 2]) -> Result<(Db, [u64; 2]), OpenError> {
        // The integrity check on open turns a page damaged in place into an error here, where
        // reading through it could otherwise panic; a small cache keeps the resident set low.
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| match e {
                // Not a store at all (another file, a header overwritten): unusable.
                redb::DatabaseError::Storage(redb::StorageError::Io(io))
                    if !matches!(
                        io.kind(),
                        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    OpenError::Io(io.to_string())
                }
                other => OpenError::Unusable(other.to_string()),
            })?;
        let db = Db { db };
        let key = db.prepare(fresh_key)?;
        Ok((db, key))
    }

    fn prepare(&self, fresh_key: fn() -> [u64; 2]) -> Result<[u64; 2], OpenError> {
        let unusable = |e: redb::Error| OpenError::Unusable(e.to_string());
        let txn = self.db.begin_write().map_err(|e| unusable(e.into()))?;
        let key;
        {
            let mut meta = txn.open_table(META).map_err(|e| unusable(e.into()))?;
            let get = |meta: &redb::Table<&str, u64>, k: &str| -> Result<Option<u64>, OpenError> {
                Ok(meta
                    .get(k)
                    .map_err(|e| unusable(e.into()))?
                    .map(|v| v.value()))
            };
            let schema = get(&meta, "schema")?;
            match schema {
                None => {
                    // A new file (or one without our tables): stamp it.
                    meta.insert("schema", SCHEMA)
                        .map_err(|e| unusable(e.into()))?;
                    let fresh = fresh_key();
                    meta.insert("key0", fresh[0])
                        .map_err(|e| unusable(e.into()))?;
                    meta.insert("key1", fresh[1])
                        .map_err(|e| unusable(e.into()))?;
                }
                Some(v) if v > SCHEMA => return Err(OpenError::NewerSchema(v)),
                Some(0) => return Err(OpenError::Unusable("schema version 0".into())),
                Some(v) => {
                    for migrate in &MIGRATIONS[(v - 1) as usize..] {
                        migrate(&txn).map_err(unusable)?;
                    }
                    meta.insert("schema", SCHEMA)
                        .map_err(|e| unusable(e.into()))?;
                }
            }
            key = match (get(&meta, "key0")?, get(&meta, "key1")?) {
                (Some(a), Some(b)) => [a, b],
                _ => return Err(OpenError::Unusable("the identity key is missing".into())),
            };
        }
        for table in [TASKS, SEEN, DISCOVERY] {
            txn.open_table(table).map_err(|e| unusable(e.into()))?;
        }
        txn.open_table(COUNTERS).map_err(|e| unusable(e.into()))?;
        txn.open_table(EVENTS).map_err(|e| unusable(e.into()))?;
        txn.open_table(HOURS).map_err(|e| unusable(e.into()))?;
        txn.commit().map_err(|e| unusable(e.into()))?;
        Ok(key)
    }

    /// Reads everything kept. A value that does not decode is skipped (and counted); a file
    /// that cannot be read through is unusable.
    pub fn read_all(&self) -> Result<Restored, OpenError> {
        let unusable = |e: redb::Error| OpenError::Unusable(e.to_string());
        // Damage the integrity check missed must not take the daemon down.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.read_tables())) {
            Ok(read) => read.map_err(unusable),
            Err(_) => Err(OpenError::Unusable("reading the file failed".into())),
        }
    }

    fn read_tables(&self) -> Result<Restored, redb::Error> {
        let txn = self.db.begin_read()?;
        let mut restored = Restored::default();
        let seen = txn.open_table(SEEN)?;
        for entry in txn.open_table(TASKS)?.iter()? {
            let (id, value) = entry?;
            let Ok(task) = TaskId::parse(id.value()) else {
                restored.skipped += 1;
                continue;
            };
            let files = match seen.get(id.value())? {
                Some(bytes) => match record::decode_seen(bytes.value()) {
                    Ok(files) => Some(files),
                    Err(_) => {
                        restored.skipped += 1;
                        None
                    }
                },
                None => None,
            };
            match record::decode_task(value.value(), files) {
                Ok(record) => restored.tasks.push((task, record)),
                Err(_) => restored.skipped += 1,
            }
        }
        for entry in txn.open_table(COUNTERS)?.iter()? {
            let (key, value) = entry?;
            match Counter::parse(key.value()) {
                Some(counter) => restored.counters.push((counter, value.value())),
                None => restored.skipped += 1,
            }
        }
        for entry in txn.open_table(DISCOVERY)?.iter()? {
            let (id, value) = entry?;
            let listed = TaskId::parse(id.value())
                .ok()
                .and_then(|id| record::decode_listed(id, value.value()).ok());
            match listed {
                Some(listed) => restored.discovered.push(listed),
                None => restored.skipped += 1,
            }
        }
        for entry in txn.open_table(EVENTS)?.iter()? {
            let (id, value) = entry?;
            match record::decode_event(id.value(), value.value()) {
                Ok(event) => restored.events.push(event),
                Err(_) => restored.skipped += 1,
            }
        }
        for entry in txn.open_table(HOURS)?.iter()? {
            let (hour, value) = entry?;
            match record::decode_hour(hour.value(), value.value()) {
                Ok(h) => restored.hours.push(h),
                Err(_) => restored.skipped += 1,
            }
        }
        if restored.skipped > 0 {
            warn!(
                skipped = restored.skipped,
                "some kept records could not be read; those tasks start from a new baseline"
            );
        }
        Ok(restored)
    }

    /// Writes one batch in one durable transaction. `clear` empties the task, discovery and
    /// event tables first (the batch then holds everything).
    pub fn write(&self, batch: &Batch, clear: bool) -> Result<(), StoreError> {
        self.write_txn(batch, clear)
            .map_err(|e| StoreError::Write(e.to_string()))
    }

    fn write_txn(&self, batch: &Batch, clear: bool) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut tasks = txn.open_table(TASKS)?;
            let mut seen = txn.open_table(SEEN)?;
            let mut discovery = txn.open_table(DISCOVERY)?;
            let mut events = txn.open_table(EVENTS)?;
            if clear {
                tasks.retain(|_, _| false)?;
                seen.retain(|_, _| false)?;
                discovery.retain(|_, _| false)?;
                events.retain(|_, _| false)?;
            }
            for (id, write) in &batch.tasks {
                match write {
                    Some((task, files)) => {
                        tasks.insert(id.as_str(), task.as_slice())?;
                        match files {
                            Some(files) => {
                                seen.insert(id.as_str(), files.as_slice())?;
                            }
                            None => {
                                seen.remove(id.as_str())?;
                            }
                        }
                    }
                    None => {
                        tasks.remove(id.as_str())?;
                        seen.remove(id.as_str())?;
                    }
                }
            }
            for (id, listed) in &batch.discovery {
                match listed {
                    Some(bytes) => discovery.insert(id.as_str(), bytes.as_slice())?,
                    None => discovery.remove(id.as_str())?,
                };
            }
            for (id, bytes) in &batch.events {
                events.insert(*id, bytes.as_slice())?;
            }
            if let Some(newest) = batch.events.last().map(|(id, _)| *id) {
                let oldest_kept = newest.saturating_sub(MAX_EVENTS as u64 - 1);
                events.retain_in(..oldest_kept, |_, _| false)?;
            }
            let mut hours = txn.open_table(HOURS)?;
            for (hour, bytes) in &batch.hours {
                hours.insert(*hour, bytes.as_slice())?;
            }
            if let Some(newest) = batch.hours.iter().map(|(h, _)| *h).max() {
                let oldest_kept = newest.saturating_sub(crate::journal::HOURS as u64 - 1);
                hours.retain_in(..oldest_kept, |_, _| false)?;
            }
            let mut counters = txn.open_table(COUNTERS)?;
            for (key, value) in &batch.counters {
                counters.insert(key.as_str(), *value)?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

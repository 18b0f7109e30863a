use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::{TaskLabels, TaskSpec};
use crate::metrics::testing::state_of;
use crate::sandbox::Download;
use crate::state::PollReport;

const T1: &str = "0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71";

fn id(s: &str) -> TaskId {
    TaskId::parse(s).expect("valid id")
}

fn red(sha: &str, rules: &[&str]) -> Download {
    Download {
        zone: DangerZone::Red,
        sha256: sha.into(),
        name: format!("{sha}.exe"),
        yara_rules: rules.iter().map(|r| r.to_string()).collect(),
        ..Download::default()
    }
}

fn poll(state: &State, files: Vec<Download>) -> state::Applied {
    state.apply(report(Some(200), Ok(files.into())))
}

/// A poll of `T1` ending now.
fn report(
    status: Option<u16>,
    result: Result<crate::sandbox::Downloads, state::PollError>,
) -> PollReport {
    PollReport {
        task: id(T1),
        finished: SystemTime::now(),
        status,
        result,
        life: None,
    }
}

/// `files` in a body whose digest is that of `body`.
fn in_body(
    files: Vec<Download>,
    body: &[u8],
) -> Result<crate::sandbox::Downloads, state::PollError> {
    Ok(crate::sandbox::Downloads::Changed {
        decoded: crate::sandbox::decode::Decoded {
            files,
            report: Default::default(),
        },
        digest: Some(crate::sandbox::BodyDigest::of(body)),
    })
}

/// A store in `dir` as the daemon runs it: opened, restored into a fresh state and metrics.
struct Running {
    state: Arc<State>,
    metrics: Arc<Metrics>,
    store: Store,
    restored: usize,
}

fn run(dir: &Path) -> Running {
    let mut opened = Opened::open(StorageDir::acquire(dir.to_path_buf()).expect("not locked"));
    let restored = std::mem::take(&mut opened.restored);
    let state = Arc::new(state_of(&[T1], Default::default()));
    let metrics = Arc::new(Metrics::default());
    let count = state.restore(restored.tasks);
    let (downloads, rules) = split_counters(&restored.counters);
    metrics.restore_counters(downloads, rules.iter().copied());
    let journal = Arc::new(Journal::restored(restored.events, restored.hours));
    let store = Store::start(
        opened,
        &restored.counters,
        &[],
        Arc::clone(&state),
        Arc::clone(&metrics),
        journal,
    );
    Running {
        state,
        metrics,
        store,
        restored: count,
    }
}

fn red_total(metrics: &Metrics) -> u64 {
    metrics
        .render(&State::new(crate::state::WatchList {
            tasks: Arc::new([]),
            discovered: 0,
            label_keys: Vec::new(),
            limits: Default::default(),
        }))
        .lines()
        .find_map(|l| l.strip_prefix("krs_downloads_total{danger_zone=\"Red\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_restart_continues_the_counters_and_counts_only_files_that_appeared_since() {
    let dir = tempfile::tempdir().unwrap();
    {
        let r = run(dir.path());
        assert_eq!(r.restored, 0);
        for files in [vec![], vec![red("aa", &["r1"])]] {
            let applied = poll(&r.state, files);
            r.store.commit(applied.save, applied.activity);
        }
        r.store.close(Duration::from_secs(5));
        assert_eq!(red_total(&r.metrics), 1);
    }
    let r = run(dir.path());
    assert_eq!(r.restored, 1);
    assert_eq!(red_total(&r.metrics), 1, "restored before any poll");
    // The file counted before is known; one that appeared while down counts once.
    let applied = poll(&r.state, vec![red("aa", &["r1"]), red("bb", &[])]);
    assert_eq!(applied.activity.downloads, vec![DangerZone::Red]);
    r.store.commit(applied.save, applied.activity);
    r.store.close(Duration::from_secs(5));
    assert_eq!(red_total(&r.metrics), 2);
    let view = r.state.read();
    let (_, row) = view.tasks().next().unwrap();
    assert_eq!(row.snapshot.as_ref().unwrap().zones[0], 2);
    let events = r.store.journal().recent(&journal::Filter::default(), 10);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind.as_str() == "new_file")
            .count(),
        2,
        "the feed kept the first file's event and added the second's"
    );
}

#[test]
fn a_second_process_on_the_same_directory_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let _first = DirLock::acquire(dir.path()).unwrap();
    let second = StorageDir::acquire(dir.path().to_path_buf()).unwrap_err();
    assert!(matches!(second, StoreError::Locked { .. }));
    assert!(second
        .to_string()
        .contains(&dir.path().display().to_string()));
}

#[test]
fn a_damaged_file_is_moved_aside_and_the_store_starts_afresh() {
    for damage in [&b"not a database at all"[..], &[0u8; 8192][..]] {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), damage).unwrap();
        let r = run(dir.path());
        let status = r.store.status();
        let (aside, why) = status.moved_aside.expect("moved aside");
        assert!(aside.exists(), "{} kept for inspection", aside.display());
        assert!(aside
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("krs-exporter.redb.corrupt-"));
        assert!(!why.is_empty());
        assert!(fs::read(&aside).unwrap() == damage, "kept as it was");
        let applied = poll(&r.state, vec![]);
        r.store.commit(applied.save, applied.activity);
        r.store.close(Duration::from_secs(5));
        assert!(r.metrics.storage.writes() >= 1);
        assert_eq!(r.metrics.storage.failures(), 0);
    }
}

#[test]
fn a_truncated_file_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    {
        let r = run(dir.path());
        for files in [vec![], vec![red("aa", &["r1"])]] {
            let applied = poll(&r.state, files);
            r.store.commit(applied.save, applied.activity);
        }
        r.store.close(Duration::from_secs(5));
    }
    let file = dir.path().join(FILE_NAME);
    let len = fs::metadata(&file).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let r = run(dir.path());
    assert!(r.store.status().moved_aside.is_some());
    assert_eq!(r.restored, 0, "baseline semantics");
}

#[test]
fn a_file_from_a_newer_build_is_moved_aside_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .unwrap();
            meta.insert("schema", SCHEMA + 1).unwrap();
        }
        txn.commit().unwrap();
    }
    let r = run(dir.path());
    let (aside, why) = r.store.status().moved_aside.expect("moved aside");
    assert!(why.contains("newer"), "{why}");
    // Still the newer build's file: kept for it, not migrated.
    let kept = redb::Database::open(&aside).unwrap();
    let read = redb::ReadableDatabase::begin_read(&kept).unwrap();
    let meta = read
        .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
        .unwrap();
    assert_eq!(meta.get("schema").unwrap().unwrap().value(), SCHEMA + 1);
}

#[test]
fn a_schema_1_file_is_migrated_and_its_tasks_restored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    let key = state::identity_key();
    // Schema 1: meta, tasks, seen, counters, discovery; no activity feed.
    let seen = {
        let state = state_of(&[T1], Default::default());
        poll(&state, vec![red("aa", &[])]);
        state.records().pop().unwrap().record.unwrap()
    };
    {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .unwrap();
            meta.insert("schema", 1).unwrap();
            meta.insert("key0", key[0]).unwrap();
            meta.insert("key1", key[1]).unwrap();
            let mut tasks = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("tasks"))
                .unwrap();
            tasks
                .insert(T1, record::encode_task(&seen).as_slice())
                .unwrap();
            let mut files = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("seen"))
                .unwrap();
            files
                .insert(
                    T1,
                    record::encode_seen(seen.seen.as_deref().unwrap()).as_slice(),
                )
                .unwrap();
            let mut counters = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("counters"))
                .unwrap();
            counters.insert("downloads/Red", 3).unwrap();
        }
        txn.commit().unwrap();
    }
    let r = run(dir.path());
    assert!(r.store.status().moved_aside.is_none());
    assert_eq!(r.restored, 1);
    assert_eq!(red_total(&r.metrics), 3);
    // The known file is not new; the feed (new in schema 2) records the new one.
    let applied = poll(&r.state, vec![red("aa", &[]), red("cc", &[])]);
    assert_eq!(applied.activity.downloads.len(), 1);
    r.store.commit(applied.save, applied.activity);
    r.store.close(Duration::from_secs(5));
    drop(r);
    let r = run(dir.path());
    assert_eq!(red_total(&r.metrics), 4);
    assert_eq!(
        r.store
            .journal()
            .recent(&journal::Filter::default(), 10)
            .len(),
        1
    );
}

#[test]
fn a_directory_that_cannot_be_made_serves_from_memory_and_is_written_once_it_can() {
    let parent = tempfile::tempdir().unwrap();
    let blocker = parent.path().join("not-a-dir");
    fs::write(&blocker, b"a file where the directory should be").unwrap();
    let dir = blocker.join("data");
    let r = run(&dir);
    assert!(r.store.status().failing.is_some());
    for files in [vec![], vec![red("aa", &[])]] {
        let applied = poll(&r.state, files);
        r.store.commit(applied.save, applied.activity);
    }
    // Shown at once, from memory.
    let shown = || red_total(&r.metrics) == 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !shown() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(shown());
    fs::remove_file(&blocker).unwrap();
    // The writer retries on its own (first after RETRY_MIN) and writes the whole state.
    let deadline = std::time::Instant::now() + RETRY_MIN * 4;
    while r.metrics.storage.writes() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(r.metrics.storage.writes() >= 1, "re-opened and written");
    assert!(r.metrics.storage.failures() >= 1);
    assert!(r.store.status().failing.is_none());
    r.store.close(Duration::from_secs(5));
    drop(r);
    let r = run(&dir);
    assert_eq!(r.restored, 1);
    assert_eq!(red_total(&r.metrics), 1);
}

#[test]
fn an_unchanged_poll_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path());
    let applied = poll(&r.state, vec![red("aa", &[])]);
    assert!(applied.save.is_some());
    r.store.commit(applied.save, applied.activity);
    let body = b"[the same body]";
    let with_digest = r
        .state
        .apply(report(Some(200), in_body(vec![red("aa", &[])], body)));
    r.store.commit(with_digest.save, with_digest.activity);
    let unchanged = r.state.apply(report(
        Some(200),
        Ok(crate::sandbox::Downloads::Unchanged(
            crate::sandbox::BodyDigest::of(body),
        )),
    ));
    assert!(unchanged.save.is_none());
    // Other bytes, the same files (a time stamp the decoder ignores): nothing to keep either.
    let same_files = r.state.apply(report(
        Some(200),
        in_body(vec![red("aa", &[])], b"[the same files, other bytes]"),
    ));
    assert!(same_files.save.is_none());
    let failed = |error: &str| {
        r.state.apply(report(
            Some(500),
            Err(state::PollError::Transport {
                reason: crate::sandbox::FailureReason::Timeout,
                detail: error.into(),
            }),
        ))
    };
    assert!(failed("x").save.is_some(), "up → down is kept");
    assert!(failed("x").save.is_none(), "the same failure again is not");
    assert!(failed("y").save.is_some(), "another error is");
    r.store.close(Duration::from_secs(5));
}

#[test]
fn a_removed_task_leaves_the_store() {
    let dir = tempfile::tempdir().unwrap();
    {
        let r = run(dir.path());
        let applied = poll(&r.state, vec![red("aa", &[])]);
        r.store.commit(applied.save, applied.activity);
        let removed = r.state.replace_watch_list(crate::state::WatchList {
            tasks: Arc::new([TaskSpec {
                id: id("7c9e6679-7425-40de-944b-e07fc1f90ae7"),
                name: String::new(),
                labels: TaskLabels::default(),
            }]),
            discovered: 0,
            label_keys: Vec::new(),
            limits: Default::default(),
        });
        assert_eq!(removed.len(), 1);
        r.store.save(removed);
        r.store.close(Duration::from_secs(5));
    }
    let r = run(dir.path());
    assert_eq!(r.restored, 0);
}

#[test]
fn dates_in_moved_aside_names_are_utc_calendar_dates() {
    assert_eq!(
        utc_stamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_150_000)),
        "20261201T183320Z"
    );
    assert_eq!(utc_stamp(SystemTime::UNIX_EPOCH), "19700101T000000Z");
}

#[test]
fn a_store_that_stops_taking_writes_serves_from_memory_and_is_written_afresh_once_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path());
    let applied = poll(&r.state, vec![]);
    r.store.commit(applied.save, applied.activity);
    // The disk fills: the next commit fails, and so does the first re-open's.
    r.store.fail_next_commits(2);
    let applied = poll(&r.state, vec![red("aa", &["r1"])]);
    r.store.commit(applied.save, applied.activity);
    let until = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + RETRY_MIN * 8;
        while !check() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    until("the failure is counted", &|| {
        r.metrics.storage.failures() >= 1
    });
    // Shown from memory all the same (right after the failed commit), and said so.
    until("the count is shown", &|| red_total(&r.metrics) == 1);
    assert!(r.store.status().failing.is_some());
    let events = r.store.journal().recent(&journal::Filter::default(), 10);
    assert!(events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::Storage { ok: false, .. })));
    // The writer re-opens with backoff and writes the whole state afresh.
    until("written again", &|| r.store.status().failing.is_none());
    assert!(r.metrics.storage.failures() >= 2);
    r.store.close(Duration::from_secs(5));
    drop(r);
    let r = run(dir.path());
    assert_eq!(r.restored, 1);
    assert_eq!(red_total(&r.metrics), 1, "the counters as shown");
    let applied = poll(&r.state, vec![red("aa", &["r1"])]);
    assert!(
        applied.activity.downloads.is_empty(),
        "the file stays counted once"
    );
}

#[test]
fn a_restored_task_that_is_never_polled_again_counts_as_ready() {
    let state = state_of(&[T1], Default::default());
    assert!(!state.ready());
    let record = Record {
        row: state::TaskRow {
            life: Some(Arc::new(crate::lifecycle::TaskLife {
                state: crate::sandbox::decode::lifecycle::TaskState::Failed,
                result_id: "r".into(),
                created: None,
                processed: None,
                zone: DangerZone::Unknown,
                verdict: "Unknown".into(),
            })),
            ..Default::default()
        },
        seen: None,
        settled_for: None,
    };
    assert_eq!(state.restore([(id(T1), record)]), 1);
    assert!(
        state.ready(),
        "a failed task is never polled: nothing to wait for"
    );
}

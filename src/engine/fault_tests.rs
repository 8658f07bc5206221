//! Failures injected into the write log: after each, exactly the acknowledged writes
//! are recovered.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::engine::Engine;
use crate::error::Error;
use crate::persist::SyncPolicy;
use crate::persist::log;
use crate::schema::{PropSpec, RelationType};
use crate::value::Value;

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relcount-fault-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn open(dir: &Path, sync: SyncPolicy) -> Engine {
    let engine = Engine::builder().open(dir, sync).expect("open");
    if engine.relation_type(1).is_none() {
        engine
            .define(RelationType::new(1, 1, 2).prop("Like", PropSpec::int().sum()))
            .expect("define");
    }
    engine
}

fn strengthen(engine: &Engine) -> Result<(), Error> {
    engine.strengthen(1, "a", "b", &[("Like", Value::Int(1))])
}

fn like(engine: &Engine) -> Option<crate::Sum> {
    engine.get_counter(1, "a").ok()?.prop("Like")?.sum()
}

fn faults(engine: &Engine) -> &crate::persist::log::Faults {
    engine.log.get().expect("a durable engine").faults()
}

/// Postmortem: a failed append left its partial
/// frame in the log, later acknowledged writes followed it, and recovery cut them
/// all off as a torn tail. A failed append is now cut back off before it returns.
#[test]
fn a_short_write_is_cut_off_and_later_writes_survive() {
    let dir = dir("short");
    let engine = open(&dir, SyncPolicy::No);
    strengthen(&engine).expect("first");
    for cut in [0, 3, 9, 20] {
        *faults(&engine).short_write.lock().expect("faults") = Some(cut);
        assert!(strengthen(&engine).is_err(), "a failed append is refused");
        strengthen(&engine).expect("the log takes writes again");
    }
    assert_eq!(like(&engine), Some(crate::Sum::Int(5)));
    drop(engine);
    let engine = open(&dir, SyncPolicy::No);
    assert_eq!(
        like(&engine),
        Some(crate::Sum::Int(5)),
        "exactly the acknowledged writes"
    );
    assert!(engine.recovery_skipped().is_empty());
    drop(engine);
    std::fs::remove_dir_all(&dir).ok();
}

/// Under `Always` a failed fsync refused the write but left its bytes to be
/// replayed. They are now cut off, so the refused write never comes back.
#[test]
fn a_failed_fsync_refuses_the_write_and_it_never_replays() {
    let dir = dir("fsync");
    let engine = open(&dir, SyncPolicy::Always);
    strengthen(&engine).expect("first");
    faults(&engine).sync.store(true, Ordering::Release);
    assert!(strengthen(&engine).is_err());
    assert_eq!(
        like(&engine),
        Some(crate::Sum::Int(1)),
        "a refused write changes nothing"
    );
    strengthen(&engine).expect("third");
    drop(engine);
    let engine = open(&dir, SyncPolicy::Always);
    assert_eq!(like(&engine), Some(crate::Sum::Int(2)));
    drop(engine);
    std::fs::remove_dir_all(&dir).ok();
}

/// `n` ids that live in `n` different shards: `n / 2` writers from the second
/// half to the first never wait on each other's locks.
fn apart(engine: &Engine, n: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    (0..)
        .map(|i| format!("r{i:06}")) // one length: every write's record is as long
        .filter(|id| seen.insert(engine.store.shard_of(crate::xxh64(id.as_bytes()))))
        .take(n)
        .collect()
}

/// Runs a strengthen from each id of the second half of `ids` to its peer in the
/// first half, each on its own thread, while the first one's fsync is held until
/// every record is written; then lets the fsync go. Returns each write's result.
fn held_group(engine: &Engine, ids: &[String]) -> Vec<Result<(), Error>> {
    let log = engine.log.get().expect("a durable engine");
    let (release, hold) = std::sync::mpsc::channel();
    *faults(engine).hold_sync.lock().expect("faults") = Some(hold);
    let (before, syncs) = (log.len(), log.syncs());
    std::thread::scope(|s| {
        let n = ids.len() / 2;
        let write = move |i: usize| {
            let (a, b) = (ids[i].as_str(), ids[n + i].as_str());
            engine.strengthen(1, a, b, &[("Like", Value::Int(1))])
        };
        let first = s.spawn(move || write(0));
        // The first writer leads; its fsync is held until the rest have written.
        while log.syncs() == syncs {
            std::thread::yield_now();
        }
        let first_len = log.len();
        let rest: Vec<_> = (1..n).map(|i| s.spawn(move || write(i))).collect();
        let each = first_len - before;
        while log.len() < before + each * n as u64 {
            std::thread::yield_now();
        }
        drop(release);
        std::iter::once(first)
            .chain(rest)
            .map(|h| h.join().expect("writer"))
            .collect()
    })
}

/// Group commit: writers that wait on one fsync share the next one. Eight writes
/// (one held in its fsync while the seven others write) take two fsyncs.
#[test]
fn concurrent_writes_share_an_fsync() {
    let dir = dir("group");
    let engine = open(&dir, SyncPolicy::Always);
    let ids = apart(&engine, 16);
    let log = engine.log.get().expect("a durable engine");
    let syncs = log.syncs();
    let results = held_group(&engine, &ids);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        log.syncs() - syncs,
        2,
        "one fsync for the first, one for the seven others"
    );
    drop(engine);
    let engine = open(&dir, SyncPolicy::Always);
    for id in &ids[..8] {
        let sum = engine
            .get_counter(1, id.as_str())
            .ok()
            .and_then(|c| c.prop("Like")?.sum());
        assert_eq!(sum, Some(crate::Sum::Int(1)), "{id}");
    }
    drop(engine);
    std::fs::remove_dir_all(&dir).ok();
}

/// A failed fsync that several writers waited on refuses each of them, changes
/// nothing, and none replays; the log takes writes again.
#[test]
fn a_failed_group_fsync_refuses_every_write_it_covered() {
    let dir = dir("group-fail");
    let engine = open(&dir, SyncPolicy::Always);
    strengthen(&engine).expect("before");
    let ids = apart(&engine, 12);
    faults(&engine).sync.store(true, Ordering::Release);
    let results = held_group(&engine, &ids);
    assert!(results.iter().all(Result::is_err), "{results:?}");
    for id in &ids {
        assert!(!engine.contains_profile(1, id.as_str()), "{id} was refused");
    }
    strengthen(&engine).expect("after");
    drop(engine);
    let engine = open(&dir, SyncPolicy::Always);
    assert_eq!(like(&engine), Some(crate::Sum::Int(2)));
    for id in &ids {
        assert!(
            !engine.contains_profile(1, id.as_str()),
            "{id} never replays"
        );
    }
    drop(engine);
    std::fs::remove_dir_all(&dir).ok();
}

/// A step of the random fault workload: a write over a keyspace of four
/// recipients and four initiators, a compaction or a restart, with the fault
/// armed for it (if any).
#[derive(Debug, Clone)]
enum Step {
    Attach(u8, u8, i64),
    Strengthen(u8, u8, i64),
    Detach(u8, u8),
    Delete(u32, u8),
    Compact,
    Restart,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The frame's first `n` bytes reach the file, then the write fails with
    /// `errno` (0: a plain error).
    Write(usize, i32),
    /// The fsync that covers the write fails (under `Always`).
    Sync,
    /// The failed write's cut back fails too: the log stops until a restart.
    WriteAndCut(usize),
}

fn step() -> impl proptest::strategy::Strategy<Value = (Step, Option<Fault>)> {
    use proptest::prelude::*;
    let step = prop_oneof![
        4 => (0u8..4, 0u8..4, -3i64..10).prop_map(|(a, b, v)| Step::Attach(a, b, v)),
        4 => (0u8..4, 0u8..4, -3i64..10).prop_map(|(a, b, v)| Step::Strengthen(a, b, v)),
        2 => (0u8..4, 0u8..4).prop_map(|(a, b)| Step::Detach(a, b)),
        1 => (1u32..=2, 0u8..4).prop_map(|(db, k)| Step::Delete(db, k)),
        1 => Just(Step::Compact),
        1 => Just(Step::Restart),
    ];
    let fault = prop_oneof![
        6 => Just(None),
        2 => (0usize..48, prop_oneof![Just(0), Just(ENOSPC), Just(EIO)])
            .prop_map(|(n, e)| Some(Fault::Write(n, e))),
        2 => Just(Some(Fault::Sync)),
        1 => (0usize..48).prop_map(|n| Some(Fault::WriteAndCut(n))),
    ];
    (step, fault)
}

/// Linux's errno values for a full disk and an I/O error.
const ENOSPC: i32 = 28;
const EIO: i32 = 5;

/// The oracle: relations as a plain map, profiles as plain sets.
#[derive(Debug, Default, Clone, PartialEq)]
struct Model {
    like: std::collections::BTreeMap<(u8, u8), i64>,
    recipients: std::collections::BTreeSet<u8>,
    initiators: std::collections::BTreeSet<u8>,
}

impl Model {
    /// Applies `step` if it is valid; whether it was.
    fn apply(&mut self, step: &Step) -> bool {
        match *step {
            Step::Attach(a, b, v) | Step::Strengthen(a, b, v) => {
                let old = self.like.get(&(a, b)).copied();
                let new = match step {
                    Step::Attach(..) => v,
                    _ => old.unwrap_or(0) + v,
                };
                self.like.insert((a, b), new);
                self.recipients.insert(a);
                self.initiators.insert(b);
                true
            }
            Step::Detach(a, b) => self.like.remove(&(a, b)).is_some(),
            Step::Delete(db, k) => {
                let set = if db == 1 {
                    &mut self.recipients
                } else {
                    &mut self.initiators
                };
                if !set.remove(&k) {
                    return false;
                }
                self.like
                    .retain(|&(a, b), _| if db == 1 { a != k } else { b != k });
                true
            }
            Step::Compact | Step::Restart => true,
        }
    }
}

fn id(prefix: char, k: u8) -> String {
    format!("{prefix}{k}")
}

fn run(engine: &Engine, step: &Step) -> Result<(), Error> {
    let like = |v: i64| [("Like", Value::Int(v))];
    match *step {
        Step::Attach(a, b, v) => {
            engine.attach(1, id('a', a).as_str(), id('b', b).as_str(), &like(v))
        }
        Step::Strengthen(a, b, v) => {
            engine.strengthen(1, id('a', a).as_str(), id('b', b).as_str(), &like(v))
        }
        Step::Detach(a, b) => engine.detach(1, id('a', a).as_str(), id('b', b).as_str()),
        Step::Delete(db, k) => {
            engine.delete_profile(db, id(if db == 1 { 'a' } else { 'b' }, k).as_str())
        }
        Step::Compact => engine.compact().map(drop),
        Step::Restart => Ok(()),
    }
}

/// What the engine holds, in the oracle's terms (every counter read, so a
/// counter out of step with the relations shows too).
fn observed(engine: &Engine) -> Model {
    let mut m = Model::default();
    for k in 0..4u8 {
        if engine.contains_profile(1, id('a', k).as_str()) {
            m.recipients.insert(k);
        }
        if engine.contains_profile(2, id('b', k).as_str()) {
            m.initiators.insert(k);
        }
        let Ok(page) = engine.list(1, id('a', k).as_str(), 0, 100) else {
            continue;
        };
        let mut sum = 0;
        for row in &page.rows {
            let b: u8 = row.profile_b.as_str()[1..]
                .parse()
                .expect("an initiator id");
            let Some(Value::Int(v)) = row.props.iter().find(|(n, _)| n == "Like").map(|(_, v)| *v)
            else {
                panic!("a relation without its Like");
            };
            m.like.insert((k, b), v);
            sum += v;
        }
        let counter = engine
            .get_counter(1, id('a', k).as_str())
            .expect("a listed recipient");
        assert_eq!(counter.total(), page.rows.len() as u64, "a{k}'s total");
        let got = counter.prop("Like").and_then(|p| p.sum());
        let want = (!page.rows.is_empty()).then_some(crate::Sum::Int(i128::from(sum)));
        assert_eq!(got.filter(|_| !page.rows.is_empty()), want, "a{k}'s sum");
    }
    m
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Faults below the log (short writes, ENOSPC, EIO, failed fsyncs, a cut back
    /// that fails) at random points of a random workload under each sync policy:
    /// after every step, and after every restart, the engine holds exactly the
    /// writes it acknowledged (the oracle applies a step only when the engine
    /// said `Ok`, and agrees when it refused one with no fault armed).
    #[test]
    fn random_faults_keep_exactly_the_acknowledged_writes(
        policy in proptest::sample::select(vec![SyncPolicy::Always, SyncPolicy::EverySec, SyncPolicy::No]),
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let dir = dir("random");
        let mut engine = open(&dir, policy);
        let mut model = Model::default();
        for (i, (step, fault)) in steps.iter().enumerate() {
            if matches!(step, Step::Restart) {
                drop(engine);
                engine = open(&dir, policy);
                proptest::prop_assert_eq!(&observed(&engine), &model, "after restart at step {}", i);
                proptest::prop_assert!(engine.recovery_skipped().is_empty());
                continue;
            }
            let f = faults(&engine);
            match fault {
                Some(Fault::Write(n, errno)) => {
                    *f.short_write.lock().expect("faults") = Some(*n);
                    f.errno.store(*errno, Ordering::Release);
                }
                Some(Fault::Sync) => f.sync.store(true, Ordering::Release),
                Some(Fault::WriteAndCut(n)) => {
                    *f.short_write.lock().expect("faults") = Some(*n);
                    f.truncate.store(true, Ordering::Release);
                }
                None => {}
            }
            let done = run(&engine, step);
            // A fault not reached (a refused step, a policy that never syncs) is
            // disarmed, so it never lands on a later step.
            *f.short_write.lock().expect("faults") = None;
            f.errno.store(0, Ordering::Release);
            f.sync.store(false, Ordering::Release);
            f.truncate.store(false, Ordering::Release);
            let mut next = model.clone();
            let valid = next.apply(step);
            match &done {
                Ok(()) => {
                    proptest::prop_assert!(valid, "step {} acknowledged but invalid", i);
                    model = next;
                }
                Err(e) => proptest::prop_assert!(
                    fault.is_some() || !valid || engine_stopped(e),
                    "step {} refused with no fault: {}", i, e
                ),
            }
            proptest::prop_assert_eq!(&observed(&engine), &model, "after step {} ({:?})", i, done);
        }
        drop(engine);
        let engine = open(&dir, policy);
        proptest::prop_assert_eq!(&observed(&engine), &model, "after the last restart");
        drop(engine);
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// Whether `e` says the log stopped after an earlier failure (until a restart).
fn engine_stopped(e: &Error) -> bool {
    e.to_string().contains("until the engine is reopened")
}

/// When a failed append cannot be cut back, the log stops taking writes (nothing
/// after the torn frame could be recovered), compaction too; a reopen recovers
/// exactly the acknowledged writes.
#[test]
fn a_failed_cut_stops_the_log_until_reopened() {
    let dir = dir("stop");
    let engine = open(&dir, SyncPolicy::Always);
    strengthen(&engine).expect("first");
    *faults(&engine).short_write.lock().expect("faults") = Some(5);
    faults(&engine).truncate.store(true, Ordering::Release);
    assert!(strengthen(&engine).is_err());
    let refused = strengthen(&engine).expect_err("the log is stopped");
    assert!(
        refused.to_string().contains("until the engine is reopened"),
        "{refused}"
    );
    assert!(engine.compact().is_err(), "no rotation past a torn frame");
    assert_eq!(like(&engine), Some(crate::Sum::Int(1)));
    drop(engine);
    let engine = open(&dir, SyncPolicy::Always);
    assert_eq!(like(&engine), Some(crate::Sum::Int(1)));
    strengthen(&engine).expect("a reopened engine takes writes");
    drop(engine);
    std::fs::remove_dir_all(&dir).ok();
}

/// Found by `random_faults_keep_exactly_the_acknowledged_writes`: a write whose
/// whole frame reached the file before the write failed, and whose cut back
/// failed too, was refused, then replayed by the next open. The log's real end is
/// now recorded beside it (`log.<seq>.end`) and recovery cuts the log there.
#[test]
fn a_refused_write_whose_cut_failed_never_replays() {
    let dir = dir("endmark");
    let engine = open(&dir, SyncPolicy::Always);
    strengthen(&engine).expect("first");
    *faults(&engine).short_write.lock().expect("faults") = Some(usize::MAX);
    faults(&engine).truncate.store(true, Ordering::Release);
    let refused = strengthen(&engine).expect_err("refused");
    assert!(
        refused.to_string().contains("recovery will cut it"),
        "{refused}"
    );
    let stopped = strengthen(&engine).expect_err("the log is stopped");
    assert!(
        stopped.to_string().contains("recovery will cut it"),
        "{stopped}"
    );
    drop(engine);
    assert!(log::end_path(&dir, 0).exists(), "the end is recorded");
    let engine = open(&dir, SyncPolicy::Always);
    assert_eq!(
        like(&engine),
        Some(crate::Sum::Int(1)),
        "the refused write is gone"
    );
    assert!(
        !log::end_path(&dir, 0).exists(),
        "and the record of the end too"
    );
    strengthen(&engine).expect("writes go on");
    drop(engine);
    let engine = open(&dir, SyncPolicy::Always);
    assert_eq!(like(&engine), Some(crate::Sum::Int(2)));
    drop(engine);
    std::fs::remove_dir_all(&dir).ok();
}

/// A write whose record the log could not read back (then over 1 MiB) was
/// acknowledged, and lost with every later write on restart. It is now refused
/// before anything changes: here a bulk import whose one record would pass the
/// 64 MiB a record may have.
#[test]
fn a_record_over_the_readers_limit_is_refused() {
    let dir = dir("big");
    let engine = open(&dir, SyncPolicy::No);
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    let row = (a.as_str(), b.as_str(), [("Like", Value::Int(1))]);
    // 143 bytes a row: two ids (2 + 64 bytes each), a weight count, one weight.
    let rows = crate::persist::log::MAX_RECORD / 143 + 1;
    let refused = engine
        .import_relations(1, std::iter::repeat_n(row, rows))
        .expect_err("over 64 MiB");
    assert!(
        refused.to_string().contains("bytes a record may have"),
        "{refused}"
    );
    assert!(!engine.contains_profile(1, a.as_str()));
    assert!(!engine.contains_profile(2, b.as_str()));
    strengthen(&engine).expect("later writes go on");
    drop(engine);
    let engine = open(&dir, SyncPolicy::No);
    assert_eq!(like(&engine), Some(crate::Sum::Int(1)));
    drop(engine);
    std::fs::remove_dir_all(&dir).ok();
}

/// `EverySec` ignored a failed background fsync. It now stops the log: every
/// later write is refused (the kernel may have dropped pages of acknowledged
/// ones), and a reopen recovers exactly the acknowledged writes.
#[test]
fn a_failed_background_fsync_refuses_later_writes() {
    let dir = dir("background");
    let engine = open(&dir, SyncPolicy::EverySec);
    strengthen(&engine).expect("before");
    engine
        .log
        .get()
        .expect("a durable engine")
        .fail_next_background_sync();
    let mut acknowledged = 1;
    // The background fsync runs once a second: write until it has failed (a
    // liveness bound, not a timing one).
    let refused = loop {
        assert!(
            acknowledged < 100_000,
            "the failed fsync never stopped the log"
        );
        match strengthen(&engine) {
            Ok(()) => acknowledged += 1,
            Err(e) => break e,
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    assert!(
        refused.to_string().contains("background fsync failed"),
        "{refused}"
    );
    assert!(strengthen(&engine).is_err(), "and every write after it");
    assert_eq!(like(&engine), Some(crate::Sum::Int(acknowledged)));
    drop(engine);
    let engine = open(&dir, SyncPolicy::EverySec);
    assert_eq!(like(&engine), Some(crate::Sum::Int(acknowledged)));
    strengthen(&engine).expect("a reopened engine takes writes");
    drop(engine);
    std::fs::remove_dir_all(&dir).ok();
}

/// `EverySec` had no bound on its loss window when fsync stalled: appends went on
/// being acknowledged while nothing reached the disk. An append now waits for a
/// background fsync in flight past the bound (2 s; here 0, with an fsync stalled).
#[test]
fn appends_wait_for_a_stalled_background_fsync() {
    let dir = dir("stall");
    let engine = open(&dir, SyncPolicy::EverySec);
    let log = engine.log.get().expect("a durable engine");
    log.stall_next_sync(
        std::time::Duration::from_millis(1500),
        std::time::Duration::ZERO,
    );
    let mut polls = 0;
    while !log.syncing() {
        polls += 1;
        assert!(polls < 2000, "the background fsync never started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    strengthen(&engine).expect("the append");
    assert!(
        !log.syncing(),
        "the append waited for the stalled fsync to end"
    );
    drop(engine);
    std::fs::remove_dir_all(&dir).ok();
}

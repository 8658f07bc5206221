//! A partition this host owns: its engine, fed from the partition's stream in order,
//! and its snapshots (the engine and the last applied sequences, of the partition's
//! stream and of the control stream).
//!
//! The applier is the engine's only writer, so a snapshot taken between two records
//! is exactly the state after the last one applied; a restart loads the newest
//! snapshot and resumes at the next sequence.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use relcount::Engine;
use relcount::api::{Api, Code, TokenScope};
use tokio::sync::watch;

use super::log::{self, MARKER};
use super::outcome::{self, Outcome};

/// Where a partition's applier stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Applying the stream up to the sequence it had when the host took it: reads wait.
    CatchingUp,
    /// Caught up once; every record since is applied as it comes.
    Serving,
    /// Stopped for good, with the reason (the host's operator must act).
    Failed(String),
}

/// The sequences a snapshot stands at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct At {
    /// The last record of the partition's stream applied.
    pub seq: u64,
    /// The last record of the control stream applied.
    pub control: u64,
}

/// An owned partition, shared by the applier and the readers.
#[derive(Debug)]
pub struct Partition {
    /// Its number.
    pub p: u32,
    /// The API over its engine (the operator's token registered).
    pub api: Api,
    /// The last applied sequences.
    applied: watch::Sender<At>,
    progress: std::sync::Mutex<Progress>,
    /// Records the engine refused since this host took the partition: writes whose
    /// refusal only the write could know (a detach of a missing relation, a
    /// strengthen past the i64 range, a delete of an unknown profile), answered
    /// "logged" by their entry host. Each is in the debug log.
    refused: std::sync::atomic::AtomicU64,
}

impl Partition {
    /// The last applied sequences.
    #[must_use]
    pub fn at(&self) -> At {
        *self.applied.borrow()
    }

    /// Where the applier stands.
    #[must_use]
    pub fn progress(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records refused by the engine since this host took the partition.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, progress: Progress) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = progress;
    }

    /// Waits until the stream is applied at least up to `seq` and the partition is
    /// serving, for at most `wait`; whether it is.
    pub async fn reached(&self, seq: u64, wait: Duration) -> Result<(), String> {
        let mut rx = self.applied.subscribe();
        let ready = async {
            loop {
                match self.progress() {
                    Progress::Failed(why) => return Err(why),
                    Progress::Serving if rx.borrow_and_update().seq >= seq => return Ok(()),
                    _ => {}
                }
                // Progress changes are also followed by a sequence change or polled.
                let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
            }
        };
        match tokio::time::timeout(wait, ready).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "partition {} has not applied sequence {seq} yet (at {}; {})",
                self.p,
                self.at().seq,
                match self.progress() {
                    Progress::CatchingUp => "catching up",
                    _ => "serving",
                }
            )),
        }
    }
}

/// Where this host's directory stands in the control stream (the control records it
/// applied, and a way to have it read the stream now). A partition answers a
/// deletion once the directory applied it too: after a deletion's answer, no write
/// through this host is checked against a directory that still holds the profile.
#[derive(Debug, Clone)]
pub struct Following {
    /// The last control record the directory applied.
    pub applied: watch::Receiver<u64>,
    /// Asks the directory to read the control stream now.
    pub wake: Arc<tokio::sync::Notify>,
}

impl Following {
    /// Waits (at most `wait`) until the directory applied control record `seq`.
    async fn reached(&self, seq: u64, wait: Duration) {
        let mut applied = self.applied.clone();
        let reached = async {
            loop {
                if *applied.borrow_and_update() >= seq {
                    return;
                }
                self.wake.notify_one();
                if applied.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(wait, reached).await;
    }
}

/// How an applier runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where this partition's snapshots go (none: memory only, a restart replays).
    pub dir: Option<PathBuf>,
    /// A snapshot every this many records (0: only at a stop).
    pub snapshot_every: u64,
    /// The operator's token.
    pub token: String,
    /// Partitions in the cluster (a profile import keeps only this one's profiles).
    pub partitions: u32,
    /// This host's directory.
    pub following: Following,
    /// The API's limits, as the entry hosts check writes with (so a write they
    /// passed is never refused here for its size).
    pub limits: relcount::api::Limits,
}

/// Starts owning partition `p`: loads its newest snapshot, then applies its stream
/// from the next sequence in a task. The returned handle stops the task.
///
/// # Errors
///
/// A snapshot that cannot be read.
pub fn start(
    js: jetstream::Context,
    p: u32,
    plan: Plan,
) -> Result<(Arc<Partition>, tokio::task::JoinHandle<()>), String> {
    let (engine, at) = match &plan.dir {
        Some(dir) => load(dir)?,
        None => (Engine::new(), At::default()),
    };
    let api = Api::new(Arc::new(engine)).with_limits(plan.limits.clone());
    api.add_token(&plan.token, TokenScope::full());
    let part = Arc::new(Partition {
        p,
        api,
        applied: watch::Sender::new(at),
        progress: std::sync::Mutex::new(Progress::CatchingUp),
        refused: std::sync::atomic::AtomicU64::new(0),
    });
    let run = Arc::clone(&part);
    let task = tokio::spawn(async move {
        if let Err(why) = apply(&js, &run, &plan).await {
            tracing::error!(partition = run.p, %why, "partition stopped");
            run.set(Progress::Failed(why));
        }
    });
    Ok((part, task))
}

/// A snapshot's file name: its sequences.
fn snapshot_name(at: At) -> String {
    format!("s{:020}-c{:020}.snap", at.seq, at.control)
}

fn parse_name(name: &str) -> Option<At> {
    let rest = name.strip_prefix('s')?.strip_suffix(".snap")?;
    let (seq, control) = rest.split_once("-c")?;
    Some(At {
        seq: seq.parse().ok()?,
        control: control.parse().ok()?,
    })
}

/// The newest snapshot in `dir` (an empty engine when there is none).
fn load(dir: &Path) -> Result<(Engine, At), String> {
    let newest = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_name(e.file_name().to_str()?).map(|at| (at, e.path())))
            .max_by_key(|(at, _)| at.seq),
    };
    match newest {
        None => Ok((Engine::new(), At::default())),
        Some((at, path)) => Engine::load_snapshot(&path)
            .map(|e| {
                tracing::info!(seq = at.seq, control = at.control, path = %path.display(), "loaded a snapshot");
                (e, at)
            })
            .map_err(|e| format!("cannot load the snapshot {}: {e}", path.display())),
    }
}

/// Saves the partition's engine as a snapshot at `at`, then removes the older ones.
///
/// # Errors
///
/// The engine's, or the file system's.
pub fn save(dir: &Path, engine: &Engine, at: At) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = snapshot_name(at);
    // Two saves at once (the applier's and a stop's) never share a file.
    let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{name}.{n}.tmp"));
    engine
        .save_snapshot(&tmp)
        .map_err(|e| format!("cannot save a snapshot: {e}"))?;
    std::fs::rename(&tmp, dir.join(&name)).map_err(|e| format!("cannot name a snapshot: {e}"))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            let file = e.file_name();
            let old = file
                .to_str()
                .and_then(parse_name)
                .is_some_and(|o| o.seq < at.seq);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Applies one call; a refused write is counted, logged and changes nothing (the
/// single engine the cluster stands for would have refused it too). Its outcome, for
/// the entry host that waits.
fn apply_call(part: &Partition, token: &str, call: &str, body: &[u8], what: &str) -> Outcome {
    if call == MARKER {
        return Outcome::ok();
    }
    let auth = format!("Bearer {token}");
    let r = part.api.handle(call, Some(&auth), body);
    if r.code == Code::Ok {
        return Outcome::ok();
    }
    // A deletion reaches every partition; those without the profile have nothing to do.
    let elsewhere = what == "control" && r.code == Code::ProfileNotFound;
    if !elsewhere {
        part.refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // These were answered once logged, their checks being all the engine makes.
        let answered = what == "write"
            && call
                .parse::<relcount::api::Call>()
                .is_ok_and(|c| !outcome::awaited(c));
        if answered {
            tracing::warn!(partition = part.p, call, code = r.code.number(), body = %r.body, "a write answered once logged was refused by its owner");
        } else {
            tracing::debug!(partition = part.p, call, code = r.code.number(), body = %r.body, what, "write refused");
        }
    }
    Outcome {
        code: r.code.number(),
        body: Bytes::from(r.body),
    }
}

/// Applies one call of the control stream: a definition or a deletion as it is, an
/// import of profiles' data only for the profiles this partition holds, the profiles
/// writes created not at all (the writes do).
fn apply_control_call(
    part: &Partition,
    token: &str,
    partitions: u32,
    call: &str,
    body: &[u8],
) -> Outcome {
    if call == log::CREATED {
        // For the hosts' directories: the write that created them follows.
        return Outcome::ok();
    }
    if call != relcount::api::Call::ImportProfiles.path() {
        return apply_call(part, token, call, body, "control");
    }
    match super::route::profiles_of(body, partitions, part.p) {
        Ok(Some(mine)) => apply_call(part, token, call, mine.as_bytes(), "control"),
        Ok(None) => Outcome::ok(),
        Err(why) => {
            tracing::warn!(partition = part.p, %why, "a control import that does not parse: skipped");
            Outcome::ok()
        }
    }
}

/// Tells the entry host that waits (if any) what its record's calls came to.
async fn answer(
    client: &async_nats::Client,
    reply: Option<(&str, &str)>,
    p: u32,
    outcomes: &[Outcome],
) {
    if let Some((subject, id)) = reply
        && let Err(e) = client
            .publish(subject.to_owned(), outcome::encode(id, p, outcomes))
            .await
    {
        // The entry host answers its client without it, after its wait.
        tracing::debug!(partition = p, error = %e, "an answer not sent");
    }
}

/// Applies the control stream up to `upto` (from the record after the last applied).
async fn apply_control(
    client: &async_nats::Client,
    control: &stream::Stream,
    part: &Partition,
    token: &str,
    partitions: u32,
    following: &Following,
    upto: u64,
) -> Result<(), String> {
    let mut at = part.at();
    while at.control < upto {
        let seq = at.control + 1;
        // Retried for as long as it takes (the control stream may be without a quorum
        // for a while); the partition waits, it does not fail.
        let mut wait = Duration::from_millis(100);
        let msg = loop {
            match bounded(control.get_raw_message(seq)).await {
                Ok(m) => break m,
                Err(e) => {
                    tracing::warn!(partition = part.p, seq, error = %e, "control record not read; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        };
        match log::decode(&msg.payload) {
            Some(record) => {
                let outcomes: Vec<Outcome> = record
                    .calls
                    .iter()
                    .map(|(call, _, body)| apply_control_call(part, token, partitions, call, body))
                    .collect();
                if let Some((subject, id)) = record.reply {
                    // Answered once this host's directory applied it too, without
                    // holding up the partition's next records.
                    let (client, following, p) = (client.clone(), following.clone(), part.p);
                    let (subject, id) = (subject.to_owned(), id.to_owned());
                    tokio::spawn(async move {
                        following.reached(seq, DIRECTORY_WAIT).await;
                        answer(&client, Some((&subject, &id)), p, &outcomes).await;
                    });
                }
            }
            None => tracing::warn!(seq, "a control record that is not a call: skipped"),
        }
        at.control = seq;
        part.applied.send_replace(at);
    }
    Ok(())
}

async fn apply(js: &jetstream::Context, part: &Arc<Partition>, plan: &Plan) -> Result<(), String> {
    let name = log::stream_name(part.p);
    // NATS may be without a quorum for a while: the partition waits, it does not fail.
    let mut wait = Duration::from_millis(100);
    let (mut stream, info, control) = loop {
        let got = async {
            let mut stream = js.get_stream(&name).await?;
            let info = stream.info().await?.clone();
            let control = js.get_stream(log::CONTROL_STREAM).await?;
            Ok::<_, async_nats::Error>((stream, info, control))
        };
        match got.await {
            Ok(got) => break got,
            Err(e) => {
                tracing::warn!(partition = part.p, error = %e, "cannot read the streams yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    };
    let start = part.at();
    if info.state.last_sequence < start.seq {
        return Err(format!(
            "the snapshot stands at sequence {} of {name} but the stream ends at {}: \
             the stream was made again since, so this partition cannot be rebuilt here \
             (remove its snapshots to rebuild it from the stream)",
            start.seq, info.state.last_sequence
        ));
    }
    // A purged stream begins after its last sequence, with no messages left.
    if info.state.first_sequence > start.seq + 1 {
        return Err(format!(
            "the snapshot stands at sequence {} of {name} but the stream begins at {}: \
             records {}..{} are gone, so this partition cannot be rebuilt here \
             (restore a newer snapshot)",
            start.seq,
            info.state.first_sequence,
            start.seq + 1,
            info.state.first_sequence - 1
        ));
    }
    let mut applier = Applier {
        client: js.client(),
        target: info.state.last_sequence,
        since_snapshot: 0,
    };
    if start.seq >= applier.target {
        part.set(Progress::Serving);
    }
    let mut gaps = 0;
    // A consumer is made again from the next sequence when it stalls: when the NATS
    // node it reads through goes away, or records wait in the stream while none come.
    loop {
        let made = tokio::time::timeout(MAKE_CONSUMER, follow(&mut stream, part.at().seq + 1));
        let mut messages = match made.await {
            Ok(Ok(m)) => m,
            failed => {
                // A consumer is made through JetStream's meta leader, which may be
                // being elected again (its node was killed). Reading a record by its
                // sequence needs no consumer, so records are read that way for a
                // while (every 250 ms when none is new) before a consumer is tried
                // again. It too fails while the cluster has no meta leader at all.
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no consumer within {MAKE_CONSUMER:?}"),
                };
                tracing::warn!(partition = part.p, %error, "cannot make a consumer of the stream; reading it by sequence for a while");
                let until = tokio::time::Instant::now() + BY_SEQUENCE_FOR;
                while tokio::time::Instant::now() < until {
                    if by_sequence(&stream, part, plan, &control, &mut applier).await? == 0 {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
                continue;
            }
        };
        let mut errors = 0;
        loop {
            let msg = match tokio::time::timeout(STALL, messages.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => {
                    errors += 1;
                    tracing::debug!(partition = part.p, error = %e, "reading the stream");
                    if errors >= 3 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Ok(None) => break,
                Err(_) => {
                    // Nothing came: fine if nothing is waiting.
                    match bounded(stream.info()).await {
                        Ok(info) if info.state.last_sequence > part.at().seq => break,
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                }
            };
            errors = 0;
            let seq = msg
                .info()
                .map_err(|e| format!("a record of {name} without its sequence: {e}"))?
                .stream_sequence;
            let at = part.at();
            if seq <= at.seq {
                continue;
            }
            if seq != at.seq + 1 {
                // A gap: the consumer skipped records, or they were removed.
                if let Ok(now) = bounded(stream.info()).await
                    && now.state.first_sequence > at.seq + 1
                {
                    return Err(format!(
                        "records {}..{} of {name} were removed before they were applied",
                        at.seq + 1,
                        now.state.first_sequence - 1
                    ));
                }
                gaps += 1;
                if gaps > 3 {
                    return Err(format!(
                        "record {} of {name} is missing (deleted from the stream?)",
                        at.seq + 1
                    ));
                }
                tracing::warn!(
                    partition = part.p,
                    expected = at.seq + 1,
                    got = seq,
                    "a gap in the stream; reading again"
                );
                break;
            }
            gaps = 0;
            apply_record(part, plan, &control, &mut applier, seq, &msg.payload).await?;
        }
        tracing::debug!(
            partition = part.p,
            at = part.at().seq,
            "following the stream again"
        );
    }
}

/// What the applier tracks between records.
struct Applier {
    /// Where the answers go out.
    client: async_nats::Client,
    /// The stream's last sequence when the host took the partition: once applied,
    /// the partition serves reads.
    target: u64,
    /// Records applied since the last snapshot.
    since_snapshot: u64,
}

/// Applies record `seq` of the partition's stream (the next one): the control
/// records it was checked after first, then its call; then the progress, and a
/// snapshot when one is due.
async fn apply_record(
    part: &Arc<Partition>,
    plan: &Plan,
    control: &stream::Stream,
    applier: &mut Applier,
    seq: u64,
    payload: &[u8],
) -> Result<(), String> {
    let name = log::stream_name(part.p);
    let Some(record) = log::decode(payload) else {
        return Err(format!("record {seq} of {name} is not a relcount record"));
    };
    // The control records each call was checked after come first (a call queued
    // before a marker, in the same record, is applied before its control record);
    // a record without calls (a format 1 marker) still moves the control stream on.
    let mut outcomes = Vec::with_capacity(record.calls.len());
    let calls = record.calls.iter().map(Some).chain([None]);
    for call in calls {
        let stamp = call.map_or(record.control, |(_, stamp, _)| *stamp);
        apply_control(
            &applier.client,
            control,
            part,
            &plan.token,
            plan.partitions,
            &plan.following,
            stamp,
        )
        .await?;
        if let Some((call, _, body)) = call {
            outcomes.push(apply_call(part, &plan.token, call, body, "write"));
        }
    }
    answer(&applier.client, record.reply, part.p, &outcomes).await;
    let mut at = part.at();
    at.seq = seq;
    part.applied.send_replace(at);
    if seq >= applier.target && part.progress() == Progress::CatchingUp {
        tracing::info!(partition = part.p, seq, "caught up");
        part.set(Progress::Serving);
    }
    applier.since_snapshot += 1;
    if plan.snapshot_every > 0 && applier.since_snapshot >= plan.snapshot_every {
        applier.since_snapshot = 0;
        if let Some(dir) = &plan.dir {
            let (engine, dir) = (Arc::clone(part.api.engine()), dir.clone());
            let saved = tokio::task::spawn_blocking(move || save(&dir, &engine, at))
                .await
                .map_err(|e| e.to_string())?;
            match saved {
                Ok(()) => tracing::info!(partition = part.p, seq = at.seq, "snapshot saved"),
                Err(e) => tracing::error!(partition = part.p, error = %e, "snapshot failed"),
            }
        }
    }
    Ok(())
}

/// Applies the records after the last applied one, read one by one by sequence (no
/// consumer needed), until one cannot be read (not written yet, gone, or the cluster
/// cannot answer now); how many were applied. At most [`BY_SEQUENCE`] a turn. A gap or
/// a purge is not judged here: the consumer path does that once one can be made.
async fn by_sequence(
    stream: &stream::Stream,
    part: &Arc<Partition>,
    plan: &Plan,
    control: &stream::Stream,
    applier: &mut Applier,
) -> Result<u64, String> {
    let mut read = 0;
    while read < BY_SEQUENCE {
        let seq = part.at().seq + 1;
        let Ok(msg) = bounded(stream.get_raw_message(seq)).await else {
            break; // not written yet, or not readable now: a consumer is tried again
        };
        apply_record(part, plan, control, applier, seq, &msg.payload).await?;
        read += 1;
    }
    Ok(read)
}

/// The longest a deletion's answer waits for this host's directory to apply it.
const DIRECTORY_WAIT: Duration = Duration::from_secs(5);

/// Most records [`by_sequence`] applies before a consumer is tried again.
const BY_SEQUENCE: u64 = 1000;

/// How long a consumer may deliver nothing before the stream is asked whether
/// records wait.
pub const STALL: Duration = Duration::from_secs(2);

/// The longest a partition's applier waits for one JetStream request (a record, the
/// stream's state) before it asks again. The client's request timeout is 10 s too;
/// this bound keeps the applier live whatever the client does.
const REQUEST: Duration = Duration::from_secs(10);

/// The longest the applier waits for a consumer to be made (normally a few
/// milliseconds; a consumer is made through JetStream's meta leader, and after that
/// leader's node was killed, on a loaded machine, making one timed out again and again
/// for over 20 s) before it reads records by sequence instead.
const MAKE_CONSUMER: Duration = Duration::from_secs(3);

/// How long the applier reads records by sequence before it tries a consumer again.
const BY_SEQUENCE_FOR: Duration = Duration::from_secs(10);

/// `f`, or a timeout error after [`REQUEST`].
async fn bounded<T, E: std::fmt::Display>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {REQUEST:?}")),
    }
}

/// An ordered consumer of the stream from sequence `from`.
async fn follow(
    stream: &mut stream::Stream,
    from: u64,
) -> Result<consumer::pull::Ordered, async_nats::Error> {
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_name_keeps_its_sequences() {
        let at = At {
            seq: 12_345,
            control: 7,
        };
        assert_eq!(parse_name(&snapshot_name(at)), Some(at));
        assert_eq!(parse_name("s1-c2.snap.tmp"), None);
    }

    #[test]
    fn the_newest_snapshot_is_loaded_and_older_ones_removed() {
        let dir = std::env::temp_dir().join(format!("relcount-part-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let engine = Engine::new();
        save(&dir, &engine, At { seq: 3, control: 1 }).expect("save");
        engine
            .define(relcount::RelationType::new(1, 1, 2))
            .expect("define");
        save(&dir, &engine, At { seq: 9, control: 2 }).expect("save");
        let (loaded, at) = load(&dir).expect("load");
        assert_eq!(at, At { seq: 9, control: 2 });
        assert!(loaded.relation_type(1).is_some());
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Cluster mode: partitions on NATS JetStream, each host owning a slice.
//!
//! - A fixed number of partitions; a profile's partition is the XXH64 of its id
//!   modulo that number ([`route::partition_of`]), one JetStream stream each, so the
//!   stream's sequence is the partition's offset.
//! - A write enters through any host: checked by the API as a single engine would
//!   ([`relcount::api::Api::validate_write`], against the relation types the control
//!   stream defined), its profiles named by id (a lookup by email, phone or field in
//!   this host's directory), and published to its partition (a batch split by
//!   recipient) with the writes that waited for the partition's turn
//!   ([`log::Log::submit`]). The answer's `relcount-written` header gives
//!   `partition=sequence` for each record written.
//! - The partition's owner decides what only the data decides (a missing relation,
//!   an overflow, an unknown profile), in log order, and answers the entry host
//!   ([`outcome`]), which answers the client with it.
//! - Definitions, profile imports and deletions go to the control stream, then (but
//!   imports) a marker naming its sequence to every partition, so each partition
//!   applies them in order with its own writes, exactly once (the partition's
//!   snapshot keeps the control sequence it reached). Every host follows the control
//!   stream into its directory: relation types and every profile, no relations.
//! - Each host owns the partitions of its `--owns` (published in a NATS KV bucket,
//!   the owners' map), and applies each one's stream in order into an engine of its
//!   own ([`partition`]). A read goes to the partition's owner: served here, or
//!   forwarded. A `relcount-min-seq` header asks to read at least that sequence of
//!   the partition (read your writes); a partition still catching up answers 503.

pub mod log;
pub mod outcome;
pub mod partition;
pub mod route;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use relcount::api::{Api, Call, Code};
use tokio::sync::Semaphore;

use self::log::{CREATED, Log};
use self::partition::{Partition, Plan, Progress};
use self::route::Route;

/// The header a read carries to be served at least at a partition's sequence.
pub const MIN_SEQ: &str = "relcount-min-seq";
/// The header a write's answer carries: `partition=sequence`, comma-separated.
pub const WRITTEN: &str = "relcount-written";
/// The header of a read forwarded by another host (never forwarded again).
pub const FORWARDED: &str = "relcount-forwarded";

/// A cluster host's settings.
#[derive(Debug, Clone)]
pub struct Setup {
    /// NATS server URLs, comma-separated.
    pub nats: String,
    /// Partitions in the cluster (the same on every host).
    pub partitions: u32,
    /// The partitions this host owns.
    pub owns: Vec<u32>,
    /// This host's URL as the others reach it.
    pub advertise: String,
    /// JetStream replicas of each stream.
    pub replicas: usize,
    /// Where partition snapshots go (none: memory only).
    pub data: Option<PathBuf>,
    /// A snapshot every this many records of a partition.
    pub snapshot_every: u64,
    /// How long a write may wait for JetStream's acknowledgment.
    pub publish_timeout: Duration,
    /// How long a read may wait for its partition to reach `relcount-min-seq`.
    pub read_wait: Duration,
    /// How long a logged write waits for its owner to say what it came to.
    pub apply_wait: Duration,
    /// The operator's token.
    pub token: String,
    /// The API's limits.
    pub limits: relcount::api::Limits,
}

/// JetStream's default duplicate window, within which a message id is stored once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long a host waits quietly for JetStream at its start (a fresh cluster elects
/// its leaders in a few seconds).
const READY_QUIET: Duration = Duration::from_secs(20);
/// How long one attempt to make the cluster's streams may take at a start.
const READY_ATTEMPT: Duration = Duration::from_secs(2);
/// How long a host waits for JetStream at its start before it gives up.
const READY_WAIT: Duration = Duration::from_secs(120);

/// Records behind past which a host's directory reads the control stream through a
/// consumer rather than one request a record.
const BULK: u64 = 16;

/// How often a host reads the control stream's new records into its checking API.
const FOLLOW_CONTROL: Duration = Duration::from_millis(500);

/// An answer of the cluster layer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The envelope.
    pub body: Bytes,
    /// Its `error` code.
    pub code: u32,
    /// `relcount-written`, for a write.
    pub written: Option<String>,
}

impl Answer {
    fn api(r: relcount::api::Response) -> Answer {
        Answer {
            status: 200,
            body: Bytes::from(r.body),
            code: r.code.number(),
            written: None,
        }
    }

    /// A refusal its owner decided, as the owner's API worded it.
    fn decided(o: outcome::Outcome) -> Answer {
        Answer {
            status: 200,
            body: o.body,
            code: o.code,
            written: None,
        }
    }

    fn refused(status: u16, code: u32, text: &str) -> Answer {
        Answer {
            status,
            body: Bytes::from(format!(
                "{{\"error\":{code},\"error_text\":{}}}",
                relcount::api::json_string(text)
            )),
            code,
            written: None,
        }
    }
}

/// A profile a request names otherwise than by id: where (a field, or the top level),
/// its database, and how it is named.
type Unnamed = (Option<&'static str>, u32, relcount::OwnedMatch);

/// Whether a lookup catches the directory up with the control stream first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CatchUp {
    /// The caller just did.
    Done,
    /// First, or the call is refused (a write).
    Required,
    /// First if the control stream can be read (a read).
    IfReadable,
}

/// A write checked.
struct Checked {
    /// The API's answer to it, or its refusal.
    answer: relcount::api::Response,
    /// Where it goes (an error for a profile still to be named by id).
    route: Result<Route, route::Refused>,
    /// The profiles to name by id before it can go anywhere.
    unnamed: Vec<Unnamed>,
    /// The profiles it names by id that this host's directory does not have: they
    /// are recorded in the control stream once the write is logged.
    new: Vec<(u32, String)>,
}

impl Checked {
    fn refused(answer: relcount::api::Response) -> Checked {
        Checked {
            answer,
            route: Err(String::new()),
            unnamed: Vec::new(),
            new: Vec::new(),
        }
    }
}

/// The profiles `request` names by id that `front`'s directory lacks, each once.
fn new_profiles(front: &Api, request: &relcount::api::Request) -> Vec<(u32, String)> {
    use relcount::api::Request;
    let engine = front.engine();
    let mut out: Vec<(u32, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut note = |db: u32, id: &str| {
        if !engine.contains_profile(db, relcount::Match::Id(id)) && seen.insert((db, id.to_owned()))
        {
            out.push((db, id.to_owned()));
        }
    };
    let Some(rel_id) = request.rel_id() else {
        return Vec::new();
    };
    let Some(t) = engine.relation_type(rel_id) else {
        return Vec::new();
    };
    match request {
        // A detach creates nothing. (A strengthen that creates a profile creates its
        // relation: from zero, no delta overflows.)
        Request::Write {
            op,
            profile_a,
            profile_b,
            ..
        } if *op != relcount::Op::Detach => {
            for (db, m) in [(t.db_a(), profile_a), (t.db_b(), profile_b)] {
                if let relcount::OwnedMatch::Id(id) = m {
                    note(db, id);
                }
            }
        }
        Request::ImportRelations { rows, .. } => {
            for (a, b, _) in rows {
                note(t.db_a(), a);
                note(t.db_b(), b);
            }
        }
        _ => {}
    }
    out
}

/// The profiles `request` names otherwise than by id.
fn unnamed(front: &Api, request: &relcount::api::Request) -> Vec<Unnamed> {
    use relcount::api::Request;
    let dbs = |rel_id: u32| {
        front
            .engine()
            .relation_type(rel_id)
            .map(|t| (t.db_a(), t.db_b()))
    };
    let named_otherwise = |m: &relcount::OwnedMatch| !matches!(m, relcount::OwnedMatch::Id(_));
    let mut out = Vec::new();
    match request {
        Request::Write {
            rel_id,
            profile_a,
            profile_b,
            ..
        } => {
            if let Some((db_a, db_b)) = dbs(*rel_id) {
                for (side, db, m) in [
                    ("profile_a", db_a, profile_a),
                    ("profile_b", db_b, profile_b),
                ] {
                    if named_otherwise(m) {
                        out.push((Some(side), db, m.clone()));
                    }
                }
            }
        }
        Request::GetCounter { rel_id, profile }
        | Request::Get {
            rel_id, profile, ..
        } => {
            if let Some((db_a, _)) = dbs(*rel_id)
                && named_otherwise(profile)
            {
                out.push((None, db_a, profile.clone()));
            }
        }
        Request::DeleteProfile { db, profile } if named_otherwise(profile) => {
            out.push((None, *db, profile.clone()));
        }
        _ => {}
    }
    out
}

/// What the submits of a write came to: its `relcount-written` value (each
/// `partition=sequence` logged), the owners' outcomes to come, and the first failure.
fn sequences(
    placed: Vec<(u32, Result<log::Placed, log::NotLogged>)>,
) -> (
    String,
    Vec<tokio::sync::oneshot::Receiver<outcome::Outcome>>,
    Option<log::NotLogged>,
) {
    let mut written = Vec::new();
    let mut outcomes = Vec::new();
    let mut failed = None;
    for (p, placed) in placed {
        match placed {
            Ok(placed) => {
                written.push(format!("{p}={}", placed.seq));
                outcomes.push(placed.outcome);
            }
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    (written.join(","), outcomes, failed)
}

struct Owned {
    part: Arc<Partition>,
    task: tokio::task::JoinHandle<()>,
    /// The owners' map revision at which this host claimed it.
    claimed: u64,
}

/// A cluster host.
pub struct Cluster {
    setup: Setup,
    log: Arc<Log>,
    /// The API that checks writes, over the directory: relation types and every
    /// profile, no relations.
    front: Arc<Api>,
    /// The control stream's last record applied to `front` (the lock serializes
    /// catching up and this host's control writes).
    front_at: tokio::sync::Mutex<u64>,
    /// The last control record applied to `front` that partitions apply too (not
    /// the profiles writes created, which only directories keep), readable without
    /// the lock (a control write holds it while it publishes, and no other write
    /// waits for that): the stamp of the writes checked here.
    front_seen: std::sync::atomic::AtomicU64,
    /// The profiles this host recorded as created, with their record's sequence,
    /// until its directory applies that record.
    recorded: std::sync::Mutex<HashMap<(u32, String), u64>>,
    /// The last control record the front applied, for the partitions.
    front_applied: tokio::sync::watch::Sender<u64>,
    /// Wakes the front's follower.
    front_wake: Arc<tokio::sync::Notify>,
    /// Definitions the front has applied.
    front_defines: std::sync::atomic::AtomicU64,
    /// When the last catch-up that ended began (see [`Cluster::catch_up_since`]).
    front_began: std::sync::Mutex<tokio::time::Instant>,
    owned: RwLock<HashMap<u32, Owned>>,
    /// Each partition's owner URL, as the owners' map says.
    owners: RwLock<Vec<Option<String>>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("partitions", &self.setup.partitions)
            .field("owns", &self.setup.owns)
            .finish_non_exhaustive()
    }
}

/// The largest message the NATS server takes (its `max_payload`; 1 MiB when unknown,
/// the server's default).
fn client_max_payload(js: &jetstream::Context) -> usize {
    match js.client().server_info().max_payload {
        0 => 1 << 20,
        n => n,
    }
}

/// Follows the owners' map for as long as the host runs. Its consumer is made again
/// (from each partition's last claim) when it ends, fails, or delivers nothing while
/// claims wait, as a partition's applier does: after a NATS node's loss it may stall.
async fn follow_owners(cluster: Arc<Cluster>, first: jetstream::consumer::pull::Ordered) {
    let mut claims = Some(first);
    let mut seen = 0;
    loop {
        let mut current = match claims.take() {
            Some(c) => c,
            None => match cluster.log.owners().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot follow the owners' map; retried");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            },
        };
        let mut errors = 0;
        loop {
            match tokio::time::timeout(partition::STALL, current.next()).await {
                Ok(Some(Ok(m))) => {
                    errors = 0;
                    let Ok(info) = m.info() else { continue };
                    let revision = info.stream_sequence;
                    seen = seen.max(revision);
                    cluster.owner_changed(&m.subject, &m.payload, revision);
                }
                Ok(Some(Err(e))) => {
                    errors += 1;
                    tracing::debug!(error = %e, "owners' map");
                    if errors >= 3 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(None) => break,
                Err(_) => match cluster.log.owners_last().await {
                    Ok(last) if last > seen => break,
                    Ok(_) => {}
                    Err(_) => break,
                },
            }
        }
    }
}

/// Where partition `p`'s snapshots go (none: memory only).
fn partition_dir(setup: &Setup, p: u32) -> Option<PathBuf> {
    setup
        .data
        .as_ref()
        .map(|d| d.join(format!("partition-{p}")))
}

fn plan(setup: &Setup, p: u32, following: partition::Following) -> Plan {
    Plan {
        dir: partition_dir(setup, p),
        snapshot_every: setup.snapshot_every,
        token: setup.token.clone(),
        partitions: setup.partitions,
        following,
        limits: setup.limits.clone(),
    }
}

impl Cluster {
    /// Joins the cluster: connects to NATS, creates the streams that are missing,
    /// claims this host's partitions in the owners' map and starts applying them.
    ///
    /// # Errors
    ///
    /// NATS unreachable, a stream that cannot be created, a snapshot that cannot be
    /// read.
    pub async fn join(setup: Setup, front: Arc<Api>) -> Result<Arc<Cluster>, String> {
        if setup.partitions == 0 {
            return Err("--partitions must be at least 1".into());
        }
        // A retried publish is stored once only within JetStream's duplicate window.
        if setup.publish_timeout > DUPLICATE_WINDOW {
            return Err(format!(
                "--publish-timeout must be at most {} s, JetStream's duplicate window \
                 (a write retried later could be stored twice)",
                DUPLICATE_WINDOW.as_secs()
            ));
        }
        if let Some(p) = setup.owns.iter().find(|&&p| p >= setup.partitions) {
            return Err(format!(
                "--owns names partition {p}, but there are {} (0..{})",
                setup.partitions, setup.partitions
            ));
        }
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(
                setup
                    .nats
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .collect::<Vec<_>>(),
            )
            .await
            .map_err(|e| format!("cannot reach NATS at {}: {e}", setup.nats))?;
        let js = jetstream::new(client);
        let host = format!(
            "{:016x}",
            relcount::xxh64(
                format!("{:?}{}", std::time::SystemTime::now(), setup.advertise).as_bytes()
            )
        );
        let max_payload = client_max_payload(&js);
        // The owners' answers to this host's records: a subscription made before any
        // record is published. A waiter unanswered for longer than a write could wait
        // is dropped.
        let outcomes = Arc::new(outcome::Outcomes::new(
            setup.publish_timeout + setup.apply_wait + Duration::from_secs(10),
        ));
        let mut answers = js
            .client()
            .subscribe(log::reply_subject(&host))
            .await
            .map_err(|e| format!("cannot subscribe to the owners' answers: {e}"))?;
        let taken = Arc::clone(&outcomes);
        tokio::spawn(async move {
            while let Some(m) = answers.next().await {
                taken.received(&m.payload);
            }
        });
        let log = Arc::new(Log::new(
            js,
            setup.partitions,
            host,
            setup.publish_timeout,
            max_payload,
            outcomes,
        ));
        // Right after NATS starts, JetStream elects its meta leader, then each
        // stream's: asked again every 100 ms, quietly for the first READY_QUIET (the
        // normal election), then with a warning each 5 s, for up to READY_WAIT.
        let started = tokio::time::Instant::now();
        let mut warned = started;
        loop {
            // An attempt's requests go unanswered until the meta leader is elected:
            // bounded here, not by the client's 10 s request timeout.
            let e = match tokio::time::timeout(READY_ATTEMPT, log.ensure(setup.replicas)).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => e,
                Err(_) => format!("no answer within {READY_ATTEMPT:?}").into(),
            };
            if let Some(mismatch) = e.downcast_ref::<log::Mismatch>() {
                return Err(mismatch.to_string());
            }
            let waited = started.elapsed();
            if waited > READY_WAIT {
                return Err(format!(
                    "JetStream was not ready within {} s: {e}",
                    READY_WAIT.as_secs()
                ));
            }
            if waited > READY_QUIET && warned.elapsed() >= Duration::from_secs(5) {
                warned = tokio::time::Instant::now();
                tracing::warn!(error = %e, waited = ?waited, "JetStream not ready yet; still waiting");
            } else {
                tracing::debug!(error = %e, "JetStream not ready yet (electing its leaders)");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!(took = ?started.elapsed(), "JetStream ready");
        let cluster = Arc::new(Cluster {
            owners: RwLock::new(vec![None; setup.partitions as usize]),
            setup,
            log,
            front,
            front_at: tokio::sync::Mutex::new(0),
            front_seen: std::sync::atomic::AtomicU64::new(0),
            front_began: std::sync::Mutex::new(tokio::time::Instant::now()),
            front_defines: std::sync::atomic::AtomicU64::new(0),
            front_applied: tokio::sync::watch::Sender::new(0),
            recorded: std::sync::Mutex::new(HashMap::new()),
            front_wake: Arc::new(tokio::sync::Notify::new()),
            owned: RwLock::new(HashMap::new()),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        cluster.catch_up_front().await?;
        // The checking API follows the control stream, so a write is checked, and
        // stamped, after the definitions and deletions logged before it arrived
        // (within this period) even when no marker has placed them yet.
        let follower = Arc::downgrade(&cluster);
        let wake = Arc::clone(&cluster.front_wake);
        tokio::spawn(async move {
            loop {
                // Every period, and whenever a partition waits for it.
                tokio::select! {
                    () = tokio::time::sleep(FOLLOW_CONTROL) => {}
                    () = wake.notified() => {}
                }
                let Some(c) = follower.upgrade() else { return };
                if let Err(e) = c.catch_up_front().await {
                    tracing::debug!(error = %e, "following the control stream");
                }
            }
        });
        let claims = cluster.setup.owns.iter().map(|&p| {
            let cluster = &cluster;
            async move {
                let claimed = cluster.log.claim(p, &cluster.setup.advertise).await;
                (p, claimed)
            }
        });
        for (p, claimed) in futures_util::future::join_all(claims).await {
            let claimed = claimed.map_err(|e| format!("cannot claim partition {p}: {e}"))?;
            let (part, task) = partition::start(
                cluster.log.js().clone(),
                p,
                plan(&cluster.setup, p, cluster.following()),
            )?;
            cluster.write_owned().insert(
                p,
                Owned {
                    part,
                    task,
                    claimed,
                },
            );
            cluster.write_owners()[p as usize] = Some(cluster.setup.advertise.clone());
        }
        let first = cluster
            .log
            .owners()
            .await
            .map_err(|e| format!("cannot follow the owners' map: {e}"))?;
        tokio::spawn(follow_owners(Arc::clone(&cluster), first));
        Ok(cluster)
    }

    fn write_owned(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u32, Owned>> {
        self.owned.write().unwrap_or_else(|e| e.into_inner())
    }

    fn write_owners(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Option<String>>> {
        self.owners.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the owners' map: a partition this host owned and another host claimed
    /// since is released.
    fn owner_changed(&self, subject: &str, url: &[u8], revision: u64) {
        let Some(p) = log::claimed_partition(subject) else {
            return;
        };
        if p >= self.setup.partitions {
            return;
        }
        let url = String::from_utf8_lossy(url).into_owned();
        let mine = url == self.setup.advertise;
        {
            let mut owned = self.write_owned();
            if !mine
                && owned.get(&p).is_some_and(|o| revision > o.claimed)
                && let Some(o) = owned.remove(&p)
            {
                o.task.abort();
                tracing::info!(partition = p, new_owner = %url, "partition released");
            }
            if owned.get(&p).is_some_and(|o| revision < o.claimed) {
                return;
            }
        }
        self.write_owners()[p as usize] = (!url.is_empty()).then_some(url);
    }

    /// Applies the control stream's definitions to the checking API, up to the
    /// stream's last record.
    async fn catch_up_front(&self) -> Result<(), String> {
        let mut at = self.front_at.lock().await;
        self.catch_up(&mut at).await
    }

    /// Catches the directory up with every control record logged before `arrived`:
    /// a catch-up that began after it, by another call, does for this one too.
    async fn catch_up_since(&self, arrived: tokio::time::Instant) -> Result<(), String> {
        let mut at = self.front_at.lock().await;
        let began_last = *self.front_began.lock().unwrap_or_else(|e| e.into_inner());
        if began_last >= arrived {
            return Ok(());
        }
        let began = tokio::time::Instant::now();
        self.catch_up(&mut at).await?;
        *self.front_began.lock().unwrap_or_else(|e| e.into_inner()) = began;
        Ok(())
    }

    /// [`catch_up_front`](Self::catch_up_front) with its lock held by the caller.
    ///
    /// Reading is idempotent, so a failed read (a stream leader in election after its
    /// node died, a request timed out) is made again until the log's timeout, as a
    /// publish is: a write is refused only when the control stream stays unreadable.
    async fn catch_up(&self, at: &mut u64) -> Result<(), String> {
        let mut retry = log::Retry::within(self.log.timeout());
        loop {
            let failed = match tokio::time::timeout(retry.left(), self.catch_up_once(at)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => format!(
                    "the control stream could not be read within {} s",
                    self.log.timeout().as_secs_f64()
                ),
            };
            tracing::debug!(%failed, "reading the control stream again");
            if !retry.pause().await {
                return Err(failed);
            }
        }
    }

    /// One attempt of [`catch_up`](Self::catch_up): `at` keeps the records applied.
    async fn catch_up_once(&self, at: &mut u64) -> Result<(), String> {
        let mut control = self.log.control().await.map_err(|e| e.to_string())?;
        let last = control
            .info()
            .await
            .map_err(|e| format!("cannot read the control stream: {e}"))?
            .state
            .last_sequence;
        if last - *at > BULK {
            // Many records behind (profiles created elsewhere): read in one stream of
            // messages, not a request each.
            let consumer = control
                .create_consumer(jetstream::consumer::pull::OrderedConfig {
                    deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: *at + 1,
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot read the control stream: {e}"))?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| format!("cannot read the control stream: {e}"))?;
            while *at < last {
                let msg = match tokio::time::timeout(Duration::from_secs(10), messages.next()).await
                {
                    Ok(Some(Ok(m))) => m,
                    Ok(Some(Err(e))) => return Err(format!("cannot read the control stream: {e}")),
                    _ => return Err("the control stream stopped delivering".to_owned()),
                };
                let seq = msg
                    .info()
                    .map_err(|e| format!("a control record without its sequence: {e}"))?
                    .stream_sequence;
                if seq <= *at {
                    continue;
                }
                if seq != *at + 1 {
                    return Err(format!("control record {} is missing", *at + 1));
                }
                self.apply_front(seq, &msg.payload);
                *at = seq;
            }
        }
        while *at < last {
            let seq = *at + 1;
            let msg = control
                .get_raw_message(seq)
                .await
                .map_err(|e| format!("cannot read control record {seq}: {e}"))?;
            self.apply_front(seq, &msg.payload);
            *at = seq;
        }
        let applied = *at;
        self.recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, seq| *seq > applied);
        Ok(())
    }

    /// Applies control record `seq` to the directory.
    fn apply_front(&self, seq: u64, payload: &[u8]) {
        let calls = log::decode(payload).map(|r| r.calls).unwrap_or_default();
        // Stamps read from here on are at least this record's sequence, set before
        // the record is applied: a write checked against it is stamped past it (a
        // stamp too high is harmless; one too low would apply the write first).
        // Records of created profiles are not stamped past: partitions skip them, so
        // they need not read them before a write (they read them, once, on their way
        // to the next definition, import or deletion).
        if calls.iter().any(|(call, _, _)| *call != CREATED) {
            self.front_seen
                .store(seq, std::sync::atomic::Ordering::Release);
        }
        // The directory: relation types and profiles' data, no relations.
        for (call, _, body) in calls {
            if call == CREATED {
                self.created(body);
                continue;
            }
            if call == Call::Define.path() {
                self.front_defines
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
            let auth = format!("Bearer {}", self.setup.token);
            let _ = self.front.handle(call, Some(&auth), body);
        }
        self.front_applied.send_replace(seq);
    }

    /// Where this host's directory stands, for its partitions.
    fn following(&self) -> partition::Following {
        partition::Following {
            applied: self.front_applied.subscribe(),
            wake: Arc::clone(&self.front_wake),
        }
    }

    /// Records in the directory the profiles a [`CREATED`] record names that it does
    /// not have (an id-only profile; one imported meanwhile keeps its data).
    fn created(&self, body: &[u8]) {
        let Ok(profiles) = serde_json::from_slice::<Vec<(u32, String)>>(body) else {
            tracing::warn!("a record of created profiles that does not parse: skipped");
            return;
        };
        let engine = self.front.engine();
        for (db, id) in profiles {
            if !engine.contains_profile(db, relcount::Match::Id(&id))
                && let Err(e) = engine.import_profile(db, &id, relcount::ProfileData::default())
            {
                tracing::warn!(db, id, error = %e, "a created profile not recorded");
            }
        }
    }

    /// Serves an API call in cluster mode. `lane` gives the permits for CPU work
    /// (checking, routing, a local read): one is held for that work only, never while
    /// the call waits on the network (JetStream's acknowledgment, a forwarded read, a
    /// partition catching up), so waiting calls never keep others from the cores.
    pub async fn serve(
        &self,
        call: Call,
        auth: Option<&str>,
        body: Bytes,
        min_seq: Option<&str>,
        forwarded: bool,
        lane: Arc<Semaphore>,
    ) -> Answer {
        if call.is_write() {
            self.write(call, auth, body, &lane).await
        } else {
            self.read(call, auth, body, min_seq, forwarded, &lane).await
        }
    }

    /// Checks a write and routes it, on a worker thread under a permit of `lane`;
    /// the profiles it names otherwise than by id, to be named by id before it is
    /// routed again (see [`Cluster::name_by_ids`]).
    async fn check(
        &self,
        call: Call,
        auth: Option<&str>,
        body: &Bytes,
        lane: &Arc<Semaphore>,
    ) -> Result<Checked, Answer> {
        let Ok(permit) = Arc::clone(lane).acquire_owned().await else {
            return Err(Answer::refused(503, 503, "the server is shutting down"));
        };
        let (front, auth, body) = (
            Arc::clone(&self.front),
            auth.map(str::to_owned),
            body.clone(),
        );
        let partitions = self.setup.partitions;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let (request, answer) = match front.validate_write(call.path(), auth.as_deref(), &body)
            {
                Ok(checked) => checked,
                Err(refusal) => return Checked::refused(refusal),
            };
            let route = route::write(call, &body, partitions);
            let unnamed = match &route {
                Err(_) => unnamed(&front, &request),
                Ok(_) => Vec::new(),
            };
            Checked {
                answer,
                route,
                unnamed,
                new: new_profiles(&front, &request),
            }
        })
        .await
        .map_err(|_| Answer::refused(500, 500, "internal error"))
    }

    /// `body` with each profile of `unnamed` named by its id, as this host's
    /// directory finds it (caught up first with the control stream, unless the
    /// caller just did); a profile not found is refused as one engine refuses it.
    async fn name_by_ids(
        &self,
        body: &Bytes,
        unnamed: Vec<Unnamed>,
        catch_up: CatchUp,
    ) -> Result<Bytes, Answer> {
        if catch_up != CatchUp::Done {
            let arrived = tokio::time::Instant::now();
            match self.catch_up_since(arrived).await {
                Ok(()) => {}
                // A read goes on with the directory as it is while the control stream
                // cannot be read (no quorum), as reads of the partitions do.
                Err(e) if catch_up == CatchUp::IfReadable => {
                    tracing::debug!(error = %e, "a lookup with the directory as it is");
                }
                Err(e) => {
                    return Err(Answer::refused(
                        503,
                        503,
                        &format!("the cluster's log: {e}"),
                    ));
                }
            }
        }
        let mut body = body.clone();
        for (side, db, profile) in unnamed {
            let id = self
                .front
                .engine()
                .profile_id(db, profile.as_match())
                .map_err(|e| Answer::api(relcount::api::Response::refusal(e)))?;
            let named =
                route::name_by_id(&body, side, &id).map_err(|t| Answer::refused(200, 400, &t))?;
            body = Bytes::from(named);
        }
        Ok(body)
    }

    async fn write(
        &self,
        call: Call,
        auth: Option<&str>,
        body: Bytes,
        lane: &Arc<Semaphore>,
    ) -> Answer {
        if matches!(
            call,
            Call::Define | Call::DeleteProfile | Call::ImportProfiles
        ) {
            return match self.write_control(call, auth, &body, lane).await {
                Ok(answer) | Err(answer) => answer,
            };
        }
        let log_error = |e: String| Answer::refused(503, 503, &format!("the cluster's log: {e}"));
        let mut checked = match self.check(call, auth, &body, lane).await {
            Ok(c) => c,
            Err(answer) => return answer,
        };
        if checked.answer.code == Code::UnknownRelation {
            // A relation type defined through another host may not be here yet.
            if let Err(e) = self.catch_up_front().await {
                return log_error(e);
            }
            checked = match self.check(call, auth, &body, lane).await {
                Ok(c) => c,
                Err(answer) => return answer,
            };
        }
        let Checked {
            answer: checked,
            mut route,
            unnamed,
            new,
        } = checked;
        if checked.code != Code::Ok {
            return Answer::api(checked);
        }
        let arrived = tokio::time::Instant::now();
        let mut body = body;
        if !unnamed.is_empty() {
            match self.name_by_ids(&body, unnamed, CatchUp::Required).await {
                Ok(named) => {
                    route = route::write(call, &named, self.setup.partitions);
                    body = named;
                }
                Err(answer) => return answer,
            }
        }
        // Read after the check: the front was at least this far when it checked.
        let checked_at = self.front_seen.load(std::sync::atomic::Ordering::Acquire);
        let parts = match route {
            Ok(Route::Partitions(parts)) => parts,
            Ok(Route::Control(_)) => return Answer::refused(500, 500, "internal error"),
            Err(text) => return Answer::refused(200, 400, &text),
        };
        if let Some(answer) = self.too_large(parts.iter().map(|(_, b)| b.len() + call.path().len()))
        {
            return answer;
        }
        let answered = outcome::awaited(call);
        let submits = parts.into_iter().map(|(p, b)| async move {
            (
                p,
                self.log
                    .submit(p, call.path(), checked_at, Bytes::from(b), answered)
                    .await,
            )
        });
        let placed = futures_util::future::join_all(submits).await;
        // The profiles the write created are recorded in the control stream once it
        // is logged (partitions skip those records; a write not logged records
        // nothing), and it is answered after: a deletion sent after the answer comes
        // after the record.
        let new = self.not_recorded(new);
        if placed.iter().all(|(_, p)| p.is_ok())
            && let Err(e) = self.record_new(&new).await
        {
            // The write's own fate is its answer; a profile unrecorded only reads 404
            // as an initiator until a write through another host names it.
            tracing::warn!(error = %e, "new profiles not recorded in the directory");
        }
        let (written, outcomes, failed) = sequences(placed);
        if let Some(e) = failed {
            let text = if written.is_empty() {
                e.to_string()
            } else {
                format!("{e} (partly written: {written})")
            };
            return Answer::refused(503, 503, &text);
        }
        // Answered once logged, unless its owner decides (`outcome::awaited`).
        if !answered {
            let mut answer = Answer::api(checked);
            answer.written = Some(written);
            return answer;
        }
        let decided = tokio::time::timeout(
            self.setup.apply_wait,
            futures_util::future::join_all(outcomes),
        )
        .await;
        let mut answer = match decided {
            Ok(outcomes) if outcomes.iter().all(Result::is_ok) => {
                // One engine answers a write with the first refusal, or its success.
                match outcomes.into_iter().flatten().find(|o| o.code != 0) {
                    None => Answer::api(checked),
                    Some(o) => {
                        let refused = Answer::decided(o);
                        // A detach naming a profile its partition never saw: one
                        // engine knows it if the directory does (no such relation).
                        self.unless_known(refused, call, auth, &body, arrived).await
                    }
                }
            }
            _ => self.not_applied_yet(&written),
        };
        answer.written = Some(written);
        answer
    }

    /// The profiles of `new` this host has not recorded since its directory last
    /// caught up (it records each once, not once a write, while its directory lags).
    fn not_recorded(&self, mut new: Vec<(u32, String)>) -> Vec<(u32, String)> {
        if !new.is_empty() {
            let recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
            new.retain(|p| !recorded.contains_key(p));
        }
        new
    }

    /// Records `new` profiles in the control stream (in records that fit); the last
    /// one's sequence (0 with none).
    async fn record_new(&self, new: &[(u32, String)]) -> Result<u64, log::NotLogged> {
        let mut last = 0;
        let mut rest = new;
        while !rest.is_empty() {
            // An id is at most 64 bytes; with its database and JSON, under 96.
            let n = (self.log.max_record().saturating_sub(256) / 96).clamp(1, rest.len());
            let (chunk, after) = rest.split_at(n);
            let body = serde_json::to_vec(chunk).unwrap_or_default();
            last = self.log.submit_control(CREATED, Bytes::from(body)).await?;
            let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
            for p in chunk {
                recorded.insert(p.clone(), last);
            }
            drop(recorded);
            rest = after;
        }
        Ok(last)
    }

    /// A 504: the write is logged, but its owner did not say within the wait what it
    /// came to.
    fn not_applied_yet(&self, written: &str) -> Answer {
        Answer::refused(
            504,
            504,
            &format!(
                "the write is logged ({WRITTEN}: {written}) but the owners of those \
                 partitions did not all apply it within {} s (one may be restarting, or \
                 a partition moving): it takes effect in its place in the log, so do \
                 not send it again; a read with {MIN_SEQ} at that sequence sees it",
                self.setup.apply_wait.as_secs_f64()
            ),
        )
    }

    /// A 413 when a call of `len` bytes would not fit in a NATS message.
    fn too_large(&self, mut lengths: impl Iterator<Item = usize>) -> Option<Answer> {
        // A record's own header and its call's header.
        let len = lengths.find(|&n| !self.log.fits(n + 128))?;
        Some(Answer::refused(
            200,
            413,
            &format!(
                "the write is {len} bytes once logged, and the log takes at most {} (NATS \
                 max_payload): send it in smaller batches",
                self.log.max_record().saturating_sub(128)
            ),
        ))
    }

    /// A definition, profiles' data or a profile's deletion: checked against every
    /// control record logged before it (for a definition, the control stream must
    /// still end where the check saw it, or the check is made again), logged in the
    /// control stream, then a marker in every partition. A deletion is answered once
    /// every partition's owner applied it: found in none, one engine's 404.
    async fn write_control(
        &self,
        call: Call,
        auth: Option<&str>,
        body: &Bytes,
        lane: &Arc<Semaphore>,
    ) -> Result<Answer, Answer> {
        let log_error = |e: String| Answer::refused(503, 503, &format!("the cluster's log: {e}"));
        let mut at = self.front_at.lock().await;
        self.catch_up(&mut at).await.map_err(log_error)?;
        let mut tries = 0;
        let started = tokio::time::Instant::now();
        let define = call == Call::Define;
        // Only a deletion's outcome depends on the data, in each partition.
        let answered = call == Call::DeleteProfile;
        let (checked, seq, answers) = loop {
            let Checked {
                answer: checked,
                mut route,
                unnamed,
                ..
            } = self.check(call, auth, body, lane).await?;
            if checked.code != Code::Ok {
                return Err(Answer::api(checked));
            }
            if !unnamed.is_empty() {
                // The directory was caught up above, under the lock.
                let named = self.name_by_ids(body, unnamed, CatchUp::Done).await?;
                route = route::write(call, &named, self.setup.partitions);
            }
            let control_body = match route {
                Ok(Route::Control(b)) => b,
                Ok(Route::Partitions(_)) => {
                    return Err(Answer::refused(500, 500, "internal error"));
                }
                Err(text) => return Err(Answer::refused(200, 400, &text)),
            };
            if let Some(answer) =
                self.too_large(std::iter::once(control_body.len() + call.path().len()))
            {
                return Err(answer);
            }
            // Only a definition's check depends on the control records before it.
            let published = self
                .log
                .publish_control(call.path(), *at, control_body.as_bytes(), define, answered)
                .await;
            match published {
                Ok((seq, answers)) => break (checked, seq, answers),
                // Other hosts' records (profiles created, deletions) move the stream
                // on too, without changing a definition's check: only tries that met
                // another definition count, and all of them share the log's timeout.
                Err(log::NotLogged::Moved)
                    if tries < 20 && started.elapsed() < self.log.timeout() =>
                {
                    let before = self
                        .front_defines
                        .load(std::sync::atomic::Ordering::Acquire);
                    self.catch_up(&mut at).await.map_err(log_error)?;
                    if self
                        .front_defines
                        .load(std::sync::atomic::Ordering::Acquire)
                        != before
                    {
                        tries += 1;
                    }
                }
                Err(e) => return Err(Answer::refused(503, 503, &e.to_string())),
            }
        };
        drop(at);
        let markers = (0..self.setup.partitions).map(|p| async move {
            (
                p,
                self.log
                    .submit(p, log::MARKER, seq, Bytes::new(), false)
                    .await,
            )
        });
        let (written, _, failed) = sequences(futures_util::future::join_all(markers).await);
        if let Some(e) = failed {
            // Logged in the control stream: it takes effect at the next record of the
            // partitions whose marker is missing.
            return Err(Answer::refused(
                503,
                503,
                &format!("{e} (control record {seq} logged; markers written: {written})"),
            ));
        }
        let mut answer = match answers {
            None => Answer::api(checked),
            Some(answers) => match tokio::time::timeout(self.setup.apply_wait, answers).await {
                Ok(Ok(outcomes)) => match outcomes.iter().find(|o| o.code == 0) {
                    // Found in one partition at least: deleted, as one engine would.
                    Some(_) => Answer::api(checked),
                    None => match outcomes.into_iter().next() {
                        Some(o) => Answer::decided(o),
                        None => Answer::api(checked),
                    },
                },
                _ => self.not_applied_yet(&written),
            },
        };
        answer.written = Some(written);
        Ok(answer)
    }

    async fn read(
        &self,
        call: Call,
        auth: Option<&str>,
        body: Bytes,
        min_seq: Option<&str>,
        forwarded: bool,
        lane: &Arc<Semaphore>,
    ) -> Answer {
        let arrived = tokio::time::Instant::now();
        let mut body = body;
        let p = match route::read(&body, self.setup.partitions) {
            Ok(p) => p,
            Err(text) => {
                // Named otherwise than by id: looked up in this host's directory.
                match self.read_by_id(call, auth, &body).await {
                    Ok(named) => body = named,
                    Err(answer) => return answer,
                }
                match route::read(&body, self.setup.partitions) {
                    Ok(p) => p,
                    Err(_) => return Answer::refused(200, 400, &text),
                }
            }
        };
        let min = match min_seq.map(str::parse::<u64>) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                return Answer::refused(200, 400, &format!("{MIN_SEQ} must be a sequence number"));
            }
        };
        let local = self
            .owned
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&p)
            .map(|o| Arc::clone(&o.part));
        if let Some(part) = local {
            if let Err(why) = part.reached(min, self.setup.read_wait).await {
                return Answer::refused(503, 503, &why);
            }
            let auth = auth.map(str::to_owned);
            let Ok(permit) = Arc::clone(lane).acquire_owned().await else {
                return Answer::refused(503, 503, "the server is shutting down");
            };
            let (served_auth, served_body) = (auth.clone(), body.clone());
            let served = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                part.api
                    .handle(call.path(), served_auth.as_deref(), &served_body)
            })
            .await;
            let answer = match served {
                Ok(r) => Answer::api(r),
                Err(_) => return Answer::refused(500, 500, "internal error"),
            };
            if forwarded {
                return answer;
            }
            return self
                .unless_known(answer, call, auth.as_deref(), &body, arrived)
                .await;
        }
        if forwarded {
            return Answer::refused(503, 503, &format!("partition {p} is not served here"));
        }
        let owner = self.owners.read().unwrap_or_else(|e| e.into_inner())[p as usize].clone();
        let Some(owner) = owner else {
            return Answer::refused(503, 503, &format!("partition {p} has no owner"));
        };
        let answer = self
            .forward(&owner, call, auth, body.clone(), min_seq)
            .await;
        self.unless_known(answer, call, auth, &body, arrived).await
    }

    /// `answer`, unless it is a 404 for a profile its partition does not hold but
    /// the directory does (a profile only ever an initiator, or named by a write whose
    /// recipient lives elsewhere): then one engine's answer, which the directory
    /// gives (it holds every profile and no relation: zeroed counters, an empty
    /// page, no such relation).
    async fn unless_known(
        &self,
        answer: Answer,
        call: Call,
        auth: Option<&str>,
        body: &[u8],
        arrived: tokio::time::Instant,
    ) -> Answer {
        if answer.code != Code::ProfileNotFound.number() {
            return answer;
        }
        if self.catch_up_since(arrived).await.is_err() {
            return answer;
        }
        // Only what the directory can answer for the engine: the profile's zeroed
        // counters or empty page, or no such relation.
        let r = self.front.handle(call.path(), auth, body);
        if !matches!(r.code, Code::Ok | Code::RelationNotFound) {
            answer
        } else {
            Answer {
                written: answer.written,
                ..Answer::api(r)
            }
        }
    }

    /// A read's body with its profile named by id, from this host's directory; the
    /// API's refusal of the request itself (token, fields, relation type) first, as
    /// one engine gives it.
    async fn read_by_id(
        &self,
        call: Call,
        auth: Option<&str>,
        body: &Bytes,
    ) -> Result<Bytes, Answer> {
        let request = self
            .front
            .parse(call.path(), auth, body)
            .map_err(Answer::api)?;
        let mut unnamed = unnamed(&self.front, &request);
        if unnamed.is_empty()
            && let Some(rel_id) = request.rel_id()
            && self.front.engine().relation_type(rel_id).is_none()
        {
            // A relation type defined through another host may not be here yet.
            let arrived = tokio::time::Instant::now();
            if let Err(e) = self.catch_up_since(arrived).await {
                tracing::debug!(error = %e, "a read with the directory as it is");
            }
            unnamed = self::unnamed(&self.front, &request);
        }
        if unnamed.is_empty() {
            // Its relation type is not defined here: one engine's answer.
            let r = self.front.validate(call.path(), auth, body);
            return Err(if r.code == Code::Ok {
                Answer::refused(200, 400, "a read must name its profile")
            } else {
                Answer::api(r)
            });
        }
        self.name_by_ids(body, unnamed, CatchUp::IfReadable).await
    }

    async fn forward(
        &self,
        owner: &str,
        call: Call,
        auth: Option<&str>,
        body: Bytes,
        min_seq: Option<&str>,
    ) -> Answer {
        let mut req = hyper::Request::post(format!("{owner}/api/v1.1/{}", call.path()))
            .header(FORWARDED, "1")
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(a) = auth {
            req = req.header(hyper::header::AUTHORIZATION, a);
        }
        if let Some(m) = min_seq {
            req = req.header(MIN_SEQ, m);
        }
        let Ok(req) = req.body(Full::new(body)) else {
            return Answer::refused(500, 500, "internal error");
        };
        let unreachable = |e: &dyn std::fmt::Display| {
            Answer::refused(
                503,
                503,
                &format!("the partition's owner {owner} did not answer: {e}"),
            )
        };
        let sent = tokio::time::timeout(
            self.setup.read_wait + Duration::from_secs(5),
            self.client.request(req),
        )
        .await;
        let res = match sent {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => return unreachable(&e),
            Err(_) => return unreachable(&"timed out"),
        };
        let status = res.status().as_u16();
        let code = res
            .headers()
            .get(crate::CODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::from(status));
        match res.into_body().collect().await {
            Ok(b) => Answer {
                status,
                body: b.to_bytes(),
                code,
                written: None,
            },
            Err(e) => unreachable(&e),
        }
    }

    /// Each owned partition's progress, last applied sequence and records refused.
    #[must_use]
    pub fn status(&self) -> Vec<(u32, Progress, u64, u64)> {
        let owned = self.owned.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = owned
            .values()
            .map(|o| {
                (
                    o.part.p,
                    o.part.progress(),
                    o.part.at().seq,
                    o.part.refused(),
                )
            })
            .collect();
        out.sort_by_key(|(p, ..)| *p);
        out
    }

    /// Records of this host whose owners' answers it awaits.
    #[must_use]
    pub fn awaiting(&self) -> usize {
        self.log.outcomes().awaiting()
    }

    /// Stops applying, and saves a snapshot of every owned partition.
    pub async fn stop(&self) {
        let owned: Vec<Owned> = self.write_owned().drain().map(|(_, o)| o).collect();
        for o in owned {
            o.task.abort();
            let _ = o.task.await;
            if let Some(dir) = partition_dir(&self.setup, o.part.p) {
                let at = o.part.at();
                let engine = Arc::clone(o.part.api.engine());
                let saved =
                    tokio::task::spawn_blocking(move || partition::save(&dir, &engine, at)).await;
                match saved {
                    Ok(Ok(())) => {
                        tracing::info!(partition = o.part.p, seq = at.seq, "snapshot saved")
                    }
                    Ok(Err(e)) => {
                        tracing::error!(partition = o.part.p, error = %e, "snapshot failed")
                    }
                    Err(e) => tracing::error!(partition = o.part.p, error = %e, "snapshot failed"),
                }
            }
        }
    }
}

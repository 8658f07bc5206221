//! The replicated log: one JetStream stream per partition and a control stream, the
//! records they carry, and publishing with retries that keep each partition's order.
//!
//! A record (format 2, [`encode`]) carries calls: each an API call the owner applies
//! and its body as the client sent it, less its token. It also carries the control
//! stream's sequence the entry host had applied when it checked them (the owner
//! applies the control stream up to there first, so a write checked against a
//! definition, or after a deletion, the entry host knew of is applied after it), and
//! the subject and id the owner answers on ([`super::outcome`]). A partition's record
//! groups the writes that waited for their partition's turn: one publish in flight
//! per partition from a host keeps their order, and the writes that came meanwhile go
//! in the next record together ([`Log::submit`]). A marker is a call of its own,
//! [`MARKER`]: "apply the control stream up to here", which places a definition or a
//! profile's deletion among the partition's own writes before its answer.
//!
//! Format 1, `<call>\n<control>\n<body>` (one call, no answer), is still read: a
//! cluster's streams outlive its hosts' versions.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{Mutex, oneshot};

use super::outcome::{Outcome, Outcomes};

/// The control stream's name.
pub const CONTROL_STREAM: &str = "RELCOUNT_CONTROL";
/// The control stream's subject.
const CONTROL_SUBJECT: &str = "relcount.control";
/// The call a marker names.
pub const MARKER: &str = "control";
/// The call of a control record naming profiles writes created (no API call): every
/// host's directory records them, so a profile known only as an initiator reads as
/// one engine reads it; partitions skip it.
pub const CREATED: &str = "relcount/created";
/// The bucket mapping each partition to its owner's URL.
pub const OWNERS_BUCKET: &str = "relcount-owners";
/// The first line of a format 2 record.
const FORMAT_2: &str = "relcount 2";

/// Partition `p`'s stream.
#[must_use]
pub fn stream_name(p: u32) -> String {
    format!("RELCOUNT_P{p}")
}

fn subject(p: u32) -> String {
    format!("relcount.p.{p}")
}

fn owner_subject(p: u32) -> String {
    format!("$KV.{OWNERS_BUCKET}.p{p}")
}

/// The subject on which host `host` takes the owners' answers.
#[must_use]
pub fn reply_subject(host: &str) -> String {
    format!("relcount.answer.{host}")
}

/// The partition a claim's subject names.
#[must_use]
pub fn claimed_partition(subject: &str) -> Option<u32> {
    subject
        .strip_prefix(&format!("$KV.{OWNERS_BUCKET}.p"))?
        .parse()
        .ok()
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// The control stream's sequence to apply before its calls (their largest).
    pub control: u64,
    /// Where the owner answers, and the id it answers with (none: nobody waits).
    pub reply: Option<(&'a str, &'a str)>,
    /// The calls, in order: each its path, the control sequence to apply before it
    /// (the one its entry host checked it at), and its body.
    pub calls: Vec<(&'a str, u64, &'a [u8])>,
}

/// A record: `relcount 2\n<control>\n<reply subject> <id>\n<count>\n`, then each
/// call as `<path>\n<control>\n<body length>\n<body>`. A reply of `-` is none. A
/// call's own control sequence keeps the order of a partition's calls with the
/// control records: a write queued before a deletion's marker is applied before the
/// deletion, even in one record with it.
#[must_use]
pub fn encode(reply: Option<(&str, &str)>, calls: &[(&str, u64, &[u8])]) -> Bytes {
    let len: usize = calls.iter().map(|(c, _, b)| c.len() + b.len() + 40).sum();
    let mut out = BytesMut::with_capacity(64 + len);
    let reply = match reply {
        Some((subject, id)) => format!("{subject} {id}"),
        None => "-".to_owned(),
    };
    let control = calls.iter().map(|(_, c, _)| *c).max().unwrap_or(0);
    out.put_slice(format!("{FORMAT_2}\n{control}\n{reply}\n{}\n", calls.len()).as_bytes());
    for (call, control, body) in calls {
        out.put_slice(format!("{call}\n{control}\n{}\n", body.len()).as_bytes());
        out.put_slice(body);
    }
    out.freeze()
}

/// The line `rest` begins with, taken off it.
fn line<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let end = rest.iter().position(|&b| b == b'\n')?;
    let l = std::str::from_utf8(&rest[..end]).ok()?;
    *rest = &rest[end + 1..];
    Some(l)
}

/// A record's parts, in format 2 or 1; `None` when it is neither.
#[must_use]
pub fn decode(payload: &[u8]) -> Option<Record<'_>> {
    let mut rest = payload;
    let first = line(&mut rest)?;
    let control = line(&mut rest)?.parse().ok()?;
    if first != FORMAT_2 {
        // Format 1: one call (or a marker, with an empty body), no answer.
        let calls = if first == MARKER {
            Vec::new()
        } else {
            vec![(first, control, rest)]
        };
        return Some(Record {
            control,
            reply: None,
            calls,
        });
    }
    let reply = match line(&mut rest)? {
        "-" => None,
        r => Some(r.split_once(' ')?),
    };
    let count: usize = line(&mut rest)?.parse().ok()?;
    let mut calls = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let call = line(&mut rest)?;
        let stamp: u64 = line(&mut rest)?.parse().ok()?;
        let len: usize = line(&mut rest)?.parse().ok()?;
        if len > rest.len() || stamp > control {
            return None;
        }
        let (body, after) = rest.split_at(len);
        calls.push((call, stamp, body));
        rest = after;
    }
    rest.is_empty().then_some(Record {
        control,
        reply,
        calls,
    })
}

/// The owners' bucket key holding the partition count the cluster was made with.
const PARTITIONS_KEY: &str = "config-partitions";

/// Bytes a record may have beside its payload's limit: its headers (the message id).
const HEADROOM: usize = 256;

/// Why a publish was not acknowledged.
#[derive(Debug, Clone)]
pub enum NotLogged {
    /// The control stream moved past the sequence the write was checked at.
    Moved,
    /// No acknowledgment, or a refusal; the text says which.
    Failed(String),
}

impl std::fmt::Display for NotLogged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotLogged::Moved => f.write_str("the control stream moved on"),
            NotLogged::Failed(why) => f.write_str(why),
        }
    }
}

/// A call waiting for its partition's turn.
struct Waiting {
    /// Its number among this host's calls (to withdraw it).
    key: u64,
    call: &'static str,
    control: u64,
    body: Bytes,
    /// When its write stops waiting.
    deadline: tokio::time::Instant,
    /// Whether its write waits for the owner's outcome.
    answered: bool,
    done: oneshot::Sender<Result<Placed, NotLogged>>,
}

/// A partition's queue: the calls waiting, and the turn to publish them.
#[derive(Default)]
struct Lane {
    waiting: std::sync::Mutex<VecDeque<Waiting>>,
    /// Held while a record is published: by a task of its own, so a write that
    /// stops waiting never cuts a publish short.
    turn: Arc<Mutex<()>>,
}

impl Lane {
    fn waiting(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A call's result that never came (its record's task ended early).
fn lost() -> NotLogged {
    NotLogged::Failed("the write's publish ended early; it may or may not be logged".to_owned())
}

/// A call logged: its record's sequence in its partition's stream, and its owner's
/// outcome to come.
#[derive(Debug)]
pub struct Placed {
    /// The record's sequence.
    pub seq: u64,
    /// The owner's outcome, once it applied the record.
    pub outcome: oneshot::Receiver<Outcome>,
}

/// Publishes to the log: one publish in flight per partition from this host (so a
/// retried publish cannot land after a later one), each retried with its message id
/// until acknowledged or `timeout` has passed. The calls that come while a
/// partition's publish is in flight wait, and go together in its next record.
pub struct Log {
    js: jetstream::Context,
    partitions: u32,
    /// One lane per partition.
    lanes: Vec<Lane>,
    /// The control stream's turn.
    control_turn: Mutex<()>,
    /// This host's prefix for message ids.
    host: String,
    next_id: AtomicU64,
    timeout: Duration,
    /// The largest record the NATS servers take.
    max_payload: usize,
    /// The owners' answers this host waits for.
    outcomes: Arc<Outcomes>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("partitions", &self.partitions)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Log {
    /// A log over `js` with `partitions` partition streams, for host `host`, whose
    /// owners' answers go to `outcomes`.
    #[must_use]
    pub fn new(
        js: jetstream::Context,
        partitions: u32,
        host: String,
        timeout: Duration,
        max_payload: usize,
        outcomes: Arc<Outcomes>,
    ) -> Self {
        Log {
            max_payload,
            js,
            partitions,
            // One per partition, and the control stream's last.
            lanes: (0..=partitions).map(|_| Lane::default()).collect(),
            control_turn: Mutex::new(()),
            host,
            next_id: AtomicU64::new(0),
            timeout,
            outcomes,
        }
    }

    /// The subject this host's answers come on.
    #[must_use]
    pub fn reply_subject(&self) -> String {
        reply_subject(&self.host)
    }

    /// The owners' answers this host waits for.
    #[must_use]
    pub fn outcomes(&self) -> &Arc<Outcomes> {
        &self.outcomes
    }

    fn next_id(&self) -> String {
        format!(
            "{}-{}",
            self.host,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Logs one call in partition `p`, checked at control sequence `control`: it
    /// waits for the partition's turn with the calls that came before it, and goes in
    /// one record with all those waiting then. Its record's sequence once
    /// acknowledged, with the owner's outcome to come when `answered` (else the
    /// record asks for none, unless another of its calls does).
    ///
    /// # Errors
    ///
    /// [`NotLogged::Failed`] when no acknowledgment came within the timeout (counted
    /// from this call; the call may or may not be in the log, unless it never left
    /// its queue, which the text says) or the log refused it.
    pub async fn submit(
        self: &Arc<Self>,
        p: u32,
        call: &'static str,
        control: u64,
        body: Bytes,
        answered: bool,
    ) -> Result<Placed, NotLogged> {
        self.enqueue(p as usize, call, control, body, answered)
            .await
    }

    /// Logs one call in the control stream, with the others waiting for its turn
    /// (no owner answers it): its sequence once acknowledged. A call that must find
    /// the control stream where its check saw it goes by
    /// [`publish_control`](Self::publish_control).
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit).
    pub async fn submit_control(
        self: &Arc<Self>,
        call: &'static str,
        body: Bytes,
    ) -> Result<u64, NotLogged> {
        let lane = self.partitions as usize;
        self.enqueue(lane, call, 0, body, false)
            .await
            .map(|p| p.seq)
    }

    async fn enqueue(
        self: &Arc<Self>,
        p: usize,
        call: &'static str,
        control: u64,
        body: Bytes,
        answered: bool,
    ) -> Result<Placed, NotLogged> {
        let lane = &self.lanes[p];
        let deadline = tokio::time::Instant::now() + self.timeout;
        let key = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, mut placed) = oneshot::channel();
        lane.waiting().push_back(Waiting {
            key,
            call,
            control,
            body,
            deadline,
            answered,
            done,
        });
        loop {
            let turn = tokio::select! {
                biased;
                r = &mut placed => return r.unwrap_or_else(|_| Err(lost())),
                t = tokio::time::timeout_at(deadline, Arc::clone(&lane.turn).lock_owned()) => t,
            };
            let Ok(turn) = turn else {
                // Withdrawn while it waits; once taken, its record's result comes.
                let withdrawn = {
                    let mut waiting = lane.waiting();
                    let at = waiting.iter().position(|w| w.key == key);
                    at.and_then(|i| waiting.remove(i)).is_some()
                };
                if withdrawn {
                    return Err(NotLogged::Failed(format!(
                        "the log did not take the write within {} s (earlier writes \
                         to its partition still wait); it was not logged",
                        self.timeout.as_secs_f64()
                    )));
                }
                return placed.await.unwrap_or_else(|_| Err(lost()));
            };
            // The turn before this one may have taken this call.
            match placed.try_recv() {
                Ok(r) => return r,
                Err(oneshot::error::TryRecvError::Closed) => return Err(lost()),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let log = Arc::clone(self);
            let published = tokio::spawn(async move {
                let _turn = turn;
                log.publish_waiting(p).await;
            });
            // Its calls are told their result by the task, should it fail.
            let _ = published.await;
        }
    }

    /// Publishes what waits in lane `p` (a partition's, or the control stream's) as
    /// one record (as much as one record takes) and tells each call its result. The
    /// caller holds the lane's turn.
    async fn publish_waiting(&self, p: usize) {
        let lane = &self.lanes[p];
        let partition = u32::try_from(p).ok().filter(|&p| p < self.partitions);
        let now = tokio::time::Instant::now();
        let mut group = Vec::new();
        {
            let mut waiting = lane.waiting();
            let mut len = 64;
            while let Some(w) = waiting.front() {
                let more = w.call.len() + w.body.len() + 32;
                if !group.is_empty() && !self.fits(len + more) {
                    break;
                }
                len += more;
                group.extend(waiting.pop_front());
            }
        }
        // A call whose write stopped waiting is not logged late.
        let (late, group): (Vec<Waiting>, Vec<Waiting>) =
            group.into_iter().partition(|w| w.deadline <= now);
        for w in late {
            let _ = w.done.send(Err(NotLogged::Failed(
                "the log did not take the write in time; it was not logged".to_owned(),
            )));
        }
        let Some(first) = group.iter().map(|w| w.deadline).min() else {
            return;
        };
        let id = self.next_id();
        let reply = self.reply_subject();
        let calls: Vec<(&str, u64, &[u8])> = group
            .iter()
            .map(|w| (w.call, w.control, &w.body[..]))
            .collect();
        // A partition's owner answers when a write of the record waits for it; the
        // control stream's calls here need no answer.
        let answered = partition.is_some() && group.iter().any(|w| w.answered);
        let to = partition.map_or_else(|| CONTROL_SUBJECT.to_owned(), subject);
        let reply = answered.then_some((reply.as_str(), id.as_str()));
        let record = encode(reply, &calls);
        let outcomes: Vec<oneshot::Receiver<Outcome>> = if answered {
            self.outcomes.expect_calls(&id, group.len())
        } else {
            // Receivers that never get an outcome (their senders dropped).
            (0..group.len()).map(|_| oneshot::channel().1).collect()
        };
        let left = first.saturating_duration_since(now);
        let logged = self.publish(&to, &id, record, None, left).await;
        if logged.is_err() {
            self.outcomes.forget(&id);
        }
        for (w, outcome) in group.into_iter().zip(outcomes) {
            let r = logged.clone().map(|seq| Placed { seq, outcome });
            let _ = w.done.send(r);
        }
    }

    /// How long a publish, or a read the log's callers retry, may take.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The JetStream context.
    #[must_use]
    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    /// Creates the streams that do not exist yet (file storage, `replicas` copies,
    /// kept until deleted) and the owners' bucket.
    ///
    /// # Errors
    ///
    /// JetStream's, for a stream or bucket it cannot create.
    pub async fn ensure(&self, replicas: usize) -> Result<(), async_nats::Error> {
        let config = |name: String, subject: String| stream::Config {
            name,
            subjects: vec![subject],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        // Made at once: each is a request to JetStream's meta leader and an
        // election of the stream's own leader, which overlap.
        let mut streams: Vec<(String, stream::Config)> = (0..self.partitions)
            .map(|p| (stream_name(p), config(stream_name(p), subject(p))))
            .collect();
        streams.push((
            CONTROL_STREAM.to_owned(),
            config(CONTROL_STREAM.to_owned(), CONTROL_SUBJECT.to_owned()),
        ));
        // The bucket's stream as `create_key_value` makes it: that call first asks
        // for the account's limits, whose answer nats-server 2.9 words differently.
        streams.push((
            format!("bucket {OWNERS_BUCKET}"),
            stream::Config {
                name: format!("KV_{OWNERS_BUCKET}"),
                subjects: vec![format!("$KV.{OWNERS_BUCKET}.>")],
                max_messages_per_subject: 1,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            },
        ));
        let made =
            futures_util::future::join_all(streams.into_iter().map(|(name, c)| async move {
                self.js
                    .get_or_create_stream(c)
                    .await
                    .map_err(|e| format!("stream {name}: {e}"))
            }))
            .await;
        for m in made {
            m?;
        }
        // The partition count, set by the first host: every host must agree on it, or
        // writes placed by one would land in partitions the others never read.
        let key = format!("$KV.{OWNERS_BUCKET}.{PARTITIONS_KEY}");
        let first = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(self.partitions.to_string()))
            .expected_last_subject_sequence(0);
        match self.js.send_publish(key.clone(), first).await {
            Ok(ack) => match ack.await {
                Ok(_) => {}
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {}
                Err(e) => return Err(format!("the partition count: {e}").into()),
            },
            Err(e) => return Err(format!("the partition count: {e}").into()),
        }
        let stream = self.js.get_stream(format!("KV_{OWNERS_BUCKET}")).await?;
        let set = stream
            .get_last_raw_message_by_subject(&key)
            .await
            .map_err(|e| format!("the partition count: {e}"))?;
        let set = String::from_utf8_lossy(&set.payload).into_owned();
        if set != self.partitions.to_string() {
            return Err(Box::new(Mismatch(format!(
                "this cluster has {set} partitions, and this host was started with \
                 --partitions {}: every host must use the same count",
                self.partitions
            ))));
        }
        Ok(())
    }

    /// Whether a record of `len` bytes fits in a NATS message.
    #[must_use]
    pub fn fits(&self, len: usize) -> bool {
        len + HEADROOM <= self.max_payload
    }

    /// The largest record a NATS message takes.
    #[must_use]
    pub fn max_record(&self) -> usize {
        self.max_payload.saturating_sub(HEADROOM)
    }

    /// Logs call `call` in the control stream, checked at control sequence
    /// `control`, only if the stream still ends there when `expected` (a definition is
    /// checked against every control record before it). With `answers`, each
    /// partition's owner answers once it applied it. Its sequence once acknowledged,
    /// and the answers to come.
    ///
    /// # Errors
    ///
    /// [`NotLogged::Failed`] when no acknowledgment came within the timeout (the
    /// record may or may not be in the log) or the log refused it;
    /// [`NotLogged::Moved`] when the control stream is past `control`.
    pub async fn publish_control(
        &self,
        call: &str,
        control: u64,
        body: &[u8],
        expected: bool,
        answers: bool,
    ) -> Result<(u64, Option<oneshot::Receiver<Vec<Outcome>>>), NotLogged> {
        let started = tokio::time::Instant::now();
        let Ok(_in_order) = tokio::time::timeout(self.timeout, self.control_turn.lock()).await
        else {
            return Err(NotLogged::Failed(format!(
                "the log did not take the write within {} s (earlier control writes \
                 still wait); it was not logged",
                self.timeout.as_secs_f64()
            )));
        };
        let id = self.next_id();
        let reply = self.reply_subject();
        let record = encode(answers.then_some((&reply, &id)), &[(call, control, body)]);
        let waiting = answers.then(|| self.outcomes.expect_control(&id, self.partitions));
        let left = self.timeout.saturating_sub(started.elapsed());
        let expected = expected.then_some(control);
        match self
            .publish(CONTROL_SUBJECT, &id, record, expected, left)
            .await
        {
            Ok(seq) => Ok((seq, waiting)),
            Err(e) => {
                self.outcomes.forget(&id);
                Err(e)
            }
        }
    }

    /// Publishes `record` with message id `id` to `subject` (only if its stream's
    /// last sequence is still `expected`), retried within `within`; its sequence once
    /// acknowledged.
    async fn publish(
        &self,
        subject: &str,
        id: &str,
        record: Bytes,
        expected: Option<u64>,
        within: Duration,
    ) -> Result<u64, NotLogged> {
        let mut retry = Retry::within(within);
        loop {
            let attempt = async {
                let mut publish = jetstream::message::PublishMessage::build()
                    .payload(record.clone())
                    .message_id(id);
                if let Some(last) = expected {
                    publish = publish.expected_last_sequence(last);
                }
                let ack = self.js.send_publish(subject.to_owned(), publish).await?;
                ack.await
            };
            let failed = match tokio::time::timeout(retry.left(), attempt).await {
                Ok(Ok(ack)) => return Ok(ack.sequence),
                Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return Err(NotLogged::Moved);
                }
                Ok(Err(e)) => {
                    let retry = matches!(
                        e.kind(),
                        PublishErrorKind::StreamNotFound
                            | PublishErrorKind::TimedOut
                            | PublishErrorKind::BrokenPipe
                            | PublishErrorKind::MaxAckPending
                            | PublishErrorKind::Other
                    );
                    if !retry {
                        return Err(NotLogged::Failed(format!("the log refused the write: {e}")));
                    }
                    e.to_string()
                }
                Err(_) => "no acknowledgment".to_owned(),
            };
            tracing::debug!(%failed, subject, "publish retried");
            if !retry.pause().await {
                return Err(NotLogged::Failed(format!(
                    "the log did not acknowledge the write within {} s (last: {failed}); \
                     it may or may not be applied",
                    self.timeout.as_secs_f64()
                )));
            }
        }
    }

    /// Claims partition `p` for the host at `url` in the owners' map; the claim's
    /// revision. Retried while the bucket's stream is not ready (right after it is
    /// made) for up to the publish timeout.
    ///
    /// # Errors
    ///
    /// JetStream's.
    pub async fn claim(&self, p: u32, url: &str) -> Result<u64, async_nats::Error> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let attempt = async {
                let ack = self
                    .js
                    .publish(owner_subject(p), Bytes::from(url.to_owned()))
                    .await?
                    .await?;
                Ok::<u64, async_nats::Error>(ack.sequence)
            };
            match attempt.await {
                Ok(revision) => return Ok(revision),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(partition = p, error = %e, "claim not taken yet; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The owners' map: each partition's last claim, then every claim as it comes
    /// (a message's subject names the partition, its payload the owner's URL, its
    /// stream sequence is the claim's revision).
    ///
    /// # Errors
    ///
    /// JetStream's.
    pub async fn owners(&self) -> Result<jetstream::consumer::pull::Ordered, async_nats::Error> {
        let stream = self.js.get_stream(format!("KV_{OWNERS_BUCKET}")).await?;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                filter_subject: format!("$KV.{OWNERS_BUCKET}.>"),
                ..Default::default()
            })
            .await?;
        Ok(consumer.messages().await?)
    }

    /// The owners' map's last revision.
    ///
    /// # Errors
    ///
    /// JetStream's.
    pub async fn owners_last(&self) -> Result<u64, async_nats::Error> {
        let mut stream = self.js.get_stream(format!("KV_{OWNERS_BUCKET}")).await?;
        Ok(stream.info().await?.state.last_sequence)
    }

    /// The control stream.
    ///
    /// # Errors
    ///
    /// JetStream's.
    pub async fn control(&self) -> Result<stream::Stream, async_nats::Error> {
        Ok(self.js.get_stream(CONTROL_STREAM).await?)
    }
}

/// The pauses between attempts of an idempotent call, until a deadline: 50 ms,
/// doubling up to 500 ms.
#[derive(Debug)]
pub struct Retry {
    deadline: Instant,
    wait: Duration,
}

impl Retry {
    /// Attempts for `timeout` from now.
    #[must_use]
    pub fn within(timeout: Duration) -> Self {
        Retry {
            deadline: Instant::now() + timeout,
            wait: Duration::from_millis(50),
        }
    }

    /// The time left for an attempt.
    #[must_use]
    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Waits before the next attempt; `false` (without waiting) when the wait would
    /// pass the deadline.
    pub async fn pause(&mut self) -> bool {
        if Instant::now() + self.wait >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(Duration::from_millis(500));
        true
    }
}

/// Hosts that disagree on the partition count.
#[derive(Debug)]
pub struct Mismatch(pub String);

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Mismatch {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_parses_back() {
        let body = b"{\"a\":\"x\\ny\"}\nmore";
        let calls: [(&str, u64, &[u8]); 3] = [
            ("relations/attach", 17, body),
            (MARKER, 19, b""),
            ("relations/detach", 18, b"{}"),
        ];
        let r = encode(Some(("relcount.answer.h", "h-3")), &calls);
        assert_eq!(
            decode(&r),
            Some(Record {
                control: 19,
                reply: Some(("relcount.answer.h", "h-3")),
                calls: calls.to_vec(),
            })
        );
        let none = encode(None, &[]);
        assert_eq!(
            decode(&none).map(|r| (r.reply, r.calls.len())),
            Some((None, 0))
        );
        // Truncated, or with bytes after its calls: not a record.
        assert_eq!(decode(&r[..r.len() - 1]), None);
        assert_eq!(decode(&[&r[..], b"x"].concat()), None);
        assert_eq!(decode(b"no newline"), None);
        // A call stamped past its record's control sequence is not either.
        assert_eq!(
            decode(b"relcount 2\n3\n-\n1\nrelations/attach\n4\n2\n{}"),
            None
        );
    }

    /// From the review: no crafted record makes `decode` panic (nor
    /// `outcome::decode`); each valid one reads back.
    #[test]
    fn decode_never_panics_on_crafted_records() {
        let calls: [(&str, u64, &[u8]); 3] = [
            (
                "relations/attach",
                18_446_744_073_709_551_615,
                b"{\"a\":1}\n",
            ),
            (MARKER, 3, b""),
            ("relations/detach", 0, b"{}"),
        ];
        let good = encode(Some(("s", "i")), &calls);
        let mut seeds: Vec<Vec<u8>> = vec![
            good.to_vec(),
            b"relcount 2\n1\n-\n18446744073709551615\n".to_vec(),
            b"relcount 2\n1\n-\n1\nc\n1\n18446744073709551615\n".to_vec(),
            b"relcount 2\n1\nnospace\n0\n".to_vec(),
            b"relcount 2\n-1\n-\n0\n".to_vec(),
            b"control\n3\n".to_vec(),
            b"\n\n\n\n\n".to_vec(),
            vec![0xff, b'\n', b'1', b'\n'],
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut m = seeds[(next() % seeds.len() as u64) as usize].clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % (m.len() + 1);
                match next() % 4 {
                    0 if at < m.len() => m[at] = (next() & 0xff) as u8,
                    1 if at < m.len() => {
                        m.remove(at);
                    }
                    2 => m.insert(at, [b'\n', b' ', b'9', b'-'][(next() % 4) as usize]),
                    _ => m.truncate(at),
                }
            }
            if let Some(r) = decode(&m)
                && m.starts_with(FORMAT_2.as_bytes())
            {
                let again = encode(r.reply, &r.calls);
                let back = decode(&again).expect("a record read back");
                assert_eq!((back.reply, &back.calls), (r.reply, &r.calls));
            }
            let _ = super::super::outcome::decode(&Bytes::from(m.clone()));
            if seeds.len() < 64 {
                seeds.push(m);
            }
        }
    }

    #[test]
    fn a_format_1_record_is_still_read() {
        let r = decode(b"relations/attach\n17\n{\"x\":1}\nmore").expect("a record");
        assert_eq!(r.control, 17);
        assert_eq!(r.reply, None);
        assert_eq!(
            r.calls,
            vec![("relations/attach", 17, &b"{\"x\":1}\nmore"[..])]
        );
        let marker = decode(b"control\n4\n").expect("a marker");
        assert_eq!((marker.control, marker.calls.len()), (4, 0));
        assert_eq!(decode(b"call\nnot a number\n{}"), None);
    }
}

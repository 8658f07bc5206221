//! The replicated log: one JetStream stream per partition and a control stream, the
//! records they carry, and publishing with retries that keep each partition's order.
//!
//! A record is `<call path>\n<control sequence>\n<body>`: the API call the owner
//! applies, its body as the client sent it less its token, and the control stream's
//! sequence the entry host had applied when it checked the write. The owner applies
//! the control stream up to that sequence before the record, so a write checked
//! against a definition (or after a deletion) the entry host knew of is applied after
//! it. A partition's stream also carries markers, `control\n<sequence>\n`: "apply the
//! control stream up to here", which place a definition or a profile's deletion among
//! the partition's own writes before its answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use bytes::Bytes;
use tokio::sync::Mutex;

/// The control stream's name.
pub const CONTROL_STREAM: &str = "RELCOUNT_CONTROL";
/// The control stream's subject.
const CONTROL_SUBJECT: &str = "relcount.control";
/// The call a marker names.
pub const MARKER: &str = "control";
/// The bucket mapping each partition to its owner's URL.
pub const OWNERS_BUCKET: &str = "relcount-owners";

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

/// The partition a claim's subject names.
#[must_use]
pub fn claimed_partition(subject: &str) -> Option<u32> {
    subject
        .strip_prefix(&format!("$KV.{OWNERS_BUCKET}.p"))?
        .parse()
        .ok()
}

/// A record: the call, the control sequence it was checked at, its body.
#[must_use]
pub fn record(call: &str, control: u64, body: &str) -> Bytes {
    Bytes::from(format!("{call}\n{control}\n{body}"))
}

/// A record's call, control sequence and body.
#[must_use]
pub fn parse(payload: &[u8]) -> Option<(&str, u64, &[u8])> {
    let mut parts = payload.splitn(3, |&b| b == b'\n');
    let call = std::str::from_utf8(parts.next()?).ok()?;
    let control = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    Some((call, control, parts.next()?))
}

/// The owners' bucket key holding the partition count the cluster was made with.
const PARTITIONS_KEY: &str = "config-partitions";

/// Bytes a record may have beside its payload's limit: its headers (the message id).
const HEADROOM: usize = 256;

/// Why a publish was not acknowledged.
#[derive(Debug)]
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

/// Publishes to the log: one publish in flight per partition from this host (so a
/// retried publish cannot land after a later one), each retried with its message id
/// until acknowledged or `timeout` has passed.
#[derive(Debug)]
pub struct Log {
    js: jetstream::Context,
    partitions: u32,
    /// One lock per partition, the control stream's last.
    order: Vec<Mutex<()>>,
    /// This host's prefix for message ids.
    host: String,
    next_id: AtomicU64,
    timeout: Duration,
    /// The largest record the NATS servers take.
    max_payload: usize,
}

impl Log {
    /// A log over `js` with `partitions` partition streams.
    #[must_use]
    pub fn new(
        js: jetstream::Context,
        partitions: u32,
        host: String,
        timeout: Duration,
        max_payload: usize,
    ) -> Self {
        Log {
            max_payload,
            js,
            partitions,
            order: (0..=partitions).map(|_| Mutex::new(())).collect(),
            host,
            next_id: AtomicU64::new(0),
            timeout,
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
        for p in 0..self.partitions {
            self.js
                .get_or_create_stream(config(stream_name(p), subject(p)))
                .await
                .map_err(|e| format!("stream {}: {e}", stream_name(p)))?;
        }
        self.js
            .get_or_create_stream(config(
                CONTROL_STREAM.to_owned(),
                CONTROL_SUBJECT.to_owned(),
            ))
            .await
            .map_err(|e| format!("stream {CONTROL_STREAM}: {e}"))?;
        // The bucket's stream as `create_key_value` makes it: that call first asks
        // for the account's limits, whose answer nats-server 2.9 words differently.
        self.js
            .get_or_create_stream(stream::Config {
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
            })
            .await
            .map_err(|e| format!("bucket {OWNERS_BUCKET}: {e}"))?;
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

    /// Publishes a record to partition `p` (`None`: the control stream, then only if
    /// its last sequence is still `expected`); its sequence there once acknowledged.
    ///
    /// # Errors
    ///
    /// [`NotLogged::Failed`] when no acknowledgment came within the timeout (the
    /// record may or may not be in the log) or the log refused it;
    /// [`NotLogged::Moved`] when the control stream is past `expected`.
    pub async fn publish(
        &self,
        p: Option<u32>,
        payload: Bytes,
        expected: Option<u64>,
    ) -> Result<u64, NotLogged> {
        let (lane, subject) = match p {
            Some(p) => (p as usize, subject(p)),
            None => (self.partitions as usize, CONTROL_SUBJECT.to_owned()),
        };
        // The timeout counts from the call, the wait for the partition's turn included.
        let mut retry = Retry::within(self.timeout);
        let Ok(_in_order) = tokio::time::timeout(self.timeout, self.order[lane].lock()).await
        else {
            return Err(NotLogged::Failed(format!(
                "the log did not take the write within {} s (earlier writes to its \
                 partition still wait); it was not logged",
                self.timeout.as_secs_f64()
            )));
        };
        let id = format!(
            "{}-{}",
            self.host,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        loop {
            let attempt = async {
                let mut publish = jetstream::message::PublishMessage::build()
                    .payload(payload.clone())
                    .message_id(id.as_str());
                if let Some(last) = expected {
                    publish = publish.expected_last_sequence(last);
                }
                let ack = self.js.send_publish(subject.clone(), publish).await?;
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
            tracing::debug!(%failed, ?p, "publish retried");
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
                    tracing::info!(partition = p, error = %e, "claim not taken yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
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
        let body = "{\"a\":\"x\\ny\"}\nmore";
        let r = record("relations/attach", 17, body);
        assert_eq!(parse(&r), Some(("relations/attach", 17, body.as_bytes())));
        assert_eq!(parse(&record(MARKER, 4, "")), Some((MARKER, 4, &b""[..])));
        assert_eq!(parse(b"no newline"), None);
        assert_eq!(parse(b"call\nnot a number\n{}"), None);
    }
}

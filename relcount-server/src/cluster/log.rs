//! The replicated log: one JetStream stream per partition and a control stream, the
//! records they carry, and publishing with retries that keep each partition's order.
//!
//! A record is `<call path>\n<body>`: the API call the owner applies, its body as the
//! client sent it less its token. A partition's stream also carries markers,
//! `control\n<sequence>`: "apply the control stream up to this sequence here", which
//! place a definition or a profile's deletion among the partition's own writes.

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

/// A record: the call and its body.
#[must_use]
pub fn record(call: &str, body: &str) -> Bytes {
    Bytes::from(format!("{call}\n{body}"))
}

/// A record's call and body.
#[must_use]
pub fn parse(payload: &[u8]) -> Option<(&str, &[u8])> {
    let at = payload.iter().position(|&b| b == b'\n')?;
    let call = std::str::from_utf8(&payload[..at]).ok()?;
    Some((call, &payload[at + 1..]))
}

/// Why a publish was not acknowledged.
#[derive(Debug)]
pub struct NotLogged(pub String);

impl std::fmt::Display for NotLogged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
}

impl Log {
    /// A log over `js` with `partitions` partition streams.
    #[must_use]
    pub fn new(js: jetstream::Context, partitions: u32, host: String, timeout: Duration) -> Self {
        Log {
            js,
            partitions,
            order: (0..=partitions).map(|_| Mutex::new(())).collect(),
            host,
            next_id: AtomicU64::new(0),
            timeout,
        }
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
        Ok(())
    }

    /// Publishes a record to partition `p` (`None`: the control stream); its sequence
    /// there once acknowledged.
    ///
    /// # Errors
    ///
    /// [`NotLogged`] when no acknowledgment came within the timeout (the record may
    /// or may not be in the log) or the log refused it.
    pub async fn publish(&self, p: Option<u32>, payload: Bytes) -> Result<u64, NotLogged> {
        let (lane, subject) = match p {
            Some(p) => (p as usize, subject(p)),
            None => (self.partitions as usize, CONTROL_SUBJECT.to_owned()),
        };
        let _in_order = self.order[lane].lock().await;
        let id = format!(
            "{}-{}",
            self.host,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let deadline = Instant::now() + self.timeout;
        let mut wait = Duration::from_millis(50);
        loop {
            let attempt = async {
                let publish = jetstream::message::PublishMessage::build()
                    .payload(payload.clone())
                    .message_id(id.as_str());
                let ack = self.js.send_publish(subject.clone(), publish).await?;
                ack.await
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let failed = match tokio::time::timeout(left, attempt).await {
                Ok(Ok(ack)) => return Ok(ack.sequence),
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
                        return Err(NotLogged(format!("the log refused the write: {e}")));
                    }
                    e.to_string()
                }
                Err(_) => "no acknowledgment".to_owned(),
            };
            if Instant::now() + wait >= deadline {
                return Err(NotLogged(format!(
                    "the log did not acknowledge the write within {} s (last: {failed}); \
                     it may or may not be applied",
                    self.timeout.as_secs_f64()
                )));
            }
            tracing::debug!(%failed, ?p, "publish retried");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
    }

    /// Claims partition `p` for the host at `url` in the owners' map; the claim's
    /// revision.
    ///
    /// # Errors
    ///
    /// JetStream's.
    pub async fn claim(&self, p: u32, url: &str) -> Result<u64, async_nats::Error> {
        let ack = self
            .js
            .publish(owner_subject(p), Bytes::from(url.to_owned()))
            .await?
            .await?;
        Ok(ack.sequence)
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

    /// The control stream.
    ///
    /// # Errors
    ///
    /// JetStream's.
    pub async fn control(&self) -> Result<stream::Stream, async_nats::Error> {
        Ok(self.js.get_stream(CONTROL_STREAM).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_parses_back() {
        let r = record("relations/attach", "{\"a\":\"x\\ny\"}");
        assert_eq!(
            parse(&r),
            Some(("relations/attach", "{\"a\":\"x\\ny\"}".as_bytes()))
        );
        assert_eq!(parse(b"no newline"), None);
    }
}

//! What the owners decided: the answers an entry host waits for once its records
//! are logged.
//!
//! A record names a reply subject of its entry host and an id. The owner that applies
//! it publishes, on that subject, one answer per call in the record (format:
//! [`encode`]); for a control record, one answer from each partition. The entry host
//! keeps a waiter per id it published and hands each answer to the writes that wait
//! on it ([`Outcomes::received`]). Answers come over core NATS: none is stored, a
//! host that stopped waiting never gets one, and two owners of a partition for a
//! moment (a partition being moved) answer twice with the same outcome, the first
//! one taken.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use relcount::api::Call;
use tokio::sync::oneshot;

/// One call's outcome as its owner applied it: the API's code and, for a refusal,
/// the whole answer (an accepted write's answer is the API's constant one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The API's answer code.
    pub code: u32,
    /// The answer's body; empty for an accepted write.
    pub body: Bytes,
}

impl Outcome {
    /// An accepted write.
    #[must_use]
    pub fn ok() -> Outcome {
        Outcome {
            code: 0,
            body: Bytes::new(),
        }
    }
}

/// Whether a write of `call` waits for its owner's outcome. An attach, an edit or an
/// import that passed the entry host's checks is never refused by the engine that
/// applies it (its profiles by id are created, its values replace others, exact sums
/// do not overflow): it is answered once logged. A detach (the relation must exist)
/// and a strengthen (its sum must stay in range) wait for their owner.
#[must_use]
pub fn awaited(call: Call) -> bool {
    matches!(call, Call::Detach | Call::Strengthen)
}

/// An answer on a reply subject: the record's id, the partition that applied it, and
/// one outcome per call: `<id>\n<partition>\n` then `<code> <length>\n<body>` each.
#[must_use]
pub fn encode(id: &str, partition: u32, outcomes: &[Outcome]) -> Bytes {
    let len: usize = outcomes.iter().map(|o| o.body.len() + 24).sum();
    let mut out = BytesMut::with_capacity(id.len() + 16 + len);
    out.put_slice(format!("{id}\n{partition}\n").as_bytes());
    for o in outcomes {
        out.put_slice(format!("{} {}\n", o.code, o.body.len()).as_bytes());
        out.put_slice(&o.body);
    }
    out.freeze()
}

/// The line `rest` begins with, taken off it.
fn line(rest: &mut Bytes) -> Option<Bytes> {
    let end = rest.iter().position(|&b| b == b'\n')?;
    let l = rest.split_to(end);
    *rest = rest.split_off(1);
    Some(l)
}

/// An answer read back: its id, partition and outcomes.
#[must_use]
pub fn decode(payload: &Bytes) -> Option<(String, u32, Vec<Outcome>)> {
    let mut rest = payload.clone();
    let id = String::from_utf8(line(&mut rest)?.to_vec()).ok()?;
    let partition = std::str::from_utf8(&line(&mut rest)?).ok()?.parse().ok()?;
    let mut outcomes = Vec::new();
    while !rest.is_empty() {
        let head = line(&mut rest)?;
        let (code, len) = std::str::from_utf8(&head).ok()?.split_once(' ')?;
        let (code, len): (u32, usize) = (code.parse().ok()?, len.parse().ok()?);
        if len > rest.len() {
            return None;
        }
        outcomes.push(Outcome {
            code,
            body: rest.split_to(len),
        });
    }
    Some((id, partition, outcomes))
}

/// What waits on an id.
enum Waiter {
    /// A partition record's calls, in order.
    Calls(Vec<oneshot::Sender<Outcome>>),
    /// A control record: one outcome from each partition, gathered.
    Control {
        seen: Vec<Option<Outcome>>,
        done: Option<oneshot::Sender<Vec<Outcome>>>,
    },
}

/// The answers this host waits for, by record id.
pub struct Outcomes {
    /// Each waiter, since when.
    waiting: Mutex<HashMap<String, (Instant, Waiter)>>,
    /// How long a waiter is kept without its answer (an owner that never answers,
    /// a marker nobody waits on).
    keep: Duration,
    /// The last sweep of waiters older than `keep`.
    swept: Mutex<Instant>,
}

impl std::fmt::Debug for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcomes").finish_non_exhaustive()
    }
}

impl Outcomes {
    /// Waiters kept for at most `keep` without their answer.
    #[must_use]
    pub fn new(keep: Duration) -> Outcomes {
        Outcomes {
            waiting: Mutex::new(HashMap::new()),
            keep,
            swept: Mutex::new(Instant::now()),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Waiter)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts waiting on `id`; waiters past their time are dropped, at most once a
    /// second.
    fn insert(&self, id: &str, waiter: Waiter) {
        let now = Instant::now();
        let mut waiting = self.waiting();
        waiting.insert(id.to_owned(), (now, waiter));
        let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(*swept) >= Duration::from_secs(1) {
            *swept = now;
            waiting.retain(|_, (since, _)| now.duration_since(*since) < self.keep);
        }
    }

    /// How many ids are waited on.
    #[must_use]
    pub fn awaiting(&self) -> usize {
        self.waiting().len()
    }

    /// Waits for the `calls` outcomes of partition record `id`, one receiver each.
    pub fn expect_calls(&self, id: &str, calls: usize) -> Vec<oneshot::Receiver<Outcome>> {
        let (senders, receivers) = (0..calls).map(|_| oneshot::channel()).unzip();
        self.insert(id, Waiter::Calls(senders));
        receivers
    }

    /// Waits for control record `id`'s outcome in each of `partitions` partitions,
    /// in partition order.
    pub fn expect_control(&self, id: &str, partitions: u32) -> oneshot::Receiver<Vec<Outcome>> {
        let (done, rx) = oneshot::channel();
        self.insert(
            id,
            Waiter::Control {
                seen: vec![None; partitions as usize],
                done: Some(done),
            },
        );
        rx
    }

    /// Stops waiting for `id` (its record was not logged, or its writes stopped
    /// waiting).
    pub fn forget(&self, id: &str) {
        self.waiting().remove(id);
    }

    /// An answer came: handed to what waits on its id, if anything does.
    pub fn received(&self, payload: &Bytes) {
        let Some((id, partition, outcomes)) = decode(payload) else {
            tracing::warn!("an owner's answer that does not parse: ignored");
            return;
        };
        let mut waiting = self.waiting();
        let Some((_, waiter)) = waiting.get_mut(&id) else {
            return; // answered already, or nobody waits any more
        };
        match waiter {
            Waiter::Calls(senders) => {
                if senders.len() != outcomes.len() {
                    tracing::warn!(id, "an owner's answer for another number of calls: ignored");
                    return;
                }
                let Some((_, Waiter::Calls(senders))) = waiting.remove(&id) else {
                    return;
                };
                for (tx, o) in senders.into_iter().zip(outcomes) {
                    let _ = tx.send(o);
                }
            }
            Waiter::Control { seen, done } => {
                let Some(slot) = seen.get_mut(partition as usize) else {
                    return;
                };
                if slot.is_none() {
                    *slot = outcomes.into_iter().next();
                }
                if seen.iter().all(Option::is_some) {
                    let all = seen.iter_mut().filter_map(Option::take).collect();
                    if let Some(tx) = done.take() {
                        let _ = tx.send(all);
                    }
                    waiting.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: u32, body: &str) -> Outcome {
        Outcome {
            code,
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn an_answer_reads_back() {
        let outcomes = vec![
            Outcome::ok(),
            refused(404, "{\"error\":404,\"error_text\":\"no\\nsuch\"}"),
            Outcome::ok(),
        ];
        let e = encode("host-7", 3, &outcomes);
        assert_eq!(decode(&e), Some(("host-7".to_owned(), 3, outcomes)));
        assert_eq!(decode(&Bytes::from_static(b"id\n1\n0 5\nabc")), None);
        assert_eq!(decode(&Bytes::from_static(b"id\nx\n")), None);
    }

    #[tokio::test]
    async fn calls_get_their_own_outcome_once() {
        let o = Outcomes::new(Duration::from_secs(60));
        let rx = o.expect_calls("a", 2);
        let answer = encode("a", 0, &[Outcome::ok(), refused(4, "x")]);
        o.received(&answer);
        // A second owner's answer finds nothing waiting.
        o.received(&answer);
        let got: Vec<Outcome> = futures_util::future::join_all(rx)
            .await
            .into_iter()
            .map(|r| r.expect("answered"))
            .collect();
        assert_eq!(got, vec![Outcome::ok(), refused(4, "x")]);
        // An answer with the wrong number of calls is not taken.
        let rx = o.expect_calls("b", 2);
        o.received(&encode("b", 0, &[Outcome::ok()]));
        o.forget("b");
        for r in rx {
            assert!(r.await.is_err());
        }
    }

    #[tokio::test]
    async fn a_control_record_waits_for_every_partition() {
        let o = Outcomes::new(Duration::from_secs(60));
        let mut rx = o.expect_control("c", 3);
        o.received(&encode("c", 2, &[refused(404, "n")]));
        o.received(&encode("c", 0, &[Outcome::ok()]));
        o.received(&encode("c", 0, &[refused(404, "again")]));
        assert!(rx.try_recv().is_err(), "partition 1 has not answered");
        o.received(&encode("c", 1, &[refused(404, "n")]));
        let all = rx.await.expect("all answered");
        assert_eq!(
            all,
            vec![Outcome::ok(), refused(404, "n"), refused(404, "n")]
        );
        assert_eq!(o.awaiting(), 0);
    }

    #[test]
    fn waiters_never_answered_are_dropped_in_time() {
        let o = Outcomes::new(Duration::from_millis(10));
        for i in 0..100 {
            drop(o.expect_calls(&format!("m{i}"), 1));
        }
        // The first sweep waits a second from the start.
        std::thread::sleep(Duration::from_millis(1010));
        drop(o.expect_calls("last", 1));
        assert_eq!(o.awaiting(), 1, "only the newest waiter is kept");
    }
}

//! Cluster mode against real processes: 3 `nats-server` nodes (a JetStream cluster on
//! loopback ports) and 3 `relcount-server` hosts, each owning some partitions. A
//! seeded random workload of every write kind goes through random hosts; once every
//! partition has applied what was acknowledged, every counter and list, read through
//! random hosts, equals a single in-process engine fed the acknowledged writes.
//! Then faults: the stream leader killed while publishing, a host killed before and
//! after its snapshot, a partition moved, two of three NATS nodes down.
//!
//! Every process started is stopped by its pid (dropped, or at the test's end).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nats::{Nats, http, nats_cluster, urls};
use common::{PATIENCE, Server, temp_dir};
use relcount::Engine;
use relcount::api::{Api, TokenScope};
use serde_json::{Value as Json, json};

const TOKEN: &str = "cluster-test-token";
const PARTITIONS: u32 = 6;
/// The recipients and initiators of the workload: a small keyspace, so writes meet.
const RECIPIENTS: usize = 10;
const INITIATORS: usize = 6;

/// The cluster tests run one at a time: each starts six processes.
static SERIAL: Mutex<()> = Mutex::new(());

/// `POST` of an API call with the token and `extra` headers.
fn post(
    addr: &str,
    path: &str,
    body: &str,
    extra: &[(&str, String)],
) -> Option<(u16, std::collections::HashMap<String, String>, String)> {
    let mut headers = vec![("Authorization", format!("Bearer {TOKEN}"))];
    headers.extend(extra.iter().cloned());
    http(addr, "POST", path, &headers, body)
}

/// A cluster host: its server and settings, restartable.
struct Host {
    server: Option<Server>,
    owns: Vec<u32>,
    data: PathBuf,
}

/// The cluster under test and the single engine it must equal.
struct Fixture {
    nats: Vec<Nats>,
    hosts: Vec<Host>,
    oracle: Api,
    /// The last acknowledged sequence of each partition.
    written: BTreeMap<u32, u64>,
    rng: u64,
    dir: PathBuf,
    publish_timeout: &'static str,
}

fn partition_of(id: &str) -> u32 {
    u32::try_from(relcount::xxh64(id.as_bytes()) % u64::from(PARTITIONS)).expect("small")
}

/// The email a recipient is imported with.
fn email_of(id: &str) -> String {
    format!("{id}@mail.test")
}

fn recipient(i: usize) -> String {
    format!("a{i}")
}

fn initiator(i: usize) -> String {
    format!("b{i}")
}

impl Fixture {
    fn new(name: &str, seed: u64, publish_timeout: &'static str) -> Fixture {
        let dir = temp_dir(name);
        let nats = nats_cluster(&dir);
        let owns = [vec![0, 3], vec![1, 4], vec![2, 5]];
        let oracle = Api::new(Arc::new(Engine::new()));
        oracle.add_token(TOKEN, TokenScope::full());
        let mut f = Fixture {
            nats,
            hosts: owns
                .into_iter()
                .enumerate()
                .map(|(i, owns)| Host {
                    server: None,
                    owns,
                    data: dir.join(format!("host{i}")),
                })
                .collect(),
            oracle,
            written: BTreeMap::new(),
            rng: seed,
            dir,
            publish_timeout,
        };
        for h in 0..3 {
            f.start_host(h);
        }
        f
    }

    fn start_host(&mut self, h: usize) {
        let urls = urls(&self.nats);
        let host = &mut self.hosts[h];
        let owns = host
            .owns
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let partitions = PARTITIONS.to_string();
        let data = host.data.to_str().expect("utf-8").to_owned();
        host.server = Some(Server::start(
            &[
                "--token",
                TOKEN,
                "--cluster",
                &urls,
                "--partitions",
                &partitions,
                "--owns",
                &owns,
                "--data",
                &data,
                "--snapshot-every",
                "25",
                "--publish-timeout",
                self.publish_timeout,
                "--read-wait",
                "30",
                // A write whose owner is down is answered 504 after this wait.
                "--apply-wait",
                "2",
            ],
            // The cluster's debug lines (consumers made again, retries) for a failure's
            // message.
            &[("RUST_LOG", "info,relcount_server::cluster=debug")],
        ));
    }

    fn kill_host(&mut self, h: usize) {
        if let Some(s) = self.hosts[h].server.take() {
            // Dropping the server SIGKILLs it by its pid and reaps it.
            drop(s);
        }
    }

    fn next(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn live_host(&mut self) -> usize {
        let live: Vec<usize> = (0..self.hosts.len())
            .filter(|&h| self.hosts[h].server.is_some())
            .collect();
        live[self.below(live.len())]
    }

    /// The last lines each host printed, for a failure's message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (h, host) in self.hosts.iter().enumerate() {
            if let Some(server) = &host.server {
                let printed = server.printed();
                let lines: Vec<&str> = printed.lines().collect();
                let tail = &lines[lines.len().saturating_sub(80)..];
                out.push_str(&format!(
                    "--- host {h} (owns {:?}):\n{}\n",
                    host.owns,
                    tail.join("\n")
                ));
            }
        }
        out
    }

    fn addr(&self, h: usize) -> String {
        self.hosts[h].server.as_ref().expect("running").addr.clone()
    }

    /// Sends a write through host `h`; `Some(envelope)` once answered with one
    /// engine's answer (applied to the single engine too, which must answer the
    /// same), or once logged and answered 504 (applied by its owner later: applied to
    /// the single engine, whose answer the cluster could not give); `None` when
    /// refused with 503 (not logged for certain). Panics on anything else.
    fn write_via(&mut self, h: usize, call: &str, body: &Json) -> Option<Json> {
        let addr = self.addr(h);
        let (status, headers, text) =
            post(&addr, &format!("/api/v1.1/{call}"), &body.to_string(), &[]).expect("an answer");
        if status == 503 {
            // Shown with the test's output should the caller require the write.
            eprintln!("{call} via host {h} answered 503: {text}");
            return None;
        }
        assert!(
            status == 200 || status == 504,
            "{call} {body}: {status} {text}"
        );
        let envelope: Json = serde_json::from_str(&text).expect("json");
        if let Some(written) = headers.get("relcount-written") {
            for part in written.split(',').filter(|p| !p.is_empty()) {
                let (p, seq) = part.split_once('=').expect("p=seq");
                let (p, seq): (u32, u64) = (p.parse().expect("p"), seq.parse().expect("seq"));
                let w = self.written.entry(p).or_default();
                *w = (*w).max(seq);
            }
        } else {
            assert_ne!(
                envelope["error"], 0,
                "{call}: an accepted write names its sequences"
            );
        }
        let single = self.oracle.handle(
            call,
            Some(&format!("Bearer {TOKEN}")),
            body.to_string().as_bytes(),
        );
        if status == 504 {
            assert!(
                headers.contains_key("relcount-written"),
                "{call}: a 504 is logged: {text}"
            );
            eprintln!("{call} via host {h} answered 504: {text}");
            return Some(envelope);
        }
        // Every answer is one engine's: its successes, and its refusals, whether the
        // entry host or the owner gave them.
        let want: Json = serde_json::from_str(&single.body).expect("json");
        assert_eq!(
            envelope, want,
            "{call} {body} via host {h}: the cluster answered {text}, one engine {}",
            single.body
        );
        Some(envelope)
    }

    fn write(&mut self, call: &str, body: &Json) -> Option<Json> {
        let h = self.live_host();
        self.write_via(h, call, body)
    }

    fn define(&mut self) {
        for (rel, db_b) in [(1, 2), (2, 3)] {
            let body = json!({"rel_id": rel, "db_a": 1, "db_b": db_b, "props": {
                "Donate": {"type": "int", "top": 3, "sum": true},
                "Score": {"type": "float", "sum": true, "top": 2},
                "Fan": {"type": "bool"}}});
            assert_eq!(
                self.write("relations/define", &body).expect("acked")["error"],
                0
            );
        }
    }

    /// One random write of any kind.
    fn random_write(&mut self) -> Option<Json> {
        let rel = 1 + self.below(2);
        let a = recipient(self.below(RECIPIENTS));
        let b = initiator(self.below(INITIATORS));
        let kind = self.below(100);
        let mut weights = serde_json::Map::new();
        if self.below(2) == 0 {
            weights.insert("Donate".into(), json!(self.below(40) as i64 - 10));
        }
        if self.below(3) == 0 {
            weights.insert("Score".into(), json!((self.below(1000) as f64) / 8.0));
        }
        if self.below(4) == 0 {
            weights.insert("Fan".into(), json!(self.below(2) == 0));
        }
        // A quarter of the writes name their recipient by email: found in every
        // host's directory once imported (kind 93..=94), else refused as one engine
        // refuses it.
        let side_a = if self.below(4) == 0 {
            json!({"email": email_of(&a)})
        } else {
            json!({"profile_id": a})
        };
        let pair = json!({"rel_id": rel, "profile_a": side_a, "profile_b": {"profile_id": b}});
        let with = |mut p: Json| {
            p["weights"] = Json::Object(weights.clone());
            p
        };
        match kind {
            0..=34 => self.write("relations/attach", &with(pair)),
            35..=54 => self.write("relations/strengthen", &with(pair)),
            55..=69 => self.write("relations/edit", &with(pair)),
            70..=86 => self.write("relations/detach", &pair),
            87..=88 => self.write("profiles/delete", &json!({"db_id": 1, "profile_id": a})),
            89..=90 => self.write(
                "profiles/delete",
                &json!({"db_id": 1, "email": email_of(&a)}),
            ),
            91..=92 => {
                let db = if rel == 1 { 2 } else { 3 };
                self.write("profiles/delete", &json!({"db_id": db, "profile_id": b}))
            }
            93..=94 => {
                let rows: Vec<Json> = (0..3)
                    .map(|_| {
                        let a = recipient(self.below(RECIPIENTS));
                        json!({"profile_id": a, "email": email_of(&a)})
                    })
                    .collect();
                self.write("profiles/import", &json!({"db_id": 1, "profiles": rows}))
            }
            _ => {
                let rows: Vec<Json> = (0..4)
                    .map(|_| {
                        let a = recipient(self.below(RECIPIENTS));
                        let b = initiator(self.below(INITIATORS));
                        json!({"profile_a": {"profile_id": a}, "profile_b": {"profile_id": b},
                               "weights": {"Donate": self.below(9)}})
                    })
                    .collect();
                self.write(
                    "relations/import",
                    &json!({"rel_id": rel, "relations": rows}),
                )
            }
        }
    }

    /// `n` random writes; every one acknowledged.
    fn workload(&mut self, n: usize) {
        for _ in 0..n {
            if self.random_write().is_none() {
                panic!("a write was not acknowledged\n{}", self.logs());
            }
        }
    }

    /// Every counter and list, read through random hosts at the acknowledged
    /// sequences, equals the single engine's.
    fn compare(&mut self) {
        let mut compared = 0;
        for rel in [1, 2] {
            for i in 0..RECIPIENTS {
                let a = recipient(i);
                let min = self.written.get(&partition_of(&a)).copied().unwrap_or(0);
                for (call, body) in [
                    (
                        "relations/get_counter",
                        json!({"rel_id": rel, "profile_id": a}),
                    ),
                    (
                        "relations/get_counter",
                        json!({"rel_id": rel, "email": email_of(&a)}),
                    ),
                    (
                        "relations/get",
                        json!({"rel_id": rel, "profile_id": a, "limit": 1000}),
                    ),
                ] {
                    let h = self.live_host();
                    let addr = self.addr(h);
                    // A host learns a partition's new owner (a host restarted on another
                    // port, a moved partition) from the owners' map, a moment later: a
                    // read forwarded meanwhile is refused and sent again, as a client
                    // would. A host that never learns it fails the test.
                    let started = Instant::now();
                    let (status, text) = loop {
                        let (status, _, text) = post(
                            &addr,
                            &format!("/api/v1.1/{call}"),
                            &body.to_string(),
                            &[("relcount-min-seq", min.to_string())],
                        )
                        .expect("an answer");
                        let moving = status == 503
                            && (text.contains("did not answer")
                                || text.contains("not served here"));
                        if !moving || started.elapsed() > PATIENCE {
                            break (status, text);
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    };
                    if status != 200 {
                        panic!(
                            "{call} {body} via host {h}: {status} {text}\n{}",
                            self.logs()
                        );
                    }
                    let single = self.oracle.handle(
                        call,
                        Some(&format!("Bearer {TOKEN}")),
                        body.to_string().as_bytes(),
                    );
                    let got: Json = serde_json::from_str(&text).expect("json");
                    let want: Json = serde_json::from_str(&single.body).expect("json");
                    assert_eq!(got, want, "{call} {body} via host {h}");
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 2 * 3 * RECIPIENTS);
        // The workload touched every part of the keyspace.
        assert!(self.oracle.engine().relation_count() > 0);
    }

    /// The host's `GET /cluster` partitions.
    fn owned_by(&self, h: usize) -> Vec<u32> {
        let (_, _, text) = http(&self.addr(h), "GET", "/cluster", &[], "").expect("answer");
        let v: Json = serde_json::from_str(&text).expect("json");
        v["partitions"]
            .as_array()
            .expect("array")
            .iter()
            .map(|p| u32::try_from(p["partition"].as_u64().expect("n")).expect("small"))
            .collect()
    }

    /// The NATS node leading partition `p`'s stream, from the monitoring endpoint.
    fn leader_of(&self, p: u32) -> usize {
        self.leader_of_stream(&format!("RELCOUNT_P{p}"))
    }

    /// The NATS node leading stream `stream`.
    fn leader_of_stream(&self, stream: &str) -> usize {
        let started = Instant::now();
        loop {
            for n in self.nats.iter().filter(|n| n.child.is_some()) {
                let addr = format!("127.0.0.1:{}", n.monitor);
                let Some((200, _, text)) =
                    http(&addr, "GET", "/jsz?accounts=true&streams=true", &[], "")
                else {
                    continue;
                };
                let v: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
                for acc in v["account_details"].as_array().into_iter().flatten() {
                    for s in acc["stream_detail"].as_array().into_iter().flatten() {
                        if s["name"] == stream
                            && let Some(leader) = s["cluster"]["leader"].as_str()
                            && let Some(i) = self.nats.iter().position(|n| n.name == leader)
                        {
                            return i;
                        }
                    }
                }
            }
            assert!(started.elapsed() < PATIENCE, "no leader for {stream}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for h in 0..self.hosts.len() {
            self.kill_host(h);
        }
        for n in &mut self.nats {
            n.kill();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn three_hosts_equal_one_engine() {
    let _one = serial();
    let mut f = Fixture::new("equal", 0x5eed_0001, "30");
    f.define();
    f.workload(400);
    f.compare();
    // Refusals a single engine gives come back before the log, and change nothing.
    let unknown = json!({"rel_id": 1, "profile_a": {"profile_id": "a1"}, "profile_b": {"profile_id": "b1"}, "weights": {"Nope": 1}});
    let r = f.write("relations/attach", &unknown).expect("answered");
    assert_ne!(r["error"], 0, "{r}");
    let nan = json!({"rel_id": 1, "profile_a": {"profile_id": "a1"}, "profile_b": {"profile_id": "b1"}, "weights": {"Donate": 1.5}});
    let r = f.write("relations/strengthen", &nan).expect("answered");
    assert_ne!(r["error"], 0, "{r}");
    let wrong_schema = json!({"rel_id": 1, "db_a": 1, "db_b": 2, "props": {}});
    let r = f
        .write("relations/define", &wrong_schema)
        .expect("answered");
    assert_ne!(r["error"], 0, "{r}");
    // Every matching mode, through every host, answers as one engine: by email
    // (imported through another host), by phone, by a custom field, and a lookup
    // that finds nothing.
    let profile = json!({"db_id": 1, "profile_id": "matched", "email": "m@mail.test",
        "phone": "+1 555 0100", "fields": {"city": "Oslo"}});
    let r = f
        .write_via(0, "profiles/import", &profile)
        .expect("answered");
    assert_eq!(r["error"], 0, "{r}");
    for (h, side) in [
        (1, json!({"email": "M@Mail.test"})),
        (2, json!({"matching": "phone", "phone": "+15550100"})),
        (
            0,
            json!({"matching": "custom", "field_name": "city", "field_value": "Oslo"}),
        ),
        (
            1,
            json!({"matching": "email_profile", "email": "m@mail.test"}),
        ),
    ] {
        let attach = json!({"rel_id": 1, "profile_a": side, "profile_b": {"profile_id": "b1"},
            "weights": {"Donate": 5}});
        let r = f
            .write_via(h, "relations/attach", &attach)
            .expect("answered");
        assert_eq!(r["error"], 0, "{r}");
    }
    let nobody = json!({"rel_id": 1, "profile_a": {"email": "nobody@mail.test"},
        "profile_b": {"profile_id": "b1"}, "weights": {"Donate": 1}});
    let r = f
        .write_via(2, "relations/attach", &nobody)
        .expect("answered");
    assert_ne!(r["error"], 0, "{r}");
    for h in 0..3 {
        for read in [
            json!({"rel_id": 1, "email": "m@mail.test"}),
            json!({"rel_id": 1, "matching": "phone", "phone": "+1 555 0100"}),
            json!({"rel_id": 1, "email": "nobody@mail.test"}),
        ] {
            let (status, _, text) = post(
                &f.addr(h),
                "/api/v1.1/relations/get_counter",
                &read.to_string(),
                &[],
            )
            .expect("an answer");
            assert_eq!(status, 200, "{text}");
            let want = f.oracle.handle(
                "relations/get_counter",
                Some(&format!("Bearer {TOKEN}")),
                read.to_string().as_bytes(),
            );
            let got: Json = serde_json::from_str(&text).expect("json");
            let want: Json = serde_json::from_str(&want.body).expect("json");
            assert_eq!(got, want, "{read} via host {h}");
        }
    }
    let r = f
        .write_via(
            1,
            "profiles/delete",
            &json!({"db_id": 1, "phone": "+1 555 0100"}),
        )
        .expect("answered");
    assert_eq!(r["error"], 0, "{r}");
    // A profile only ever an initiator, in another partition than its recipient,
    // reads as one engine reads it through every host: zeroed counters where its
    // database is a recipient's too, and a detach naming it finds no relation.
    let same_db = json!({"rel_id": 5, "db_a": 1, "db_b": 1, "props": {"Donate": {"type": "int", "sum": true, "top": 2}}});
    assert_eq!(
        f.write_via(2, "relations/define", &same_db)
            .expect("answered")["error"],
        0
    );
    let recipient_id = "lonely-recipient";
    let initiator_id = (0..)
        .map(|k| format!("only-initiator{k}"))
        .find(|id| partition_of(id) != partition_of(recipient_id))
        .expect("an id");
    let attach = json!({"rel_id": 5, "profile_a": {"profile_id": recipient_id},
        "profile_b": {"profile_id": initiator_id}, "weights": {"Donate": 7}});
    assert_eq!(
        f.write_via(0, "relations/attach", &attach)
            .expect("answered")["error"],
        0
    );
    for h in 0..3 {
        for (call, read) in [
            (
                "relations/get_counter",
                json!({"rel_id": 5, "profile_id": initiator_id}),
            ),
            (
                "relations/get",
                json!({"rel_id": 5, "profile_id": initiator_id}),
            ),
            (
                "relations/get_counter",
                json!({"rel_id": 5, "profile_id": "never-seen"}),
            ),
        ] {
            let (_, _, text) = post(
                &f.addr(h),
                &format!("/api/v1.1/{call}"),
                &read.to_string(),
                &[],
            )
            .expect("an answer");
            let want = f.oracle.handle(
                call,
                Some(&format!("Bearer {TOKEN}")),
                read.to_string().as_bytes(),
            );
            let got: Json = serde_json::from_str(&text).expect("json");
            let want: Json = serde_json::from_str(&want.body).expect("json");
            assert_eq!(got, want, "{call} {read} via host {h}");
        }
        // Detaches the engine refuses: no such relation (both profiles known), and an
        // unknown profile.
        for (a, b) in [
            (initiator_id.as_str(), recipient_id),
            ("never-seen", initiator_id.as_str()),
        ] {
            let detach = json!({"rel_id": 5, "profile_a": {"profile_id": a}, "profile_b": {"profile_id": b}});
            let r = f
                .write_via(h, "relations/detach", &detach)
                .expect("answered");
            assert_ne!(r["error"], 0, "{r}");
        }
    }
    // A wrong token is refused before anything is logged.
    let (_, _, text) = http(
        &f.addr(0),
        "POST",
        "/api/v1.1/relations/attach",
        &[("Authorization", "Bearer nope".to_owned())],
        &unknown.to_string(),
    )
    .expect("an answer");
    assert!(text.contains("\"error\":401"), "{text}");
    f.compare();
}

#[test]
fn the_stream_leader_killed_while_publishing() {
    let _one = serial();
    let mut f = Fixture::new("leader", 0x5eed_0002, "30");
    f.define();
    f.workload(100);
    let leader = f.leader_of(partition_of(&recipient(0)));
    let pid = f.nats[leader].child.as_ref().expect("running").id();
    // Two nodes of three keep a quorum: every write is acknowledged, after retries
    // while the streams the killed node led elect new leaders. The leader is killed
    // while the writes are being published.
    let before = f.written.values().sum::<u64>();
    std::thread::scope(|s| {
        let writer = s.spawn(|| f.workload(150));
        std::thread::sleep(Duration::from_millis(300));
        let killed = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        writer.join().expect("the writes");
    });
    assert!(f.written.values().sum::<u64>() > before);
    f.nats[leader].kill();
    f.compare();
    // The node comes back and catches up; nothing changes.
    f.nats[leader].start();
    f.workload(50);
    f.compare();
}

#[test]
fn concurrent_writes_grouped_apply_once_under_a_leader_kill() {
    let _one = serial();
    let mut f = Fixture::new("grouped", 0x5eed_0007, "30");
    f.define();
    let addrs: Vec<String> = (0..3).map(|h| f.addr(h)).collect();
    let leader = f.leader_of(partition_of(&recipient(0)));
    let pid = f.nats[leader].child.as_ref().expect("running").id();
    // Strengthens add, so any order of them ends the same: a write applied twice (a
    // retried publish stored again) or lost shows in the sums. Twelve clients at once,
    // so a partition's writes go several to a record; the leader of a stream is
    // killed while they are sent.
    let sent = AtomicUsize::new(0);
    let answered: Vec<(Json, u16, Option<String>, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..12)
            .map(|t| {
                let (addrs, sent) = (&addrs, &sent);
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..40 {
                        let body = json!({"rel_id": 1,
                            "profile_a": {"profile_id": recipient((t * 7 + i) % RECIPIENTS)},
                            "profile_b": {"profile_id": initiator(t)},
                            "weights": {"Donate": i + 1}});
                        let (status, headers, text) = post(
                            &addrs[(t + i) % 3],
                            "/api/v1.1/relations/strengthen",
                            &body.to_string(),
                            &[],
                        )
                        .expect("an answer");
                        sent.fetch_add(1, Ordering::SeqCst);
                        out.push((body, status, headers.get("relcount-written").cloned(), text));
                    }
                    out
                })
            })
            .collect();
        while sent.load(Ordering::SeqCst) < 60 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a client"))
            .collect()
    });
    assert_eq!(answered.len(), 12 * 40);
    for (body, status, written, text) in answered {
        // Each is acknowledged: applied (200) or logged and applied later (504).
        assert!(status == 200 || status == 504, "{body}: {status} {text}");
        if status == 200 {
            assert!(text.contains("\"error\":0"), "{body}: {text}");
        }
        for part in written.expect("logged").split(',') {
            let (p, seq) = part.split_once('=').expect("p=seq");
            let (p, seq): (u32, u64) = (p.parse().expect("p"), seq.parse().expect("seq"));
            let w = f.written.entry(p).or_default();
            *w = (*w).max(seq);
        }
        let single = f.oracle.handle(
            "relations/strengthen",
            Some(&format!("Bearer {TOKEN}")),
            body.to_string().as_bytes(),
        );
        assert_eq!(single.code, relcount::api::Code::Ok);
    }
    f.nats[leader].kill();
    f.compare();
}

#[test]
fn the_control_stream_leader_killed_mid_define_and_delete() {
    let _one = serial();
    let mut f = Fixture::new("control-leader", 0x5eed_0006, "30");
    f.define();
    f.workload(60);
    let leader = f.leader_of_stream("RELCOUNT_CONTROL");
    let pid = f.nats[leader].child.as_ref().expect("running").id();
    // Definitions and deletions go through the control stream; its leader is killed
    // once they are under way, and a dozen more are sent after. Two nodes keep a
    // quorum: each one waits out the election and is acknowledged, none is refused.
    let sent = AtomicUsize::new(0);
    let killed = AtomicBool::new(false);
    let control_writes = |f: &mut Fixture| {
        let mut after_kill = 0;
        for k in 0.. {
            let body = if k % 2 == 0 {
                json!({"rel_id": 10 + k, "db_a": 1, "db_b": 2,
                       "props": {"Donate": {"type": "int", "sum": true}}})
            } else {
                json!({"db_id": 1, "profile_id": recipient(f.below(RECIPIENTS))})
            };
            let call = if k % 2 == 0 {
                "relations/define"
            } else {
                "profiles/delete"
            };
            let was_killed = killed.load(Ordering::SeqCst);
            let answered = f.write(call, &body);
            assert!(
                answered.is_some(),
                "{call} {body} was refused while the control stream elected a leader\n{}",
                f.logs()
            );
            sent.fetch_add(1, Ordering::SeqCst);
            after_kill += usize::from(was_killed);
            if after_kill >= 12 {
                return k;
            }
        }
        unreachable!()
    };
    let last = std::thread::scope(|s| {
        let writer = s.spawn(|| control_writes(&mut f));
        while sent.load(Ordering::SeqCst) < 4 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        killed.store(true, Ordering::SeqCst);
        writer.join().expect("the control writes")
    });
    f.nats[leader].kill();
    f.workload(60);
    f.compare();
    // The types defined meanwhile are there, through every host.
    for h in 0..3 {
        let r = f
            .write_via(h, "relations/attach", &json!({"rel_id": 10 + (last & !1), "profile_a": {"profile_id": "a1"}, "profile_b": {"profile_id": "b1"}, "weights": {"Donate": 1}}))
            .expect("answered");
        assert_eq!(r["error"], 0, "{r}");
    }
}

#[test]
fn a_host_killed_before_and_after_its_snapshot() {
    let _one = serial();
    let mut f = Fixture::new("restart", 0x5eed_0003, "30");
    f.define();
    f.workload(30);
    // Before any snapshot (fewer than 25 records in each partition): the restart
    // replays the streams from their start.
    f.kill_host(0);
    f.workload(20);
    f.start_host(0);
    f.compare();
    f.workload(300);
    f.compare();
    // Its partitions have snapshots now.
    let snapshots = |dir: &Path| -> usize {
        walk(dir)
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "snap"))
            .count()
    };
    assert!(
        snapshots(&f.hosts[0].data) > 0,
        "no snapshot in {}",
        f.hosts[0].data.display()
    );
    f.kill_host(0);
    f.workload(60);
    f.start_host(0);
    let printed = f.hosts[0].server.as_ref().expect("running").printed();
    assert!(printed.contains("loaded a snapshot"), "{printed}");
    f.compare();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_partition_moved_to_another_host() {
    let _one = serial();
    let mut f = Fixture::new("move", 0x5eed_0004, "30");
    f.define();
    f.workload(150);
    // Host 2 claims partition 0 from host 0 (a restart with the new set).
    f.kill_host(2);
    f.hosts[2].owns.push(0);
    f.hosts[0].owns.retain(|&p| p != 0);
    f.start_host(2);
    let started = Instant::now();
    while f.owned_by(0).contains(&0) {
        assert!(started.elapsed() < PATIENCE, "host 0 kept partition 0");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(f.owned_by(2).contains(&0));
    f.workload(150);
    f.compare();
}

#[test]
fn two_of_three_nats_nodes_down() {
    let _one = serial();
    let mut f = Fixture::new("quorum", 0x5eed_0005, "3");
    f.define();
    let probe_type = json!({"rel_id": 9, "db_a": 1, "db_b": 2});
    assert_eq!(
        f.write("relations/define", &probe_type).expect("acked")["error"],
        0
    );
    f.workload(100);
    f.compare();
    f.nats[1].kill();
    f.nats[2].kill();
    // No quorum: a write is refused with a clear error, never acknowledged. It goes
    // to a relation type left out of the comparison (its fate is unknown).
    let body = json!({"rel_id": 9, "profile_a": {"profile_id": "lost"}, "profile_b": {"profile_id": "b0"}});
    let h = f.live_host();
    let addr = f.addr(h);
    let (status, _, text) =
        post(&addr, "/api/v1.1/relations/attach", &body.to_string(), &[]).expect("an answer");
    assert_eq!(status, 503, "{text}");
    // Either the publish found no quorum, or (when the host had to read the control
    // stream first) the control stream could not be read: a clear error either way.
    assert!(
        text.contains("did not acknowledge") || text.contains("the cluster's log"),
        "{text}"
    );
    // Reads of caught-up partitions still answer from the hosts' memory.
    f.compare();
    f.nats[1].start();
    f.nats[2].start();
    // Once a quorum is back, every partition takes writes again: probed through the
    // relation type left out of the comparison, since a probe refused while the
    // streams elect leaders may or may not be logged.
    let started = Instant::now();
    for p in 0..PARTITIONS {
        let id = (0..)
            .map(|k| format!("probe{k}"))
            .find(|id| partition_of(id) == p)
            .expect("an id");
        let probe = json!({"rel_id": 9, "profile_a": {"profile_id": id}, "profile_b": {"profile_id": "b0"}});
        while f.write("relations/attach", &probe).is_none() {
            assert!(
                started.elapsed() < PATIENCE * 2,
                "partition {p} did not recover"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // The control stream too (definitions and profile deletions go through it): a
    // probe profile of its own each try, since a refused deletion may be logged.
    for k in 0.. {
        let id = format!("control-probe{k}");
        let probe = json!({"rel_id": 9, "profile_a": {"profile_id": id}, "profile_b": {"profile_id": "b0"}});
        while f.write("relations/attach", &probe).is_none() {
            assert!(
                started.elapsed() < PATIENCE * 2,
                "partitions did not recover"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        if f.write("profiles/delete", &json!({"db_id": 1, "profile_id": id}))
            .is_some()
        {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE * 2,
            "the control stream did not recover"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    f.workload(100);
    f.compare();
    // The hosts that lived through the outage still follow the owners' map: a
    // partition moved now is released by its old owner and forwarded to the new.
    f.kill_host(0);
    f.hosts[0].owns.push(1);
    f.hosts[1].owns.retain(|&p| p != 1);
    f.start_host(0);
    let started = Instant::now();
    while f.owned_by(1).contains(&1) {
        assert!(started.elapsed() < PATIENCE, "host 1 kept partition 1");
        std::thread::sleep(Duration::from_millis(50));
    }
    f.workload(50);
    f.compare();
}

/// A `relations/import` of one row `a` from `b` repeated, padded inside a row (kept
/// as sent) to a body just under the 1 MiB body limit: past what a 1 MiB NATS
/// message takes with the record's head.
fn oversized_import(rel_id: u32, a: &str, b: &str) -> String {
    let row = json!({"profile_a": {"profile_id": a}, "profile_b": {"profile_id": b}, "weights": {"Donate": 1}}).to_string();
    let mut rows = vec![row.clone(); 1_040_000 / (row.len() + 1)];
    let target = (1 << 20) - 40;
    let len = format!("{{\"rel_id\":{rel_id},\"relations\":[{}]}}", rows.join(",")).len();
    let last = rows.pop().expect("rows");
    rows.push(format!(
        "{}{}}}",
        &last[..last.len() - 1],
        " ".repeat(target - len)
    ));
    let big = format!("{{\"rel_id\":{rel_id},\"relations\":[{}]}}", rows.join(","));
    assert_eq!(big.len(), target);
    big
}

/// A request through NATS's own protocol: `payload` published to `subject`, the
/// first answer returned (JetStream's API and its publish acknowledgments answer so).
fn nats_request(nats: &Nats, subject: &str, payload: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", nats.port)).expect("nats");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let cmd = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB _INBOX.test 1\r\n\
         PUB {subject} _INBOX.test {}\r\n{payload}\r\n",
        payload.len()
    );
    s.write_all(cmd.as_bytes()).expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(at) = text.find("MSG _INBOX.test")
            && let Some(end) = text[at..].find("\r\n")
            && let Some(json_end) = text[at + end + 2..].find("\r\n")
        {
            return text[at + end + 2..at + end + 2 + json_end].to_owned();
        }
        if text.contains("PING") {
            s.write_all(b"PONG\r\n").expect("pong");
        }
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "nats closed: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Purges a stream (`$JS.API.STREAM.PURGE.<name>`), as an operator's retention limit
/// would remove its records.
fn purge(nats: &Nats, stream: &str) {
    let answer = nats_request(nats, &format!("$JS.API.STREAM.PURGE.{stream}"), "");
    assert!(answer.contains("\"success\":true"), "{answer}");
}

#[test]
fn a_snapshot_older_than_its_stream_is_a_clear_error() {
    let _one = serial();
    let mut f = Fixture::new("purged", 0x5eed_0006, "30");
    f.define();
    f.workload(80);
    f.compare();
    // Host 0 stops; its partition 0 takes more writes, then loses them to a purge
    // before host 0 applied them.
    f.kill_host(0);
    let a = (0..RECIPIENTS)
        .map(recipient)
        .find(|a| partition_of(a) == 0)
        .expect("a recipient in 0");
    for _ in 0..3 {
        let body = json!({"rel_id": 1, "profile_a": {"profile_id": a}, "profile_b": {"profile_id": "b0"}, "weights": {"Donate": 1}});
        assert!(f.write("relations/strengthen", &body).is_some());
    }
    purge(&f.nats[0], "RELCOUNT_P0");
    f.start_host(0);
    // Partition 0 fails with the reason, and reads of it say so; partition 3 serves.
    let started = Instant::now();
    let state = loop {
        let (_, _, text) = http(&f.addr(0), "GET", "/cluster", &[], "").expect("answer");
        let v: Json = serde_json::from_str(&text).expect("json");
        let p0 = v["partitions"]
            .as_array()
            .expect("array")
            .iter()
            .find(|p| p["partition"] == 0)
            .map(|p| p["state"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        if p0.starts_with("failed") {
            break p0;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "partition 0 did not fail: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(state.contains("are gone"), "{state}");
    let (status, _, text) = post(
        &f.addr(0),
        "/api/v1.1/relations/get_counter",
        &json!({"rel_id": 1, "profile_id": a}).to_string(),
        &[],
    )
    .expect("an answer");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("are gone"), "{text}");
}

/// The review's findings, each kept as a check.
#[test]
fn review_regressions() {
    let _one = serial();
    let mut f = Fixture::new("review", 0x5eed_0007, "30");
    f.define();
    // A definition conflicting with one made through another host is refused as one
    // engine refuses it, whichever host it enters through.
    let first = json!({"rel_id": 7, "db_a": 1, "db_b": 2, "props": {"Donate": {"type": "int"}}});
    let other = json!({"rel_id": 7, "db_a": 1, "db_b": 2, "props": {"Like": {"type": "float"}}});
    assert_eq!(
        f.write_via(0, "relations/define", &first)
            .expect("answered")["error"],
        0
    );
    for h in [1, 2] {
        let r = f
            .write_via(h, "relations/define", &other)
            .expect("answered");
        assert_eq!(r["error"], 412, "{r}");
    }
    // A definition in the control stream whose markers were never published (its
    // host died after logging it): a write checked against it is applied after it.
    let dangling = json!({"rel_id": 9, "db_a": 1, "db_b": 2, "props": {"Donate": {"type": "int"}}});
    let _ = f.oracle.handle(
        "relations/define",
        Some(&format!("Bearer {TOKEN}")),
        dangling.to_string().as_bytes(),
    );
    let ack = nats_request(
        &f.nats[0],
        "relcount.control",
        &format!("relations/define\n0\n{dangling}"),
    );
    assert!(ack.contains("\"seq\""), "{ack}");
    let attach = json!({"rel_id": 9, "profile_a": {"profile_id": "a1"}, "profile_b": {"profile_id": "b1"}, "weights": {"Donate": 5}});
    assert_eq!(
        f.write_via(0, "relations/attach", &attach).expect("acked")["error"],
        0
    );
    let min = f.written[&partition_of("a1")];
    let (_, _, text) = post(
        &f.addr(1),
        "/api/v1.1/relations/get_counter",
        &json!({"rel_id": 9, "profile_id": "a1"}).to_string(),
        &[("relcount-min-seq", min.to_string())],
    )
    .expect("an answer");
    assert!(text.contains("\"total\":1"), "{text}");
    // Profile data the engine refuses is refused before the log; data it takes,
    // email and phone included, is logged.
    for data in [
        json!({"db_id": 1, "profile_id": "p1", "fields": {"Interests": ["a,b"]}}),
        json!({"db_id": 1, "profile_id": "p2", "subscriptions": [{"resource_id": 1, "channel": "sms", "phone": "abc"}]}),
        json!({"db_id": 1, "profile_id": "p3", "email": "p3@example.com", "phone": "+7 900 000-00-00"}),
        json!({"db_id": 1, "profiles": [{"profile_id": "p4", "email": "p4@example.com"}, {"profile_id": "p5"}]}),
    ] {
        // write_via asserts the cluster answers as one engine does.
        f.write("profiles/import", &data).expect("answered");
    }
    // A write too large for a NATS message: 413, nothing logged.
    let big = oversized_import(1, "a1", "b1");
    let (status, headers, text) =
        post(&f.addr(2), "/api/v1.1/relations/import", &big, &[]).expect("an answer");
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("\"error\":413") && text.contains("smaller batches"),
        "{text}"
    );
    assert!(!headers.contains_key("relcount-written"));
    f.compare();
    // A host started with another partition count is refused at start.
    let mut other_count = Command::new(env!("CARGO_BIN_EXE_relcount-server"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--cluster",
            &urls(&f.nats),
            "--partitions",
            "12",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = other_count.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > PATIENCE {
            let _ = other_count.kill();
            panic!("a host with another partition count kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    other_count
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(!status.success());
    assert!(err.contains("every host must use the same count"), "{err}");
}

// ---------------------------------------------------------------------------
// The adversarial review of cluster v2: each test asserts one engine's behaviour.
// ---------------------------------------------------------------------------

/// A read through host `h` (at `min` of its partition when given), and one engine's
/// answer to it.
fn adv_read(f: &Fixture, h: usize, call: &str, body: &Json, min: Option<u64>) -> (Json, Json) {
    let extra: Vec<(&str, String)> = min
        .map(|m| vec![("relcount-min-seq", m.to_string())])
        .unwrap_or_default();
    let (status, _, text) = post(
        &f.addr(h),
        &format!("/api/v1.1/{call}"),
        &body.to_string(),
        &extra,
    )
    .expect("an answer");
    assert_eq!(status, 200, "{call} {body} via host {h}: {status} {text}");
    let want = f.oracle.handle(
        call,
        Some(&format!("Bearer {TOKEN}")),
        body.to_string().as_bytes(),
    );
    (
        serde_json::from_str(&text).expect("json"),
        serde_json::from_str(&want.body).expect("json"),
    )
}

/// The `p=seq` pairs of a `relcount-written` header.
fn adv_written(headers: &std::collections::HashMap<String, String>) -> Vec<(u32, u64)> {
    headers
        .get("relcount-written")
        .map(|w| {
            w.split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (p, s) = p.split_once('=').expect("p=seq");
                    (p.parse().expect("p"), s.parse().expect("seq"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A relations/import refused 413 ("nothing logged") must not leave its new profiles
/// behind: one engine never saw them, so reading them is a 404.
#[test]
fn adv_a_too_large_import_leaves_no_profiles() {
    let _one = serial();
    let mut f = Fixture::new("adv-413", 0xad01, "30");
    f.define();
    let same_db = json!({"rel_id": 5, "db_a": 1, "db_b": 1, "props": {"Donate": {"type": "int", "sum": true}}});
    assert_eq!(
        f.write_via(0, "relations/define", &same_db).expect("acked")["error"],
        0
    );
    // As review_regressions builds it: a body under the 1 MiB body limit whose one
    // partition part does not fit a NATS message; here its profiles are new.
    let big = oversized_import(5, "ghost-a", "ghost-b");
    let (status, headers, text) =
        post(&f.addr(2), "/api/v1.1/relations/import", &big, &[]).expect("an answer");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"error\":413"), "{text}");
    assert!(!headers.contains_key("relcount-written"));
    for h in 0..3 {
        for id in ["ghost-a", "ghost-b"] {
            for call in ["relations/get_counter", "relations/get"] {
                let (got, want) =
                    adv_read(&f, h, call, &json!({"rel_id": 5, "profile_id": id}), None);
                assert_eq!(got, want, "{call} of {id} via host {h} after a 413 import");
            }
        }
    }
}

/// A read naming its profile by email, sent with `relcount-min-seq` just after a
/// relation type was defined (answered) through another host, answers as one engine.
#[test]
fn adv_read_by_email_just_after_a_define() {
    let _one = serial();
    let mut f = Fixture::new("adv-define-read", 0xad02, "30");
    f.define();
    let profile = json!({"db_id": 1, "profile_id": "m", "email": "m@mail.test"});
    assert_eq!(
        f.write_via(0, "profiles/import", &profile).expect("acked")["error"],
        0
    );
    for k in 0..5u32 {
        let rel = 20 + k;
        let def = json!({"rel_id": rel, "db_a": 1, "db_b": 2, "props": {"Donate": {"type": "int", "sum": true}}});
        assert_eq!(
            f.write_via(0, "relations/define", &def).expect("acked")["error"],
            0
        );
        let min = f.written[&partition_of("m")];
        for (h, read) in [
            (1, json!({"rel_id": rel, "email": "m@mail.test"})),
            (2, json!({"rel_id": rel, "profile_id": "m"})),
        ] {
            let (got, want) = adv_read(&f, h, "relations/get_counter", &read, Some(min));
            assert_eq!(
                got, want,
                "{read} via host {h} right after its define (min-seq {min})"
            );
        }
    }
}

/// Many clients at once through every host (group commit groups only then):
/// strengthens of the same relations, by id and by email, and edits, all commuting,
/// so the cluster must end equal to one engine fed the same writes in any order.
#[test]
fn adv_concurrent_writes_through_every_host_are_exact() {
    let _one = serial();
    let mut f = Fixture::new("adv-concurrent", 0xad05, "30");
    f.define();
    for i in 0..RECIPIENTS {
        let a = recipient(i);
        let p = json!({"db_id": 1, "profile_id": a, "email": email_of(&a)});
        f.write_via(i % 3, "profiles/import", &p).expect("acked");
    }
    let addrs: Vec<String> = (0..3).map(|h| f.addr(h)).collect();
    // Two recipients of one partition: its lanes on every host see every write.
    let same: Vec<String> = (0..RECIPIENTS)
        .map(recipient)
        .filter(|a| partition_of(a) == partition_of(&recipient(0)))
        .collect();
    let hot = [recipient(0), same.last().expect("a0").clone()];
    let writes: Vec<(&str, Json)> = (0..3 * 4 * 40)
        .map(|n| {
            let rel = 1 + n % 2;
            let a = hot[(n / 2) % 2].clone();
            let side_a = if n % 3 == 0 {
                json!({"email": email_of(&a)})
            } else {
                json!({"profile_id": a})
            };
            let pair = json!({"rel_id": rel, "profile_a": side_a, "profile_b": {"profile_id": initiator(n % 2)}});
            if n % 7 == 0 {
                let mut p = pair;
                p["weights"] = json!({"Fan": true});
                ("relations/edit", p)
            } else {
                let mut p = pair;
                p["weights"] = json!({"Donate": (n % 5) as i64 - 1, "Score": (n % 9) as f64 / 8.0});
                ("relations/strengthen", p)
            }
        })
        .collect();
    let answers = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..24 {
            let (addrs, writes, answers) = (&addrs, &writes, &answers);
            s.spawn(move || {
                for (n, (call, body)) in writes.iter().enumerate().filter(|(n, _)| n % 24 == t) {
                    let h = n % 3;
                    let got = post(
                        &addrs[h],
                        &format!("/api/v1.1/{call}"),
                        &body.to_string(),
                        &[],
                    )
                    .expect("an answer");
                    answers.lock().expect("lock").push((n, got));
                }
            });
        }
    });
    let answers = answers.into_inner().expect("lock");
    assert_eq!(answers.len(), writes.len());
    // Group commit grouped: some record carries several of these writes.
    let mut per_record = std::collections::HashMap::new();
    for (_, (_, headers, _)) in &answers {
        for ps in adv_written(headers) {
            *per_record.entry(ps).or_insert(0) += 1;
        }
    }
    assert!(
        per_record.values().any(|&n| n > 1),
        "no record carried two writes: the test did not exercise group commit"
    );
    eprintln!("{} writes in {} records", answers.len(), per_record.len());
    let auth = format!("Bearer {TOKEN}");
    for (n, (status, headers, text)) in &answers {
        let (call, body) = &writes[*n];
        assert_eq!(*status, 200, "{call} {body}: {text}");
        let want = f
            .oracle
            .handle(call, Some(&auth), body.to_string().as_bytes());
        let got: Json = serde_json::from_str(text).expect("json");
        let want: Json = serde_json::from_str(&want.body).expect("json");
        assert_eq!(got, want, "{call} {body}");
        for (p, seq) in adv_written(headers) {
            let w = f.written.entry(p).or_default();
            *w = (*w).max(seq);
        }
    }
    f.compare();
}

/// A detach and a strengthen whose partition's owner is down answer 504 (logged);
/// once the owner is back, their effect is there, as one engine's.
#[test]
fn adv_owner_down_answers_504_and_applies_later() {
    let _one = serial();
    let mut f = Fixture::new("adv-504", 0xad06, "30");
    f.define();
    // Every host's directory follows the definitions (within 500 ms): reads by email
    // right after a define are adv_read_by_email_just_after_a_define's subject.
    let mine: Vec<String> = (0..RECIPIENTS)
        .map(recipient)
        .filter(|a| f.hosts[0].owns.contains(&partition_of(a)))
        .collect();
    assert!(!mine.is_empty());
    for a in &mine {
        for b in [initiator(0), initiator(1)] {
            let body = json!({"rel_id": 1, "profile_a": {"profile_id": a}, "profile_b": {"profile_id": b}, "weights": {"Donate": 3}});
            f.write_via(1, "relations/attach", &body).expect("acked");
        }
    }
    f.compare();
    f.kill_host(0);
    let a = mine[0].clone();
    let auth_hdr: Vec<(&str, String)> = vec![];
    for (h, call, body) in [
        (
            1,
            "relations/detach",
            json!({"rel_id": 1, "profile_a": {"profile_id": a}, "profile_b": {"profile_id": initiator(0)}}),
        ),
        (
            2,
            "relations/strengthen",
            json!({"rel_id": 1, "profile_a": {"profile_id": a}, "profile_b": {"profile_id": initiator(1)}, "weights": {"Donate": 4}}),
        ),
        (
            1,
            "relations/detach",
            json!({"rel_id": 1, "profile_a": {"profile_id": a}, "profile_b": {"profile_id": initiator(3)}}),
        ),
    ] {
        let (status, headers, text) = post(
            &f.addr(h),
            &format!("/api/v1.1/{call}"),
            &body.to_string(),
            &auth_hdr,
        )
        .expect("an answer");
        assert_eq!(status, 504, "{call} with its owner down: {text}");
        assert!(headers.contains_key("relcount-written"), "{text}");
        for (p, seq) in adv_written(&headers) {
            let w = f.written.entry(p).or_default();
            *w = (*w).max(seq);
        }
        let _ = f.oracle.handle(
            call,
            Some(&format!("Bearer {TOKEN}")),
            body.to_string().as_bytes(),
        );
    }
    f.start_host(0);
    f.compare();
}

/// Matching edge cases through every host: an email two profiles share, an email a
/// profile no longer has, a custom field, and deletions by them.
#[test]
fn adv_matching_edge_cases() {
    let _one = serial();
    let mut f = Fixture::new("adv-matching", 0xad07, "30");
    f.define();
    // See adv_owner_down_answers_504_and_applies_later.
    let imports = [
        json!({"db_id": 1, "profiles": [
            {"profile_id": "dup1", "email": "dup@mail.test", "fields": {"city": "Rome"}},
            {"profile_id": "dup2", "email": "dup@mail.test", "fields": {"city": "Rome"}}]}),
        json!({"db_id": 1, "profile_id": "chg", "email": "old@mail.test", "phone": "+1 555 0111", "fields": {"city": "Oslo"}}),
    ];
    for (h, i) in imports.iter().enumerate() {
        assert_eq!(
            f.write_via(h, "profiles/import", i).expect("acked")["error"],
            0
        );
    }
    // Changed through another host.
    let again = json!({"db_id": 1, "profile_id": "chg", "email": "new@mail.test", "fields": {"city": "Bergen"}});
    assert_eq!(
        f.write_via(1, "profiles/import", &again).expect("acked")["error"],
        0
    );
    let sides = [
        json!({"email": "dup@mail.test"}),
        json!({"matching": "custom", "field_name": "city", "field_value": "Rome"}),
        json!({"email": "old@mail.test"}),
        json!({"email": "new@mail.test"}),
        json!({"matching": "phone", "phone": "+1 555 0111"}),
        json!({"matching": "custom", "field_name": "city", "field_value": "Oslo"}),
        json!({"matching": "custom", "field_name": "city", "field_value": "Bergen"}),
        json!({"matching": "email_profile", "email": "new@mail.test"}),
    ];
    for (k, side) in sides.iter().enumerate() {
        let h = k % 3;
        let attach = json!({"rel_id": 1, "profile_a": side, "profile_b": {"profile_id": "b1"}, "weights": {"Donate": 2}});
        f.write_via(h, "relations/attach", &attach)
            .expect("answered");
        let strengthen = json!({"rel_id": 2, "profile_a": side, "profile_b": {"profile_id": "b2"}, "weights": {"Donate": 2}});
        f.write_via((h + 1) % 3, "relations/strengthen", &strengthen)
            .expect("answered");
        let mut read = side.clone();
        read["rel_id"] = json!(1);
        for h in 0..3 {
            let (got, want) = adv_read(&f, h, "relations/get_counter", &read, None);
            assert_eq!(got, want, "{read} via host {h}");
        }
    }
    // Deletions by an old email, an ambiguous one, then the new one.
    for (h, del) in [
        (2, json!({"db_id": 1, "email": "old@mail.test"})),
        (0, json!({"db_id": 1, "email": "dup@mail.test"})),
        (1, json!({"db_id": 1, "email": "new@mail.test"})),
        (2, json!({"db_id": 1, "email": "new@mail.test"})),
    ] {
        f.write_via(h, "profiles/delete", &del).expect("answered");
    }
    for h in 0..3 {
        for id in ["dup1", "dup2", "chg"] {
            let (got, want) = adv_read(
                &f,
                h,
                "relations/get_counter",
                &json!({"rel_id": 1, "profile_id": id}),
                None,
            );
            assert_eq!(got, want, "{id} via host {h}");
        }
    }
}

/// A profile only ever an initiator (one database on both ends), deleted and named
/// again at once through other hosts, reads as one engine's through every host.
#[test]
fn adv_initiator_deleted_and_recreated_fast() {
    let _one = serial();
    let mut f = Fixture::new("adv-recreate", 0xad08, "30");
    f.define();
    let same_db = json!({"rel_id": 5, "db_a": 1, "db_b": 1, "props": {"Donate": {"type": "int", "sum": true}}});
    assert_eq!(
        f.write_via(2, "relations/define", &same_db).expect("acked")["error"],
        0
    );
    for k in 0..6 {
        let i = (0..)
            .map(|n| format!("init{k}-{n}"))
            .find(|id| {
                partition_of(id) != partition_of("rcp-x")
                    && partition_of(id) != partition_of("rcp-y")
            })
            .expect("an id");
        let (h0, h1, h2) = (k % 3, (k + 1) % 3, (k + 2) % 3);
        let at = |a: &str| json!({"rel_id": 5, "profile_a": {"profile_id": a}, "profile_b": {"profile_id": i}, "weights": {"Donate": 1}});
        f.write_via(h0, "relations/attach", &at("rcp-x"))
            .expect("acked");
        f.write_via(h1, "profiles/delete", &json!({"db_id": 1, "profile_id": i}))
            .expect("answered");
        f.write_via(h2, "relations/strengthen", &at("rcp-y"))
            .expect("acked");
        for h in 0..3 {
            for (call, body) in [
                (
                    "relations/get_counter",
                    json!({"rel_id": 5, "profile_id": i}),
                ),
                ("relations/get", json!({"rel_id": 5, "profile_id": "rcp-x"})),
            ] {
                let min = f
                    .written
                    .get(&partition_of(body["profile_id"].as_str().expect("id")))
                    .copied();
                let (got, want) = adv_read(&f, h, call, &body, min);
                assert_eq!(got, want, "round {k}: {call} {body} via host {h}");
            }
        }
        f.write_via(h2, "profiles/delete", &json!({"db_id": 1, "profile_id": i}))
            .expect("answered");
        let (got, want) = adv_read(
            &f,
            h0,
            "relations/get_counter",
            &json!({"rel_id": 5, "profile_id": i}),
            None,
        );
        assert_eq!(got, want, "round {k}: {i} after its second deletion");
    }
}

/// The NATS node host `h` is connected to (its TCP connection to a node's client
/// port, from /proc).
fn adv_nats_node_of(f: &Fixture, h: usize) -> usize {
    let pid = f.hosts[h].server.as_ref().expect("running").pid();
    let mut inodes = std::collections::HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .flatten()
    {
        if let Ok(l) = std::fs::read_link(e.path())
            && let Some(n) = l.to_str().and_then(|s| s.strip_prefix("socket:["))
        {
            inodes.insert(n.trim_end_matches(']').to_owned());
        }
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).expect("tcp");
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() > 9 && inodes.contains(cols[9]) && cols[3] == "01" {
            let port =
                u16::from_str_radix(cols[2].rsplit(':').next().expect("port"), 16).expect("hex");
            if let Some(i) = f.nats.iter().position(|n| n.port == port) {
                return i;
            }
        }
    }
    panic!("host {h} has no NATS connection");
}

/// A partition whose stream's leader is not the control stream's, that leader's NATS
/// node, and a host connected to another node: stopping the node stalls that host's
/// publishes to the partition, not its control writes.
fn adv_partition_led_apart(f: &Fixture) -> (u32, usize, usize) {
    let mut found = None;
    for _ in 0..20 {
        let control = f.leader_of_stream("RELCOUNT_CONTROL");
        if let Some(p) = (0..PARTITIONS).find(|&p| f.leader_of(p) != control) {
            found = Some(p);
            break;
        }
        let _ = nats_request(
            &f.nats[control],
            "$JS.API.STREAM.LEADER.STEPDOWN.RELCOUNT_CONTROL",
            "",
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let px = found.expect("a partition led elsewhere than the control stream");
    let node = f.leader_of(px);
    let h = (0..3)
        .find(|&h| adv_nats_node_of(f, h) != node)
        .expect("a host on another node");
    (px, node, h)
}

/// An answer: status, headers, body.
type Answered = (u16, std::collections::HashMap<String, String>, String);

/// Sends `calls` through `addr`, 300 ms apart, while NATS node `node` is stopped
/// (SIGSTOP), so each queues behind the one before in its partition's lane; then
/// lets the node go on. Their answers, in order.
fn adv_sent_while_stopped(
    f: &Fixture,
    node: usize,
    addr: &str,
    calls: [(&str, &Json); 3],
) -> Vec<Answered> {
    let pid = f.nats[node]
        .child
        .as_ref()
        .expect("running")
        .id()
        .to_string();
    let signal = |s: &str| {
        assert!(
            Command::new("kill")
                .args([s, &pid])
                .status()
                .expect("kill")
                .success()
        );
    };
    signal("-STOP");
    std::thread::scope(|s| {
        let sent: Vec<_> = calls
            .iter()
            .map(|(call, body)| {
                let sending = s.spawn(move || {
                    post(addr, &format!("/api/v1.1/{call}"), &body.to_string(), &[])
                        .expect("an answer")
                });
                std::thread::sleep(Duration::from_millis(300));
                sending
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        signal("-CONT");
        sent.into_iter()
            .map(|a| a.join().expect("an answer"))
            .collect()
    })
}

/// Group commit must keep a partition's order: a write queued in its host's lane
/// before a deletion's marker must not be applied after the deletion. The lane is
/// held by a record whose stream leader is stopped (SIGSTOP) for a moment; an
/// attach by email waits behind it, then the profile's deletion through the same
/// host queues its marker behind the attach. One engine ends without the profile
/// whichever order it takes the two in.
#[test]
fn adv_group_commit_keeps_a_write_before_a_later_deletion() {
    let _one = serial();
    let mut f = Fixture::new("adv-group-order", 0xad09, "30");
    f.define();
    let (px, node, h) = adv_partition_led_apart(&f);
    let x = (0..)
        .map(|k| format!("grouped{k}"))
        .find(|id| partition_of(id) == px)
        .expect("an id");
    let y = (0..)
        .map(|k| format!("filler{k}"))
        .find(|id| partition_of(id) == px)
        .expect("an id");
    let email = format!("{x}@mail.test");
    let import = json!({"db_id": 1, "profile_id": x, "email": email});
    assert_eq!(
        f.write_via(h, "profiles/import", &import).expect("acked")["error"],
        0
    );
    let filler = json!({"rel_id": 1, "profile_a": {"profile_id": y}, "profile_b": {"profile_id": "b1"}, "weights": {"Donate": 1}});
    f.write_via(h, "relations/attach", &filler).expect("acked");
    let attach = json!({"rel_id": 1, "profile_a": {"email": email}, "profile_b": {"profile_id": "b1"}, "weights": {"Donate": 1}});
    let delete = json!({"db_id": 1, "profile_id": x});
    let addr = f.addr(h);
    let answers = adv_sent_while_stopped(
        &f,
        node,
        &addr,
        [
            ("relations/strengthen", &filler),
            ("relations/attach", &attach),
            ("profiles/delete", &delete),
        ],
    );
    let (a, d) = (&answers[1], &answers[2]);
    assert_eq!(a.0, 200, "{}", a.2);
    assert_eq!(d.0, 200, "{}", d.2);
    let mut min = 0;
    for (p, seq) in answers
        .iter()
        .flat_map(|(_, headers, _)| adv_written(headers))
    {
        if p == px {
            min = min.max(seq);
        }
    }
    let auth = format!("Bearer {TOKEN}");
    for (call, body) in [
        ("relations/strengthen", &filler),
        ("relations/attach", &attach),
        ("profiles/delete", &delete),
    ] {
        let _ = f
            .oracle
            .handle(call, Some(&auth), body.to_string().as_bytes());
    }
    for r in 0..3 {
        let (got, want) = adv_read(
            &f,
            r,
            "relations/get_counter",
            &json!({"rel_id": 1, "profile_id": x}),
            Some(min),
        );
        assert_eq!(
            got,
            want,
            "{x} via host {r}: the attach (answered {}, written {:?}) was queued before the \
             deletion (answered {}, written {:?})",
            a.2,
            a.1.get("relcount-written"),
            d.2,
            d.1.get("relcount-written")
        );
    }
}

/// As adv_group_commit_keeps_a_write_before_a_later_deletion, by id: an attach
/// naming an initiator by id (one database on both ends) is queued before that
/// initiator's deletion, whose marker joins its record. Whichever order one engine
/// takes them in, the initiator reads as a profile (zeroed counters) if a relation
/// from it is there, and as a 404 if not.
#[test]
#[ignore = "known: a profile's creation is recorded by the entry host, which cannot know \
            where its write falls among concurrent deletions (docs/cluster.md, what differs)"]
fn adv_group_commit_initiator_by_id_before_a_later_deletion() {
    let _one = serial();
    let mut f = Fixture::new("adv-group-id", 0xad0a, "30");
    f.define();
    let same_db = json!({"rel_id": 5, "db_a": 1, "db_b": 1, "props": {"Donate": {"type": "int", "sum": true}}});
    assert_eq!(
        f.write_via(0, "relations/define", &same_db).expect("acked")["error"],
        0
    );
    let (px, node, h) = adv_partition_led_apart(&f);
    let rcp = (0..)
        .map(|k| format!("rcp{k}"))
        .find(|id| partition_of(id) == px)
        .expect("an id");
    let x = (0..)
        .map(|k| format!("init{k}"))
        .find(|id| partition_of(id) != px)
        .expect("an id");
    // The initiator exists (the directory knows it), as one engine's profile.
    let first = json!({"rel_id": 5, "profile_a": {"profile_id": x}, "profile_b": {"profile_id": "someone"}, "weights": {"Donate": 1}});
    f.write_via(h, "relations/attach", &first).expect("acked");
    let filler = json!({"rel_id": 5, "profile_a": {"profile_id": rcp}, "profile_b": {"profile_id": "filler"}, "weights": {"Donate": 1}});
    f.write_via(h, "relations/attach", &filler).expect("acked");
    let attach = json!({"rel_id": 5, "profile_a": {"profile_id": rcp}, "profile_b": {"profile_id": x}, "weights": {"Donate": 1}});
    let delete = json!({"db_id": 1, "profile_id": x});
    let addr = f.addr(h);
    let answers = adv_sent_while_stopped(
        &f,
        node,
        &addr,
        [
            ("relations/strengthen", &filler),
            ("relations/attach", &attach),
            ("profiles/delete", &delete),
        ],
    );
    let (a, d) = (&answers[1], &answers[2]);
    assert_eq!(a.0, 200, "{}", a.2);
    assert_eq!(d.0, 200, "{}", d.2);
    for (p, seq) in answers
        .iter()
        .flat_map(|(_, headers, _)| adv_written(headers))
    {
        let w = f.written.entry(p).or_default();
        *w = (*w).max(seq);
    }
    let min = |f: &Fixture, id: &str| f.written.get(&partition_of(id)).copied();
    // Is the relation from x there? The order one engine takes follows from it.
    let list = json!({"rel_id": 5, "profile_id": rcp, "limit": 100});
    let (status, _, text) = post(
        &f.addr(0),
        "/api/v1.1/relations/get",
        &list.to_string(),
        &[(
            "relcount-min-seq",
            min(&f, &rcp).expect("written").to_string(),
        )],
    )
    .expect("an answer");
    assert_eq!(status, 200, "{text}");
    let relation_kept = text.contains(&format!("\"{x}\""));
    let auth = format!("Bearer {TOKEN}");
    let _ = f.oracle.handle(
        "relations/strengthen",
        Some(&auth),
        filler.to_string().as_bytes(),
    );
    let order: [(&str, &Json); 2] = if relation_kept {
        [("profiles/delete", &delete), ("relations/attach", &attach)]
    } else {
        [("relations/attach", &attach), ("profiles/delete", &delete)]
    };
    for (call, body) in order {
        let _ = f
            .oracle
            .handle(call, Some(&auth), body.to_string().as_bytes());
    }
    for r in 0..3 {
        for (call, body) in [
            ("relations/get", list.clone()),
            (
                "relations/get_counter",
                json!({"rel_id": 5, "profile_id": x}),
            ),
        ] {
            let m = min(&f, body["profile_id"].as_str().expect("id"));
            let (got, want) = adv_read(&f, r, call, &body, m);
            assert_eq!(
                got,
                want,
                "{call} {body} via host {r} (relation from {x} kept: {relation_kept}; attach \
                 written {:?}, delete written {:?})",
                a.1.get("relcount-written"),
                d.1.get("relcount-written")
            );
        }
    }
}

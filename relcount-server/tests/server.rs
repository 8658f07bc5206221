//! The real `relcount-server` binary on a loopback port, against hostile clients
//! (docs: relcount-server/README.md) and the API's own behaviour over HTTP. Every wait is bounded; every
//! process started is stopped by its pid.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Conn, Server, temp_dir};
use relcount::{Engine, Sum, SyncPolicy};
use serde_json::{Value as J, json};

const TOKEN: &str = "server-test-token-7c1e";

fn define() -> J {
    json!({"rel_id": 3, "db_a": 1, "db_b": 2, "props": {
        "Donate": {"type": "int", "top": 10}, "Like": {"type": "int", "sum": true},
        "Subscriber": {"type": "bool"}}})
}

fn attach(a: &str, b: &str, like: i64) -> J {
    json!({"rel_id": 3, "profile_a": {"profile_id": a}, "profile_b": {"profile_id": b},
        "weights": {"Like": like}})
}

fn empty_server(extra: &[&str]) -> Server {
    let mut args = vec!["--empty"];
    args.extend_from_slice(extra);
    Server::start(&args, &[("RELCOUNT_TOKEN", TOKEN)])
}

/// The API over HTTP, as the platform serves it: the seed's example, errors in the
/// envelope with HTTP 200, `/health` and `/metrics` outside the token scheme.
#[test]
fn serves_the_api_health_and_metrics() {
    let s = empty_server(&["--max-body-bytes", "65536"]);
    assert_eq!(
        s.call("relations/define", TOKEN, &define()),
        json!({"error": 0, "error_text": ""})
    );
    let seed = json!({"rel_id": 3, "profile_a": {"profile_id": "5c910f6bc484d023b1309bee"},
        "profile_b": {"profile_id": "5c910938c484d023b1309bab"},
        "weights": {"Donate": 20, "Like": 2, "Subscriber": true}});
    assert_eq!(s.call("relations/attach", TOKEN, &seed)["error"], json!(0));
    let r = s.call(
        "relations/get_counter",
        TOKEN,
        &json!({"rel_id": 3, "matching": "profile_id", "profile_id": "5c910f6bc484d023b1309bee"}),
    );
    assert_eq!(r["data"]["profile_xxh"], json!("54ec2d76ac22a964"));
    assert_eq!(
        r["data"]["props"]["Donate"]["top"],
        json!([{"profile_id": "5c910938c484d023b1309bab", "value": 20}])
    );
    // The token in the body works too.
    let r = s.request(
        "POST",
        "/api/v1.1/relations/get_counter",
        None,
        &json!({"token": TOKEN, "rel_id": 3, "profile_id": "5c910f6bc484d023b1309bee"}).to_string(),
    );
    assert_eq!(r.0, 200);
    assert!(r.1.contains("\"total\":1"), "{}", r.1);
    assert_eq!(
        s.request(
            "POST",
            "/api/v1.1/relations/get_counter",
            None,
            r#"{"rel_id": 3}"#
        ),
        (
            200,
            json!({"error": 401, "error_text": "API token required"}).to_string()
        )
    );
    let (status, body) = s.request(
        "POST",
        "/api/v1.1/relations/attach",
        Some(TOKEN),
        &"x".repeat(200_000),
    );
    assert_eq!(
        (status, body.contains("\"error\":413")),
        (200, true),
        "{body}"
    );
    let r = s.call("no/such/call", TOKEN, &json!({}));
    assert_eq!(r["error"], json!(400));
    assert_eq!(s.request("GET", "/health", None, ""), (200, "ok\n".into()));
    assert_eq!(s.request("GET", "/nowhere", None, "").0, 404);
    assert_eq!(s.request("GET", "/api/v1.1/relations/get", None, "").0, 405);
    let sample = r#"relcount_requests_total{call="relations/attach",code="0"}"#;
    assert_eq!(s.metric(sample), Some(1.0));
    assert_eq!(s.metric("relcount_relations"), Some(1.0));
    assert_eq!(s.metric("relcount_profiles"), Some(2.0));
    let (_, metrics) = s.request("GET", "/metrics", None, "");
    assert!(
        !metrics.contains("5c910f6bc484d023b1309bee"),
        "metrics show no data"
    );
    assert!(!metrics.contains(TOKEN));
}

/// A body of many unique keys: refused having read none of it when the header's
/// token is wrong (counted by the server's own body-bytes metric), and, sent with no
/// header, refused where its object passes the key cap (the error says where the
/// reading stopped: a tenth of the way in).
#[test]
fn a_many_keys_body_is_refused_before_it_is_parsed() {
    let s = empty_server(&["--max-body-bytes", "2000000"]);
    let keys: String = (0..90_000).map(|i| format!("\"k{i:06}\":1,")).collect();
    let body = format!("{{{keys}\"rel_id\":3}}");
    assert!(body.len() > 1 << 20);
    let read_before = s.metric("relcount_request_body_bytes_total").unwrap_or(0.0);
    let mut conn = Conn::open(&s.addr);
    conn.send(
        "POST",
        "/api/v1.1/relations/attach",
        Some("not-the-token"),
        &body,
        false,
    );
    let (status, answer) = conn.answer().expect("an answer");
    assert_eq!(status, 200);
    assert!(answer.contains("\"error\":401"), "{answer}");
    let read = s.metric("relcount_request_body_bytes_total").unwrap_or(0.0) - read_before;
    assert_eq!(read, 0.0, "read {read} bytes of an unauthenticated body");

    let (status, answer) = s.request("POST", "/api/v1.1/relations/attach", None, &body);
    assert_eq!(status, 200);
    let answer: J = serde_json::from_str(&answer).expect("envelope");
    assert_eq!(answer["error"], json!(400));
    let text = answer["error_text"].as_str().expect("text");
    assert!(text.contains("more than 1000 keys"), "{text}");
    let column: usize = text
        .rsplit(' ')
        .next()
        .and_then(|c| c.parse().ok())
        .expect("column");
    assert!(column < body.len() / 10, "{text}");
}

/// A request whose headers never end is closed after the header timeout; one whose
/// body never ends is answered 408 after the body timeout and closed; a kept-alive
/// connection that goes idle is closed after the header timeout. The server serves
/// others meanwhile.
#[test]
fn half_sent_requests_and_idle_connections_are_closed() {
    let s = empty_server(&["--header-timeout", "1", "--body-timeout", "1"]);
    let mut headers = Conn::open(&s.addr);
    headers.raw(b"POST /api/v1.1/relations/get_counter HTTP/1.1\r\nHost: x\r\n");
    let mut body = Conn::open(&s.addr);
    body.raw(
        b"POST /api/v1.1/relations/get_counter HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"rel_id\"",
    );
    let mut idle = Conn::open(&s.addr);
    idle.send("GET", "/health", None, "", false);
    assert_eq!(idle.answer(), Some((200, "ok\n".into())));
    // Served meanwhile.
    assert_eq!(s.request("GET", "/health", None, "").0, 200);
    assert!(
        headers.closed_by_server(),
        "half-sent headers: connection kept"
    );
    let (status, answer) = body.answer().expect("a 408");
    assert_eq!(status, 408, "{answer}");
    assert!(answer.contains("\"error\":408"), "{answer}");
    assert!(body.closed_by_server());
    assert!(idle.closed_by_server(), "idle kept-alive connection kept");
}

/// Past the connection limit a client is answered 503 and closed, while the clients
/// holding connections are served; once one leaves, new clients are served again.
#[test]
fn connections_past_the_limit_are_refused_and_the_others_served() {
    let s = empty_server(&["--max-connections", "3", "--header-timeout", "30"]);
    let mut held: Vec<Conn> = (0..3).map(|_| Conn::open(&s.addr)).collect();
    // Each held connection is taken (answered) before the next client comes.
    for conn in &mut held {
        conn.send("GET", "/health", None, "", false);
        assert_eq!(conn.answer(), Some((200, "ok\n".into())));
    }
    let mut extra = Conn::open(&s.addr);
    let (status, answer) = extra.answer().expect("a 503");
    assert_eq!(status, 503);
    assert!(answer.contains("too many connections"), "{answer}");
    assert!(extra.closed_by_server());
    // The held ones are still served.
    held[1].send("GET", "/health", None, "", false);
    assert_eq!(held[1].answer(), Some((200, "ok\n".into())));
    drop(held.pop());
    let mut served = false;
    for _ in 0..200 {
        let mut c = Conn::open(&s.addr);
        c.send("GET", "/health", None, "", true);
        if c.answer().is_some_and(|(status, _)| status == 200) {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(served, "a slot freed by a client that left is never reused");
    assert!(
        s.metric("relcount_refused_connections_total")
            .unwrap_or(0.0)
            >= 1.0
    );
}

/// SIGTERM while writers write and one client is stuck in its body: the server exits
/// 0 within its shutdown deadline (the stuck client does not hold it), and the data
/// directory reopens with every acknowledged write (and of the unacknowledged ones,
/// only writes that were sent).
#[test]
fn sigterm_with_a_stuck_client_exits_in_time_keeping_acknowledged_writes() {
    let dir = temp_dir("sigterm");
    let dir_s = dir.to_str().expect("utf-8 path").to_owned();
    let mut s = Server::start(
        &[
            "--empty",
            "--data",
            &dir_s,
            "--fsync",
            "no",
            "--shutdown-timeout",
            "1",
            "--body-timeout",
            "600",
        ],
        &[("RELCOUNT_TOKEN", TOKEN)],
    );
    assert_eq!(
        s.call("relations/define", TOKEN, &define())["error"],
        json!(0)
    );
    let mut stuck = Conn::open(&s.addr);
    stuck.raw(
        format!(
            "POST /api/v1.1/relations/attach HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n{{\"rel_id\""
        )
        .as_bytes(),
    );
    // (a, b) -> Like, per writer: acknowledged, and merely sent.
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let sent = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (addr, acked, sent, stop) = (
                s.addr.clone(),
                Arc::clone(&acked),
                Arc::clone(&sent),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let mut i = 0i64;
                let mut conn = Conn::open(&addr);
                while !stop.load(std::sync::atomic::Ordering::Acquire) && i < 100_000 {
                    let (a, b) = (format!("a{}", i % 7), format!("b{w}-{i}"));
                    sent.lock().unwrap().insert((a.clone(), b.clone()), i);
                    conn.send(
                        "POST",
                        "/api/v1.1/relations/attach",
                        Some(TOKEN),
                        &attach(&a, &b, i).to_string(),
                        false,
                    );
                    match conn.answer() {
                        Some((200, body)) if body == r#"{"error":0,"error_text":""}"# => {
                            acked.lock().unwrap().insert((a, b), i);
                        }
                        _ => return,
                    }
                    i += 1;
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 300 {
        std::thread::sleep(Duration::from_millis(10));
    }
    s.signal("TERM");
    let (status, _) = s.wait();
    stop.store(true, std::sync::atomic::Ordering::Release);
    for w in writers {
        w.join().expect("writer");
    }
    assert!(status.success(), "exit status {status:?}: {}", s.printed());
    assert!(
        s.printed().contains("the write log is synced"),
        "{}",
        s.printed()
    );
    drop(stuck);

    let engine = Engine::builder()
        .open(&dir, SyncPolicy::No)
        .expect("reopen");
    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    let mut found = BTreeSet::new();
    for a in 0..7 {
        let a = format!("a{a}");
        let mut skip = 0;
        while let Ok(page) = engine.list(3, a.as_str(), skip, 1000) {
            for row in &page.rows {
                let b = row.profile_b.to_string();
                let like = row.props.iter().find(|(n, _)| n == "Like").map(|(_, v)| *v);
                let key = (a.clone(), b);
                let want = sent.get(&key).copied();
                assert_eq!(
                    like,
                    want.map(relcount::Value::Int),
                    "{key:?}: a row no client sent"
                );
                found.insert(key);
            }
            skip += page.rows.len();
            if page.rows.is_empty() || skip as u64 >= page.total_count {
                break;
            }
        }
        // Each recipient's sum is the sum over its rows.
        if let Ok(c) = engine.get_counter(3, a.as_str()) {
            let sum: i128 = found
                .iter()
                .filter(|(x, _)| *x == a)
                .map(|k| i128::from(sent[k]))
                .sum();
            assert_eq!(c.prop("Like").and_then(|p| p.sum()), Some(Sum::Int(sum)));
        }
    }
    for key in acked.keys() {
        assert!(found.contains(key), "acknowledged write {key:?} lost");
    }
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A token the operator chose never appears in anything the server prints (start,
/// requests, refusals, shutdown) nor in `--help`; a random one is printed once so the
/// operator can use it.
#[test]
fn an_operator_token_is_never_printed() {
    let secret = "operator-chosen-9f3a61d2";
    let dir = temp_dir("token");
    let dir_s = dir.to_str().expect("utf-8 path").to_owned();
    let mut s = Server::start(
        &["--relations", "2000", "--data", &dir_s],
        &[("RELCOUNT_TOKEN", secret)],
    );
    assert_eq!(
        s.call(
            "relations/get_counter",
            secret,
            &json!({"rel_id": 3, "profile_id": "5c910f6bc484d023b1309bee"})
        )["error"],
        json!(0)
    );
    let bad = json!({"token": format!("{secret}x"), "rel_id": 3});
    s.request("POST", "/api/v1.1/relations/attach", None, &bad.to_string());
    s.call("relations/attach", secret, &json!({"rel_id": 99}));
    s.signal("INT");
    let (status, _) = s.wait();
    assert!(status.success());
    let printed = s.printed();
    assert!(printed.contains("relcount serving"), "{printed}");
    assert!(
        !printed.contains(secret),
        "the operator's token was printed:\n{printed}"
    );
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_relcount-server"))
        .arg("--help")
        .env("RELCOUNT_TOKEN", secret)
        .output()
        .expect("--help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--max-connections"), "{help}");
    assert!(!help.contains(secret), "{help}");
    let _ = std::fs::remove_dir_all(&dir);

    let random = Server::start(&["--empty"], &[]);
    let line = random
        .printed()
        .lines()
        .find_map(|l| l.split_once("choose one): ").map(|(_, t)| t.to_owned()))
        .expect("the random token is printed");
    assert_eq!(
        random.call("relations/define", &line, &define())["error"],
        json!(0)
    );
}

/// Quotas: a write that could pass a cap answers 402 and changes nothing (counts and
/// counters as before); reads, detaches and writes within the caps go on.
#[test]
fn quotas_answer_402_and_change_nothing() {
    let s = empty_server(&[
        "--max-relations",
        "4",
        "--max-profiles",
        "6",
        "--max-relation-types",
        "1",
    ]);
    assert_eq!(
        s.call("relations/define", TOKEN, &define())["error"],
        json!(0)
    );
    let other = json!({"rel_id": 4, "db_a": 1, "db_b": 2, "props": {}});
    let r = s.call("relations/define", TOKEN, &other);
    assert_eq!(r["error"], json!(402), "{r}");
    assert!(
        r["error_text"]
            .as_str()
            .unwrap_or("")
            .starts_with("limit reached")
    );
    // Redefining the same type adds none: allowed.
    assert_eq!(
        s.call("relations/define", TOKEN, &define())["error"],
        json!(0)
    );
    for (a, b) in [("a1", "b1"), ("a1", "b2"), ("a2", "b1")] {
        assert_eq!(
            s.call("relations/attach", TOKEN, &attach(a, b, 1))["error"],
            json!(0)
        );
    }
    // 4 profiles, 3 relations. An import of two rows could pass the relation cap.
    let import = json!({"rel_id": 3, "relations": [
        {"profile_a": {"profile_id": "a2"}, "profile_b": {"profile_id": "b2"}, "weights": {"Like": 5}},
        {"profile_a": {"profile_id": "a1"}, "profile_b": {"profile_id": "b3"}, "weights": {"Like": 5}}]});
    assert_eq!(
        s.call("relations/import", TOKEN, &import)["error"],
        json!(402)
    );
    // Two new profiles and one relation would pass the profile cap? 4 + 2 = 6: fits.
    assert_eq!(
        s.call("relations/attach", TOKEN, &attach("a3", "b3", 7))["error"],
        json!(0)
    );
    // Now 6 profiles, 4 relations: any new profile or relation is refused.
    let before = s.call(
        "relations/get_counter",
        TOKEN,
        &json!({"rel_id": 3, "profile_id": "a1"}),
    );
    assert_eq!(
        s.call("relations/attach", TOKEN, &attach("a1", "b9", 1))["error"],
        json!(402)
    );
    assert_eq!(
        s.call("relations/strengthen", TOKEN, &attach("a1", "b3", 1))["error"],
        json!(402)
    );
    let profile = json!({"db_id": 1, "profile_id": "new", "email": "x@example.com"});
    assert_eq!(
        s.call("profiles/import", TOKEN, &profile)["error"],
        json!(402)
    );
    // Re-importing a known profile adds none.
    let known = json!({"db_id": 1, "profile_id": "a1", "email": "a1@example.com"});
    assert_eq!(s.call("profiles/import", TOKEN, &known)["error"], json!(0));
    let after = s.call(
        "relations/get_counter",
        TOKEN,
        &json!({"rel_id": 3, "profile_id": "a1"}),
    );
    assert_eq!(before, after);
    assert_eq!(s.metric("relcount_relations"), Some(4.0));
    assert_eq!(s.metric("relcount_profiles"), Some(6.0));
    // A detach frees room; the refused write then goes through.
    let detach =
        json!({"rel_id": 3, "profile_a": {"profile_id": "a1"}, "profile_b": {"profile_id": "b2"}});
    assert_eq!(
        s.call("relations/detach", TOKEN, &detach)["error"],
        json!(0)
    );
    assert_eq!(
        s.call("relations/attach", TOKEN, &attach("a1", "b3", 1))["error"],
        json!(0)
    );
    assert_eq!(s.metric("relcount_relations"), Some(4.0));
}

/// Postmortem: a client that pipelines requests and never reads
/// the answers holds its connection forever. Once hyper's write of an answer blocks
/// (the client's receive window is full), no timeout applies: the header timeout
/// runs only while a request head is read, the body timeout only while an API body
/// is read. So `--max-connections` such clients (no token needed: `GET /metrics`)
/// lock every other client out, though the server's README says "Headers, bodies and idle
/// connections each have a timeout; ... so idle clients cannot lock the others out".
#[test]
fn a_client_that_never_reads_its_answers_does_not_hold_its_slot() {
    let s = empty_server(&[
        "--max-connections",
        "1",
        "--header-timeout",
        "1",
        "--body-timeout",
        "1",
        "--write-timeout",
        "1",
    ]);
    let mut stalled = Conn::open(&s.addr);
    stalled
        .stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("write timeout");
    let pipelined = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(100);
    // Writes until the server stops reading (its answers fill the socket buffers).
    let started = std::time::Instant::now();
    loop {
        if std::io::Write::write_all(&mut stalled.stream, &pipelined).is_err() {
            break;
        }
        assert!(
            started.elapsed() < common::PATIENCE,
            "the server kept reading"
        );
    }
    // The slot must come back (the stalled connection closed) well within PATIENCE:
    // every timeout of this server is 1 s.
    let mut served = false;
    let started = std::time::Instant::now();
    while started.elapsed() < common::PATIENCE {
        let mut c = Conn::open(&s.addr);
        c.send("GET", "/health", None, "", true);
        if c.answer().is_some_and(|(status, _)| status == 200) {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        served,
        "a client that never reads its answers held the only connection slot for {:?}",
        common::PATIENCE
    );
    drop(stalled);
}

/// Postmortem: an unknown call is named "other" in its error text
/// (routes.rs maps every unknown path to the metrics label "other" and passes that
/// label to `Api::handle`), so the client is told `unknown call "other"` instead of
/// the name it sent.
#[test]
fn an_unknown_call_is_named_as_sent() {
    let s = empty_server(&[]);
    let r = s.call("relations/attachh", TOKEN, &json!({}));
    assert_eq!(r["error"], json!(400), "{r}");
    let text = r["error_text"].as_str().expect("text");
    assert!(text.contains("relations/attachh"), "{text}");
}

/// A client deleting and re-creating a profile in a loop beside the server's own
/// compactor (the demo data loaded, so a compaction has work): before the fix a
/// compaction's profile walk never ended beside such a loop, and memory grew until the
/// kernel killed the process. The compactor must finish compactions while the clients
/// churn (bounded by their cycles, not by time), reads go on being answered, and
/// resident memory stays within what the data needs.
#[test]
fn the_compactor_ends_beside_clients_deleting_and_recreating_profiles() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const CLIENTS: usize = 3;
    const CAP: u64 = 100_000;
    let dir = temp_dir("churn");
    let data = dir.to_str().expect("utf-8 path");
    let s = Server::start(
        &[
            "--data",
            data,
            "--relations",
            "200000",
            "--fsync",
            "no",
            "--compact-percent",
            "1",
            "--compact-min-mb",
            "0",
            "--compact-check",
            "0.5",
        ],
        &[("RELCOUNT_TOKEN", TOKEN)],
    );
    let compactions = || {
        s.metric("relcount_compactions_total")
            .expect("the compactor's count")
    };
    let rss = || {
        s.metric("relcount_resident_memory_bytes")
            .expect("resident memory")
    };
    let (start_compactions, start_rss) = (compactions(), rss());
    let stop = AtomicBool::new(false);
    let cycles = AtomicU64::new(0);
    let (reads, end_rss, end_compactions) = std::thread::scope(|scope| {
        for t in 0..CLIENTS {
            let (stop, cycles, addr) = (&stop, &cycles, &s.addr);
            scope.spawn(move || {
                let mut conn = Conn::open(addr);
                // A request is written in two parts: without this, Nagle's algorithm
                // holds the second until the first is acknowledged (40 ms).
                conn.stream.set_nodelay(true).expect("nodelay");
                let (a, b) = (format!("churn-a{t}"), format!("churn-b{t}"));
                let calls = [
                    (
                        "relations/attach",
                        json!({"rel_id": 3, "profile_a": {"profile_id": a},
                        "profile_b": {"profile_id": b}, "weights": {"Like": 1}}),
                    ),
                    (
                        "relations/detach",
                        json!({"rel_id": 3, "profile_a": {"profile_id": a},
                        "profile_b": {"profile_id": b}}),
                    ),
                    ("profiles/delete", json!({"db_id": 2, "profile_id": b})),
                ]
                .map(|(call, body)| (format!("/api/v1.1/{call}"), body.to_string()));
                while !stop.load(Ordering::Acquire) && cycles.load(Ordering::Acquire) < CAP {
                    for (path, body) in &calls {
                        conn.send("POST", path, Some(TOKEN), body, false);
                        let (status, text) = conn.answer().expect("an answer");
                        assert_eq!(
                            (status, text.contains("\"error\":0")),
                            (200, true),
                            "{text}"
                        );
                    }
                    cycles.fetch_add(1, Ordering::AcqRel);
                }
            });
        }
        // Reads go on, and two compactions end, before the clients reach their cap.
        let seed = json!({"rel_id": 3, "profile_id": "5c910f6bc484d023b1309bee"});
        let mut reads = 0u64;
        while compactions() < start_compactions + 2.0 && cycles.load(Ordering::Acquire) < CAP {
            let r = s.call("relations/get_counter", TOKEN, &seed);
            assert_eq!(r["data"]["total"], json!(1), "{r}");
            reads += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        let end = (reads, rss(), compactions());
        stop.store(true, Ordering::Release);
        end
    });
    let churned = cycles.load(Ordering::Acquire);
    assert!(
        end_compactions >= start_compactions + 2.0,
        "{} compactions ended in {churned} client cycles\n{}",
        end_compactions - start_compactions,
        s.printed()
    );
    assert!(reads > 0);
    // The data is the same before and after; what a compaction keeps is released.
    assert!(
        end_rss < start_rss * 1.5 + 32.0 * 1024.0 * 1024.0,
        "resident memory grew from {start_rss} to {end_rss} in {churned} cycles"
    );
    eprintln!("{churned} cycles, {reads} reads, rss {start_rss} -> {end_rss}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

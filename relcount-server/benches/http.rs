//! HTTP read bench: the seed's `get_counter` over HTTP from `wrk`, beside Redis's plain
//! `GET` of one key from `redis-benchmark`, in the same run, at 1, 8 and 32
//! connections, with latency percentiles; then `get_counter` again at 32 connections
//! while two clients flood the server with worst-case 1 MiB bodies.
//!
//! `cargo bench -p relcount-server --bench http` (about a minute, 1M demo relations);
//! `-- --quick` for a smoke run. It installs `wrk` and `redis-server` with apt-get
//! where missing (as root), starts its own server and Redis on loopback, and stops
//! both by pid. Every process shares this machine's cores: read the ratios.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Conn, Server, temp_dir};

const TOKEN: &str = "bench-token";
const SEED_A: &str = "5c910f6bc484d023b1309bee";

/// One measurement: requests a second and latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Rate {
    rps: f64,
    p50: f64,
    p90: f64,
    p99: f64,
}

/// Installs the Debian packages holding `commands` where a command is missing.
fn ensure(commands: &[(&str, &str)]) {
    let missing: Vec<&str> = commands
        .iter()
        .filter(|(cmd, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {cmd}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("installing {missing:?} with apt-get");
    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .status()
        .expect("apt-get");
    assert!(status.success(), "could not install {missing:?}");
}

/// A milliseconds figure as wrk prints it (`512.00us`, `1.20ms`, `2.01s`).
fn millis(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let v: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => f64::NAN,
    }
}

/// `wrk` against `get_counter` with `connections` connections for `span`.
fn wrk(addr: &str, script: &std::path::Path, connections: usize, span: Duration) -> Rate {
    let out = Command::new("wrk")
        .args([
            "-t",
            &connections.min(2).to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{}s", span.as_secs().max(1)),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(format!("http://{addr}/api/v1.1/relations/get_counter"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    assert!(
        !text.contains("Non-2xx"),
        "get_counter answered errors: {text}"
    );
    let field = |label: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map_or(f64::NAN, |v| millis(v.trim()))
    };
    Rate {
        rps: text
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN),
        p50: field("50%"),
        p90: field("90%"),
        p99: field("99%"),
    }
}

/// `redis-benchmark -t get` with `connections` connections, `threads` client threads
/// and `requests` requests.
fn redis_get(port: u16, connections: usize, threads: usize, requests: usize) -> Rate {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "get"])
        .args(["-c", &connections.to_string(), "-n", &requests.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["-d", "300", "--csv"])
        .output()
        .expect("run redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "redis-benchmark failed: {text}");
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let row = text
        .lines()
        .find(|l| l.starts_with("\"GET\""))
        .unwrap_or_else(|| panic!("no GET row in {text}"));
    let cells: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|c| c.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    Rate {
        rps: cells[0],
        p50: cells[3],
        p90: cells[4], // redis-benchmark gives p95 where wrk gives p90
        p99: cells[5],
    }
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Redis on `port`, in memory only, stopped (by pid) when dropped.
struct Redis(Child);

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < common::PATIENCE, "redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The key redis-benchmark's GET reads, with a value the size of the answer.
        let status = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", "set", "-n", "1", "-c", "1", "-d", "300", "-q"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-benchmark set");
        assert!(status.success());
        Redis(child)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The most a parse can be made to cost: 1 MiB of objects of 999 keys each.
fn hostile_body() -> String {
    let object: String = {
        let keys: Vec<String> = (0..999).map(|k| format!("\"k{k}\":1")).collect();
        format!("{{{}}}", keys.join(","))
    };
    let mut body = String::from("{\"rel_id\":3,\"relations\":[");
    while body.len() < 1_000_000 {
        body.push_str(&object);
        body.push(',');
    }
    body.pop();
    body.push_str("]}");
    body
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (relations, span, requests) = if quick {
        ("20000", Duration::from_secs(1), 20_000)
    } else {
        ("1000000", Duration::from_secs(5), 200_000)
    };
    ensure(&[
        ("wrk", "wrk"),
        ("redis-server", "redis-server"),
        ("redis-benchmark", "redis-tools"),
    ]);
    let server = Server::start(
        &["--relations", relations, "--max-body-bytes", "2000000"],
        &[("RELCOUNT_TOKEN", TOKEN)],
    );
    let body = format!(r#"{{"rel_id": 3, "matching": "profile_id", "profile_id": "{SEED_A}"}}"#);
    let mut conn = Conn::open(&server.addr);
    conn.send(
        "POST",
        "/api/v1.1/relations/get_counter",
        Some(TOKEN),
        &body,
        true,
    );
    let (status, answer) = conn.answer().expect("an answer");
    assert!(
        status == 200 && answer.contains("\"total\""),
        "get_counter: {answer}"
    );
    let dir = temp_dir("http-bench");
    let script = dir.join("get_counter.lua");
    let mut f = std::fs::File::create(&script).expect("the wrk script");
    writeln!(
        f,
        "wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {TOKEN}\""
    )
    .expect("write the wrk script");
    let port = free_port();
    let redis = Redis::start(port);

    // wrk runs min(2, connections) client threads; Redis is measured with one client
    // thread (`redis-benchmark`'s default) and with as many as wrk's.
    println!(
        "| connections | client | relcount get_counter req/s | p50 | p90 | p99 | Redis GET req/s | p50 | p95 | p99 | relcount / Redis |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for connections in [1, 8, 32] {
        let r = wrk(&server.addr, &script, connections, span);
        let wrk_threads = connections.min(2);
        let mut clients = vec![1];
        if wrk_threads > 1 {
            clients.push(wrk_threads);
        }
        for threads in clients {
            let g = redis_get(port, connections, threads, requests);
            println!(
                "| {connections} | {threads} thread(s) for Redis, {wrk_threads} for wrk | {:.0} | {:.3} ms | {:.3} ms | {:.3} ms | {:.0} | {:.3} ms | {:.3} ms | {:.3} ms | {:.2}x |",
                r.rps,
                r.p50,
                r.p90,
                r.p99,
                g.rps,
                g.p50,
                g.p90,
                g.p99,
                r.rps / g.rps
            );
        }
    }
    drop(redis);

    // Two clients flooding worst-case 1 MiB bodies beside the readers.
    let hostile = hostile_body();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let flooded = std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut conn = Conn::open(&server.addr);
                conn.stream.set_nodelay(true).expect("nodelay");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    conn.send(
                        "POST",
                        "/api/v1.1/relations/import",
                        Some(TOKEN),
                        &hostile,
                        false,
                    );
                    if conn.answer().is_none() {
                        conn = Conn::open(&server.addr);
                        conn.stream.set_nodelay(true).expect("nodelay");
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        let r = wrk(&server.addr, &script, 32, span);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    });
    println!(
        "\nget_counter at 32 connections beside 2 clients flooding 1 MiB bodies: {:.0} req/s, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
        flooded.rps, flooded.p50, flooded.p90, flooded.p99
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

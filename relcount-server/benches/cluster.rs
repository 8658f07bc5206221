//! Cluster bench: end-to-end write throughput of a 3-host cluster on 3
//! NATS nodes (JetStream R3, file storage), beside one relcount-server (memory only,
//! and with a data directory); and `get_counter` latency through the partition's
//! owner, through a host that forwards it, and on one server.
//!
//! `cargo bench -p relcount-server --features cluster --bench cluster` (about a
//! minute); `-- --quick` for a smoke run. Every process runs on this machine, so the
//! cluster's three hosts and three NATS nodes share its cores with the clients: the
//! ratios, not the absolute numbers, are the result. A custom harness, not
//! criterion: it needs throughput under concurrent clients and latency percentiles.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::nats::{nats_cluster, urls};
use common::{Conn, Server, temp_dir};

const TOKEN: &str = "bench-token";
const PARTITIONS: u32 = 12;
const DEFINE: &str = r#"{"rel_id": 3, "db_a": 1, "db_b": 2, "props": {"Donate": {"type": "int", "top": 10}, "Like": {"type": "int", "sum": true}}}"#;

fn attach(i: u64) -> String {
    format!(
        r#"{{"rel_id": 3, "profile_a": {{"profile_id": "a{}"}}, "profile_b": {{"profile_id": "b{i}"}}, "weights": {{"Donate": {}, "Like": 1}}}}"#,
        i % 1000,
        i % 97
    )
}

/// A kept-alive connection with Nagle's algorithm off (a request goes out in two
/// writes, its head and its body).
fn open(addr: &str) -> Conn {
    let conn = Conn::open(addr);
    conn.stream.set_nodelay(true).expect("nodelay");
    conn
}

fn call(conn: &mut Conn, call: &str, body: &str) -> String {
    conn.send(
        "POST",
        &format!("/api/v1.1/{call}"),
        Some(TOKEN),
        body,
        false,
    );
    let (status, text) = conn.answer().expect("an answer");
    assert_eq!(status, 200, "{call}: {text}");
    assert!(text.contains("\"error\":0"), "{call}: {text}");
    text
}

/// Writes per second with `clients` threads, each on its own kept-alive connection
/// to one of `addrs` (round robin), for `span`.
fn write_rate(addrs: &[String], clients: usize, span: Duration) -> f64 {
    let started = Instant::now();
    let done: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|c| {
                let addr = addrs[c % addrs.len()].clone();
                s.spawn(move || {
                    let mut conn = open(&addr);
                    let mut n = 0u64;
                    while started.elapsed() < span {
                        call(
                            &mut conn,
                            "relations/attach",
                            &attach(n * clients as u64 + c as u64),
                        );
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("client")).sum()
    });
    done as f64 / started.elapsed().as_secs_f64()
}

/// CPU seconds (user and system) process `pid` used so far, from `/proc`.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command's closing parenthesis: utime and stime are the 12th
    // and 13th of them (clock ticks, 100 a second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Writes a second, and CPU µs per write summed over the processes `pids` (the
/// servers and NATS nodes, not the clients), of [`write_rate`].
fn write_rate_cpu(addrs: &[String], clients: usize, span: Duration, pids: &[u32]) -> (f64, f64) {
    let before: f64 = pids.iter().map(|&p| cpu_seconds(p)).sum();
    let started = Instant::now();
    let rate = write_rate(addrs, clients, span);
    let writes = rate * started.elapsed().as_secs_f64();
    let used: f64 = pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>() - before;
    (rate, used * 1e6 / writes.max(1.0))
}

/// `get_counter` latencies (µs: p50, p99) of `n` sequential reads of recipients
/// `ids` through `addr`.
fn read_latency(addr: &str, ids: &[String], n: usize) -> (f64, f64) {
    let mut conn = open(addr);
    let mut us: Vec<f64> = (0..n)
        .map(|i| {
            let body = format!(r#"{{"rel_id": 3, "profile_id": "{}"}}"#, ids[i % ids.len()]);
            let t = Instant::now();
            call(&mut conn, "relations/get_counter", &body);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    us.sort_by(f64::total_cmp);
    (us[us.len() / 2], us[us.len() * 99 / 100])
}

fn partition_of(id: &str) -> u32 {
    u32::try_from(relcount::xxh64(id.as_bytes()) % u64::from(PARTITIONS)).expect("small")
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let span = Duration::from_secs(if quick { 1 } else { 10 });
    let reads = if quick { 200 } else { 5000 };
    let clients = 8;
    let dir = temp_dir("bench-cluster");

    // One server, memory only and with a data directory (fsync every second).
    let single = Server::start(&["--token", TOKEN, "--empty"], &[]);
    let data = dir.join("single");
    let durable = Server::start(
        &[
            "--token",
            TOKEN,
            "--empty",
            "--data",
            data.to_str().expect("utf-8"),
        ],
        &[],
    );
    // Three hosts on three NATS nodes.
    let nats = nats_cluster(&dir);
    let owns = ["0,3,6,9", "1,4,7,10", "2,5,8,11"];
    let nats_urls = urls(&nats);
    let partitions = PARTITIONS.to_string();
    // RELCOUNT_BENCH_REPLICAS=1 measures the same without replication.
    let replicas = std::env::var("RELCOUNT_BENCH_REPLICAS").unwrap_or_else(|_| "3".into());
    let hosts: Vec<Server> = owns
        .iter()
        .map(|owns| {
            Server::start(
                &[
                    "--token",
                    TOKEN,
                    "--cluster",
                    &nats_urls,
                    "--partitions",
                    &partitions,
                    "--owns",
                    owns,
                    "--replicas",
                    &replicas,
                ],
                &[("RUST_LOG", "warn")],
            )
        })
        .collect();
    let host_addrs: Vec<String> = hosts.iter().map(|h| h.addr.clone()).collect();
    for addr in [&single.addr, &durable.addr, &host_addrs[0]] {
        call(&mut open(addr), "relations/define", DEFINE);
    }

    println!(
        "relcount cluster bench ({} s per write run)",
        span.as_secs()
    );
    let mut cluster_pids: Vec<u32> = hosts.iter().map(Server::pid).collect();
    cluster_pids.extend(nats.iter().filter_map(|n| n.child.as_ref().map(|c| c.id())));
    println!("\nwrites/s (attach, each answered), and CPU µs per write summed over the servers");
    println!("and NATS nodes (not the clients):");
    let (one, one_cpu) = write_rate_cpu(
        std::slice::from_ref(&single.addr),
        clients,
        span,
        &[single.pid()],
    );
    println!("  one server, memory only, {clients} clients:        {one:>9.0}  {one_cpu:>6.0} µs");
    let (one_durable, durable_cpu) = write_rate_cpu(
        std::slice::from_ref(&durable.addr),
        clients,
        span,
        &[durable.pid()],
    );
    println!(
        "  one server, --data (everysec), {clients} clients:  {one_durable:>9.0}  {durable_cpu:>6.0} µs"
    );
    // The first writes name profiles no host has seen (1,000 recipients, 97
    // initiators): each is recorded in every host's directory once. Measured apart,
    // then the runs below write to profiles already known.
    let (first, first_cpu) = write_rate_cpu(&host_addrs, clients, span / 2, &cluster_pids);
    println!(
        "  3 hosts (R{replicas}), {clients} clients, first writes: {first:>9.0}  {first_cpu:>6.0} µs  \
         (profiles never seen before)"
    );
    for n in [clients, clients * 4, clients * 8] {
        let (three, cpu) = write_rate_cpu(&host_addrs, n, span, &cluster_pids);
        println!(
            "  3 hosts on 3 NATS nodes (R{replicas}), {n:>2} clients: {three:>9.0}  {cpu:>6.0} µs  \
             ({:.2}x one server's writes/s, {:.1}x its CPU per write)",
            three / one,
            cpu / one_cpu
        );
    }

    // Reads: recipients owned by host 0, read through host 0 (local) and host 1
    // (forwarded), and the same recipients on one server.
    let ids: Vec<String> = (0..1000)
        .map(|i| format!("a{i}"))
        .filter(|id| partition_of(id).is_multiple_of(3))
        .take(100)
        .collect();
    for addr in [&single.addr, &host_addrs[2]] {
        let mut conn = open(addr);
        for id in &ids {
            let body = format!(
                r#"{{"rel_id": 3, "profile_a": {{"profile_id": "{id}"}}, "profile_b": {{"profile_id": "seed"}}, "weights": {{"Donate": 1}}}}"#
            );
            call(&mut conn, "relations/attach", &body);
        }
    }
    // Every acknowledged write applied before reading.
    std::thread::sleep(Duration::from_secs(1));
    println!("\nget_counter latency, µs (p50 / p99), one client, kept-alive connection:");
    let (p50, p99) = read_latency(&single.addr, &ids, reads);
    println!("  one server:                       {p50:>7.0} / {p99:>7.0}");
    let (o50, o99) = read_latency(&host_addrs[0], &ids, reads);
    println!("  cluster, at the owner:            {o50:>7.0} / {o99:>7.0}");
    let (f50, f99) = read_latency(&host_addrs[1], &ids, reads);
    println!(
        "  cluster, forwarded by a host:     {f50:>7.0} / {f99:>7.0}  ({:.2}x one server at p50)",
        f50 / p50
    );
    drop(hosts);
    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
}

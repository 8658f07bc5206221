//! Real `nats-server` nodes on loopback ports (a JetStream cluster), and a plain
//! HTTP/1.1 exchange that returns an answer's headers: for the cluster tests and
//! bench.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::PATIENCE;

/// `n` distinct ports free at the time of asking: all held open while they are
/// chosen, so no two are the same.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}

/// One `nats-server` node, killed by its pid when dropped.
pub struct Nats {
    /// Its `server_name`.
    pub name: String,
    conf: PathBuf,
    /// Its client port.
    pub port: u16,
    /// Its monitoring port.
    pub monitor: u16,
    /// The process, while it runs.
    pub child: Option<Child>,
}

impl Nats {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        let log = self.conf.with_extension("log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(nats_binary())
            .args(["-c", self.conf.to_str().expect("utf-8 path")])
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(started.elapsed() < PATIENCE, "{} did not listen", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, then wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `nats-server` binary, installed with apt-get when missing (as root).
pub fn nats_binary() -> String {
    static FOUND: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            installed().or_else(|| {
                // A fresh machine: installed as .ci/run installs it (Debian's package),
                // so the README's test command needs nothing else.
                let _ = Command::new("sh")
                    .args([
                        "-c",
                        "command -v apt-get >/dev/null && [ \"$(id -u)\" = 0 ] && \
                         { apt-get install -y -qq nats-server >/dev/null 2>&1 || \
                           { apt-get update -qq && apt-get install -y -qq nats-server; }; } \
                         >/dev/null 2>&1",
                    ])
                    .status();
                installed()
            })
        })
        .clone()
        .unwrap_or_else(|| {
            panic!(
                "nats-server is not installed and could not be installed here \
                 (apt-get install nats-server, as root)"
            )
        })
}

fn installed() -> Option<String> {
    [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ]
    .into_iter()
    .find(|candidate| {
        Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
    .map(str::to_owned)
}

/// Three NATS nodes in one JetStream cluster, routes between all.
pub fn nats_cluster(dir: &Path) -> Vec<Nats> {
    let free = free_ports(9);
    let ports: Vec<(u16, u16, u16)> = (0..3)
        .map(|i| (free[3 * i], free[3 * i + 1], free[3 * i + 2]))
        .collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, c, _)| format!("nats-route://127.0.0.1:{c}"))
        .collect();
    let mut nodes: Vec<Nats> = ports
        .iter()
        .enumerate()
        .map(|(i, &(port, cluster, monitor))| {
            let name = format!("n{i}");
            let conf = dir.join(format!("{name}.conf"));
            let text = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{ name: relcount-test, listen: 127.0.0.1:{cluster}, routes: [{}] }}\n",
                dir.join(format!("{name}-js")).display(),
                routes.join(", ")
            );
            std::fs::write(&conf, text).expect("nats conf");
            Nats {
                name,
                conf,
                port,
                monitor,
                child: None,
            }
        })
        .collect();
    for n in &mut nodes {
        n.start();
    }
    nodes
}

pub fn urls(nodes: &[Nats]) -> String {
    nodes.iter().map(Nats::url).collect::<Vec<_>>().join(",")
}

/// A plain HTTP/1.1 exchange: status, headers (lowercase names), body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Option<(u16, HashMap<String, String>, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(PATIENCE)).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<HashMap<String, String>>();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t == "chunked")
    {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Some((status, headers, body))
}

/// A chunked body's content.
pub fn dechunk(mut rest: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}

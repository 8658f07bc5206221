//! A real `relcount-server` process on a loopback port, and a raw HTTP/1.1 client
//! that can misbehave as an attacker would (half-sent requests, idle connections).

#![allow(dead_code, unreachable_pub)]

pub mod nats;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any wait of these tests may take before it counts as a failure (a
/// liveness bound, not a timing threshold: every wait ends far sooner when it passes).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A running server, killed by its pid when dropped.
pub struct Server {
    child: Option<Child>,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// Everything it printed, stdout and stderr.
    pub output: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the server with `args` (`--addr 127.0.0.1:0` added) and `env`, and waits
    /// for its ready line.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relcount-server"));
        cmd.args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env_remove("RELCOUNT_TOKEN")
            .env_remove("RELCOUNT_DATA")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start relcount-server");
        let output = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for (stream, ready) in [
            (Box::new(stdout) as Box<dyn Read + Send>, Some(ready_tx)),
            (Box::new(stderr), None),
        ] {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    if let (Some(tx), Some(rest)) =
                        (&ready, line.strip_prefix("relcount serving http://"))
                    {
                        let addr = rest.split('/').next().unwrap_or_default().to_owned();
                        let _ = tx.send(addr);
                    }
                    let mut out = output.lock().unwrap_or_else(|e| e.into_inner());
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        let addr = ready_rx.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            let out = output.lock().unwrap_or_else(|e| e.into_inner());
            panic!("no ready line; output: {out}")
        });
        Server {
            child: Some(child),
            addr,
            output,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (`TERM`, `INT`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit (at most [`PATIENCE`]), returning its status and
    /// how long it took.
    pub fn wait(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                // Let the readers drain the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return (status, started.elapsed());
            }
            assert!(started.elapsed() < PATIENCE, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything printed so far.
    pub fn printed(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One request on a new connection; the answer's status and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let mut conn = Conn::open(&self.addr);
        conn.send(method, path, auth, body, true);
        conn.answer().expect("an answer")
    }

    /// `POST /api/v1.1/<call>` with the token as a Bearer header; the envelope.
    pub fn call(&self, call: &str, token: &str, body: &serde_json::Value) -> serde_json::Value {
        let (status, text) = self.request(
            "POST",
            &format!("/api/v1.1/{call}"),
            Some(token),
            &body.to_string(),
        );
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).expect("a JSON envelope")
    }

    /// The value of one sample of `GET /metrics` (its line's last field).
    pub fn metric(&self, sample: &str) -> Option<f64> {
        // A connection refused at the limit is tried again.
        let mut text = String::new();
        for _ in 0..200 {
            let (status, body) = self.request("GET", "/metrics", None, "");
            if status == 200 {
                text = body;
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        text.lines()
            .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A raw HTTP/1.1 connection.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes raw bytes (errors ignored: the server may have closed).
    pub fn raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Sends a whole request.
    pub fn send(&mut self, method: &str, path: &str, auth: Option<&str>, body: &str, close: bool) {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(token) = auth {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        self.raw(head.as_bytes());
        self.raw(body.as_bytes());
    }

    /// Reads one answer: its status and body; `None` when the server closed the
    /// connection first.
    pub fn answer(&mut self) -> Option<(u16, String)> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill() {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while self.buf.len() < head_end + length {
            if !self.fill() {
                return None;
            }
        }
        let body = String::from_utf8_lossy(&self.buf[head_end..head_end + length]).into_owned();
        self.buf.drain(..head_end + length);
        Some((status, body))
    }

    /// Whether the server closed the connection (reads end) before [`PATIENCE`].
    pub fn closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 4096];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A fresh temporary directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("relcount-server-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

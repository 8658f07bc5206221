//! The server's settings: flags, each with an environment variable as its fallback.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use relcount::api::{Limits, Quotas};
use relcount::{AutoCompact, SyncPolicy};

/// relcount's JSON API over HTTP (`POST /api/v1.1/<call>`), with `GET /health` and
/// `GET /metrics` (Prometheus). Every flag falls back to the environment variable
/// named beside it; an empty variable counts as unset.
#[derive(Debug, Clone, Parser)]
#[command(name = "relcount-server", version, about, long_about = None)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "RELCOUNT_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,

    /// The API token (`Authorization: Bearer <token>`, or `"token"` in the body).
    /// Default: a random one, printed at start; a token set here is never printed.
    #[arg(long, env = "RELCOUNT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// A data directory: recovered at start (last snapshot, then the write log), every
    /// write logged there, the log folded into a snapshot as it grows. Default: memory
    /// only.
    #[arg(long, env = "RELCOUNT_DATA")]
    pub data: Option<PathBuf>,

    /// When the write log is fsynced: `always` (before each answer), `everysec` or
    /// `no` (left to the OS).
    #[arg(long, env = "RELCOUNT_FSYNC", default_value = "everysec")]
    pub fsync: SyncPolicy,

    /// Relations of the demo load (Zipf fan-in), loaded at the first start unless
    /// `--empty`.
    #[arg(long, env = "RELCOUNT_RELATIONS", default_value_t = 1_000_000)]
    pub relations: usize,

    /// Start with no data: no demo load.
    #[arg(long)]
    pub empty: bool,

    /// Fold the log into a new snapshot once it is this percent of the snapshot's
    /// size (0: never), and at least `--compact-min-mb` (Redis's
    /// auto-aof-rewrite-percentage).
    #[arg(long, env = "RELCOUNT_COMPACT_PERCENT", default_value_t = 100)]
    pub compact_percent: u32,

    /// The smallest log folded, in MiB [default: 64; env: `RELCOUNT_COMPACT_MB` is an
    /// older name].
    #[arg(long, env = "RELCOUNT_COMPACT_MIN_MB")]
    pub compact_min_mb: Option<u64>,

    /// Seconds between the compactor's checks of the log against `--compact-percent`
    /// and `--compact-min-mb` (a check reads two file sizes).
    #[arg(long, env = "RELCOUNT_COMPACT_CHECK", default_value = "5", value_parser = seconds)]
    pub compact_check: Duration,

    /// Most connections open at once; one past it is answered 503 and closed. Keep it
    /// below the process's file descriptor limit.
    #[arg(long, env = "RELCOUNT_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Seconds a client has to send a request's headers, counted from the connection's
    /// start or the end of the previous answer: so also how long a kept-alive
    /// connection may stay idle.
    #[arg(long, env = "RELCOUNT_HEADER_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub header_timeout: Duration,

    /// Seconds a write of an answer may wait on a client that does not read it; then
    /// the connection is closed.
    #[arg(long, env = "RELCOUNT_WRITE_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub write_timeout: Duration,

    /// Seconds a client has to send a request's whole body, once its headers are in.
    #[arg(long, env = "RELCOUNT_BODY_TIMEOUT", default_value = "30", value_parser = seconds)]
    pub body_timeout: Duration,

    /// Seconds a shutdown (SIGTERM, SIGINT) waits for requests in flight before it
    /// closes their connections; then it syncs the log and exits 0.
    #[arg(long, env = "RELCOUNT_SHUTDOWN_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub shutdown_timeout: Duration,

    /// Requests served at once (parsing and engine work run on these threads, never on
    /// the network's); the others wait their turn. As many again serve bodies over 64
    /// KiB, in a lane of their own, so large requests never hold up small ones.
    /// Default: the number of cores.
    #[arg(long, env = "RELCOUNT_WORKERS")]
    pub workers: Option<usize>,

    /// Largest request body, in bytes; past it: 413.
    #[arg(long, env = "RELCOUNT_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,

    /// Most profiles (over every database); a write that could pass it answers 402.
    #[arg(long, env = "RELCOUNT_MAX_PROFILES")]
    pub max_profiles: Option<u64>,

    /// Most relations; a write that could pass it answers 402.
    #[arg(long, env = "RELCOUNT_MAX_RELATIONS")]
    pub max_relations: Option<u64>,

    /// Most relation types; a definition past it answers 402.
    #[arg(long, env = "RELCOUNT_MAX_RELATION_TYPES")]
    pub max_relation_types: Option<u64>,

    /// Most resident memory of the process, in MiB; once reached, writes that can
    /// create anything answer 402 (reads, detaches and deletes go on).
    #[arg(long, env = "RELCOUNT_MAX_MEMORY_MB")]
    pub max_memory_mb: Option<u64>,

    /// Cluster mode: the NATS servers (comma-separated URLs) whose JetStream holds
    /// the partitions' logs. Writes are logged there and applied by each partition's
    /// owner; `--data` then holds this host's partition snapshots. No demo data.
    #[cfg(feature = "cluster")]
    #[arg(long, env = "RELCOUNT_CLUSTER")]
    pub cluster: Option<String>,

    /// Cluster mode: the number of partitions, the same on every host (more than
    /// hosts, so partitions can move).
    #[cfg(feature = "cluster")]
    #[arg(long, env = "RELCOUNT_PARTITIONS", default_value_t = 12)]
    pub partitions: u32,

    /// Cluster mode: the partitions this host owns (comma-separated); claiming one
    /// another host owned moves it here.
    #[cfg(feature = "cluster")]
    #[arg(long, env = "RELCOUNT_OWNS", value_delimiter = ',')]
    pub owns: Vec<u32>,

    /// Cluster mode: this host's URL as the other hosts reach it [default:
    /// http://<--addr>].
    #[cfg(feature = "cluster")]
    #[arg(long, env = "RELCOUNT_ADVERTISE")]
    pub advertise: Option<String>,

    /// Cluster mode: JetStream replicas of each partition's stream.
    #[cfg(feature = "cluster")]
    #[arg(long, env = "RELCOUNT_REPLICAS", default_value_t = 3)]
    pub replicas: usize,

    /// Cluster mode: a partition's snapshot every this many of its records (0: only
    /// at a stop).
    #[cfg(feature = "cluster")]
    #[arg(long, env = "RELCOUNT_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,

    /// Cluster mode: seconds a write waits for JetStream's acknowledgment, retrying
    /// (a leader's election takes a few); then it answers 503.
    #[cfg(feature = "cluster")]
    #[arg(long, env = "RELCOUNT_PUBLISH_TIMEOUT", default_value = "30", value_parser = seconds)]
    pub publish_timeout: Duration,

    /// Cluster mode: seconds a read waits for its partition to reach the sequence
    /// its `relcount-min-seq` header names; then it answers 503.
    #[cfg(feature = "cluster")]
    #[arg(long, env = "RELCOUNT_READ_WAIT", default_value = "5", value_parser = seconds)]
    pub read_wait: Duration,

    /// Cluster mode: seconds a logged write waits for its partition's owner to apply
    /// it and say what it came to; then it answers 504 (logged, takes effect later).
    #[cfg(feature = "cluster")]
    #[arg(long, env = "RELCOUNT_APPLY_WAIT", default_value = "10", value_parser = seconds)]
    pub apply_wait: Duration,
}

fn seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if (0.001..=86_400.0).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "must be a number of seconds from 0.001 to 86400, got {s:?}"
        )),
    }
}

impl Settings {
    /// The settings from the command line and the environment; empty variables and
    /// values count as unset.
    #[must_use]
    pub fn from_args() -> Settings {
        let mut s = Settings::parse();
        s.token = s.token.filter(|t| !t.is_empty());
        s.data = s.data.filter(|d| !d.as_os_str().is_empty());
        if s.compact_min_mb.is_none() {
            s.compact_min_mb = std::env::var("RELCOUNT_COMPACT_MB")
                .ok()
                .and_then(|v| v.parse().ok());
        }
        s
    }

    /// The automatic compaction policy.
    #[must_use]
    pub fn auto_compact(&self) -> AutoCompact {
        let default = AutoCompact::default();
        AutoCompact {
            growth_percent: self.compact_percent,
            min_log_bytes: self
                .compact_min_mb
                .map_or(default.min_log_bytes, |mb| mb.saturating_mul(1 << 20)),
        }
    }

    /// The API's limits.
    #[must_use]
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            ..Limits::default()
        }
    }

    /// The API's quotas.
    #[must_use]
    pub fn quotas(&self) -> Quotas {
        Quotas {
            max_profiles: self.max_profiles,
            max_relations: self.max_relations,
            max_relation_types: self.max_relation_types,
            max_memory_bytes: self.max_memory_mb.map(|mb| mb.saturating_mul(1 << 20)),
        }
    }

    /// Requests served at once.
    #[must_use]
    pub fn workers(&self) -> usize {
        self.workers
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

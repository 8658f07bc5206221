//! The main job: relcount's JSON API over HTTP, as the platform serves it.
//!
//! `cargo run --release --example server [-- --empty]`
//!
//! - `POST /api/v1.1/<call>` with a JSON body; every answer is HTTP 200 with the
//!   platform's envelope (see `relcount::api`).
//! - `RELCOUNT_ADDR`: address to listen on (default `127.0.0.1:8080`).
//! - `RELCOUNT_TOKEN`: the API token (default: a random one, printed at start).
//! - `RELCOUNT_RELATIONS`: size of the demo load (default 1,000,000).
//! - `RELCOUNT_DATA`: a data directory: the engine recovers from it at start (last
//!   snapshot, then the write log) and logs every write there; the demo load, when it
//!   runs, is compacted into a snapshot. Unset: in memory only.
//! - `RELCOUNT_FSYNC`: the log's sync policy, `always`, `everysec` (default) or `no`.
//! - `RELCOUNT_COMPACT_PERCENT`, `RELCOUNT_COMPACT_MIN_MB`: with a data directory,
//!   the log is folded into a new snapshot once it is at least `MIN_MB` MiB (default
//!   64; `RELCOUNT_COMPACT_MB` is an older name for it) and `PERCENT` percent of the
//!   snapshot's size (default 100; 0 turns it off), checked every 5 s: Redis's
//!   `auto-aof-rewrite-*`. So the log never grows without bound and a restart
//!   replays at most about as much log as snapshot.
//! - `--empty`: start with no data; otherwise the seed page's relation type and
//!   relation are loaded with the demo workload (Zipf fan-in), and a ready `curl` line
//!   that reproduces the seed's request is printed.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use indicatif::{ProgressBar, ProgressStyle};
use relcount::api::{Api, TokenScope};
use relcount::workload::Workload;
use relcount::{AutoCompact, Compactor, Engine, SyncPolicy, Value};

/// The automatic compaction policy from `RELCOUNT_COMPACT_PERCENT` and
/// `RELCOUNT_COMPACT_MIN_MB` (or its older name `RELCOUNT_COMPACT_MB`).
fn compact_policy() -> Result<AutoCompact, String> {
    let number = |name: &str| -> Result<Option<u64>, String> {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{name} must be a whole number, got {v:?}")),
            _ => Ok(None),
        }
    };
    let default = AutoCompact::default();
    let percent = number("RELCOUNT_COMPACT_PERCENT")?.map_or(Ok(default.growth_percent), |p| {
        u32::try_from(p).map_err(|_| format!("RELCOUNT_COMPACT_PERCENT is too large: {p}"))
    })?;
    let min_mb = match number("RELCOUNT_COMPACT_MIN_MB")? {
        Some(mb) => Some(mb),
        None => number("RELCOUNT_COMPACT_MB")?,
    };
    Ok(AutoCompact {
        growth_percent: percent,
        min_log_bytes: min_mb.map_or(default.min_log_bytes, |mb| mb.saturating_mul(1 << 20)),
    })
}

/// Reports what the compactor did, every 5 s.
async fn report_compactions(compactor: Compactor) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    let (mut done, mut failed) = (0, None);
    loop {
        tick.tick().await;
        let now = compactor.compactions();
        if now > done {
            println!("compacted the log into a new snapshot ({now} so far)");
            done = now;
        }
        let error = compactor.last_error().map(|e| e.to_string());
        if error != failed {
            if let Some(e) = &error {
                eprintln!("compaction failed (tried again in 50 s): {e}");
            }
            failed = error;
        }
    }
}

/// The routes: every call of the API under `/api/v1.1/`.
pub(crate) fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/v1.1/{*call}", post(call))
        .with_state(api)
}

async fn call(
    State(api): State<Arc<Api>>,
    Path(call): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> impl IntoResponse {
    let auth = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    // Read at most one byte past the limit: an oversized body is never buffered whole.
    let answer = match to_bytes(body, api.limits().max_body_bytes + 1).await {
        Ok(bytes) if bytes.len() <= api.limits().max_body_bytes => api.handle(&call, auth, &bytes),
        _ => api.too_large(),
    };
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/json")],
        answer.body,
    )
}

fn random_token() -> String {
    // RandomState is seeded from the OS's randomness.
    let (a, b) = (RandomState::new(), RandomState::new());
    format!("{:016x}{:016x}", a.hash_one(0u8), b.hash_one(1u8))
}

const SEED_A: &str = "5c910f6bc484d023b1309bee";
const SEED_B: &str = "5c910938c484d023b1309bab";

/// The seed page's relation type and relation, then the demo workload.
fn load(engine: &Engine, relations: usize) -> Result<(), relcount::Error> {
    let w = Workload::new(100_000, 1_000_000, 42);
    engine.define(Workload::seed_schema(w.rel_id))?;
    engine.attach(
        w.rel_id,
        SEED_A,
        SEED_B,
        &[
            ("Donate", Value::Int(20)),
            ("Like", Value::Int(2)),
            ("Subscriber", Value::Bool(true)),
        ],
    )?;
    let bar = ProgressBar::new(relations as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "loading demo relations {bar:40} {pos}/{len} ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Through the bulk path, a batch of 50,000 at a time (each one log record when a
    // data directory is set), the bar moving after each.
    let mut source = w.relations(relations);
    let mut loaded = 0u64;
    loop {
        let batch: Vec<_> = source.by_ref().take(50_000).collect();
        if batch.is_empty() {
            break;
        }
        loaded += engine.import_relations(
            w.rel_id,
            batch
                .iter()
                .map(|r| (r.a.as_str(), r.b.as_str(), r.weights())),
        )? as u64;
        bar.set_position(loaded);
    }
    bar.finish_and_clear();
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let empty = std::env::args().any(|a| a == "--empty");
    let addr = std::env::var("RELCOUNT_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let (token, generated) = match std::env::var("RELCOUNT_TOKEN") {
        Ok(t) if !t.is_empty() => (t, false),
        _ => (random_token(), true),
    };
    let relations = std::env::var("RELCOUNT_RELATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);

    let engine = match std::env::var("RELCOUNT_DATA") {
        Ok(dir) if !dir.is_empty() => {
            let policy = std::env::var("RELCOUNT_FSYNC").unwrap_or_else(|_| "everysec".into());
            let sync = SyncPolicy::parse(&policy).ok_or_else(|| {
                format!("RELCOUNT_FSYNC must be always, everysec or no, got {policy:?}")
            })?;
            let started = std::time::Instant::now();
            let engine = Engine::builder()
                .auto_compact(compact_policy()?)
                .open(&dir, sync)?;
            println!(
                "recovered {} relations, {} profiles from {dir} in {:.1} s (fsync {policy})",
                engine.relation_count(),
                engine.profile_count(),
                started.elapsed().as_secs_f64()
            );
            for skipped in engine.recovery_skipped() {
                eprintln!("warning: {skipped}");
            }
            Arc::new(engine)
        }
        _ => Arc::new(Engine::new()),
    };
    // The demo data is loaded once: a recovered directory already holds it.
    if !empty && engine.relation_type(3).is_none() {
        let started = std::time::Instant::now();
        let e = Arc::clone(&engine);
        tokio::task::spawn_blocking(move || {
            load(&e, relations)?;
            // A durable engine folds the load's log into one snapshot.
            if std::env::var("RELCOUNT_DATA").is_ok_and(|d| !d.is_empty()) {
                e.compact()?;
            }
            Ok::<(), relcount::Error>(())
        })
        .await??;
        println!(
            "loaded {} relations, {} profiles in {:.1} s",
            engine.relation_count(),
            engine.profile_count(),
            started.elapsed().as_secs_f64()
        );
    }
    if std::env::var("RELCOUNT_DATA").is_ok_and(|d| !d.is_empty()) {
        let compactor = Compactor::start(&engine, std::time::Duration::from_secs(5))?;
        tokio::spawn(report_compactions(compactor));
    }
    let api = Arc::new(Api::new(Arc::clone(&engine)));
    api.add_token(&token, TokenScope::full());

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let url = format!("http://{}", listener.local_addr()?);
    if generated {
        println!("API token (random; set RELCOUNT_TOKEN to choose one): {token}");
    }
    println!("relcount serving {url}/api/v1.1/<call>; ready. Try:\n");
    if empty {
        println!(
            "curl -s -X POST {url}/api/v1.1/relations/define -H 'Content-Type: application/json' -d '{}'",
            serde_json::json!({"token": token, "rel_id": 3, "db_a": 1, "db_b": 2, "props": {
                "Donate": {"type": "int", "top": 10}, "Like": {"type": "int", "sum": true},
                "Subscriber": {"type": "bool"}}})
        );
    } else {
        println!(
            "curl -s -X POST {url}/api/v1.1/relations/get_counter -H 'Content-Type: application/json' -d '{}'",
            serde_json::json!({"token": token, "rel_id": 3, "matching": "profile_id", "profile_id": SEED_A})
        );
    }
    println!();
    axum::serve(listener, router(api))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

//! `relcount-server`: relcount's JSON API over HTTP, as the platform serves it.
//!
//! `cargo run --release -p relcount-server [-- --help]`
//!
//! - `POST /api/v1.1/<call>` with a JSON body; every answer is HTTP 200 with the
//!   platform's envelope (see `relcount::api`), but for a body that timed out (408),
//!   a server shutting down or at its connection limit (503).
//! - `GET /health` (200 `ok`, 503 while shutting down) and `GET /metrics` (Prometheus),
//!   outside the token scheme, never showing data.
//! - Settings: `--help`, each flag with an environment variable as its fallback.
//! - SIGTERM or SIGINT: stop accepting, finish the requests in flight (at most
//!   `--shutdown-timeout`), sync the write log, exit 0.

#![forbid(unsafe_code)]
// A binary: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

#[cfg(feature = "cluster")]
mod cluster;
mod demo;
mod listener;
mod metrics;
mod routes;
mod settings;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use relcount::api::{Api, TokenScope};
use relcount::{Compactor, Engine};
use tokio::sync::Semaphore;
use tracing_subscriber::EnvFilter;

use crate::settings::Settings;

/// The header every API answer carries: its envelope's `error` code (a forwarding
/// host reads it; a client may too, without parsing the body).
const CODE_HEADER: &str = "relcount-error";

fn main() -> std::process::ExitCode {
    let settings = Settings::from_args();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("relcount-io")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    let ran = runtime.block_on(run(settings));
    // Connections past the shutdown deadline were dropped; nothing left is waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match ran {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "relcount-server stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

fn random_token() -> String {
    // RandomState is seeded from the OS's randomness.
    let (a, b) = (RandomState::new(), RandomState::new());
    format!("{:016x}{:016x}", a.hash_one(0u8), b.hash_one(1u8))
}

/// Opens (or recovers) the engine the settings ask for.
fn open_engine(settings: &Settings) -> Result<Arc<Engine>, relcount::Error> {
    let Some(dir) = &settings.data else {
        return Ok(Arc::new(Engine::new()));
    };
    let started = Instant::now();
    let engine = Engine::builder()
        .auto_compact(settings.auto_compact())
        .open(dir, settings.fsync)?;
    tracing::info!(
        relations = engine.relation_count(),
        profiles = engine.profile_count(),
        seconds = started.elapsed().as_secs_f64(),
        fsync = ?settings.fsync,
        "recovered the data directory"
    );
    for skipped in engine.recovery_skipped() {
        tracing::warn!(%skipped, "recovery skipped a record");
    }
    Ok(Arc::new(engine))
}

/// Resolves on the first SIGTERM or SIGINT.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM"),
                    _ = int.recv() => tracing::info!("SIGINT"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "cluster")]
    let clustered = settings.cluster.is_some();
    #[cfg(not(feature = "cluster"))]
    let clustered = false;
    let engine = if clustered {
        // The partitions have engines of their own; this one checks writes.
        Arc::new(Engine::new())
    } else {
        let s = settings.clone();
        tokio::task::spawn_blocking(move || open_engine(&s)).await??
    };
    // The demo data is loaded once: a recovered directory already holds it.
    if !clustered && !settings.empty && engine.relation_type(demo::REL_ID).is_none() {
        let (e, relations, durable) = (
            Arc::clone(&engine),
            settings.relations,
            settings.data.is_some(),
        );
        tokio::task::spawn_blocking(move || demo::load(&e, relations, durable)).await??;
    }
    let compactor = match settings.data {
        Some(_) if !clustered => Some(Arc::new(Compactor::start(&engine, settings.compact_check)?)),
        _ => None,
    };
    let (token, generated) = match &settings.token {
        Some(t) => (t.clone(), false),
        None => (random_token(), true),
    };
    let api = Api::new(Arc::clone(&engine))
        .with_limits(settings.limits())
        .with_quotas(settings.quotas());
    api.add_token(&token, TokenScope::full());
    let api = Arc::new(api);
    let listener = tokio::net::TcpListener::bind(&settings.addr).await?;
    let url = format!("http://{}", listener.local_addr()?);
    #[cfg(feature = "cluster")]
    let cluster = match &settings.cluster {
        None => None,
        Some(nats) => {
            let setup = cluster::Setup {
                nats: nats.clone(),
                partitions: settings.partitions,
                owns: settings.owns.clone(),
                advertise: settings.advertise.clone().unwrap_or_else(|| url.clone()),
                replicas: settings.replicas,
                data: settings.data.clone(),
                snapshot_every: settings.snapshot_every,
                publish_timeout: settings.publish_timeout,
                read_wait: settings.read_wait,
                apply_wait: settings.apply_wait,
                token: token.clone(),
                limits: settings.limits(),
            };
            let q = settings.quotas();
            if q.max_profiles.is_some()
                || q.max_relations.is_some()
                || q.max_relation_types.is_some()
                || q.max_memory_bytes.is_some()
            {
                return Err(
                    "the --max-* quotas are not enforced in cluster mode; start without them"
                        .into(),
                );
            }
            let c = cluster::Cluster::join(setup, Arc::clone(&api)).await?;
            tracing::info!(nats = %nats, partitions = settings.partitions, owns = ?settings.owns, "joined the cluster");
            Some(c)
        }
    };
    let workers = settings.workers();
    let app = Arc::new(routes::App {
        api,
        metrics: metrics::Metrics::new(Arc::clone(&engine), compactor.as_ref().map(Arc::downgrade)),
        body_timeout: settings.body_timeout,
        work: [
            Arc::new(Semaphore::new(workers)),
            Arc::new(Semaphore::new(workers)),
        ],
        closing: AtomicBool::new(false),
        #[cfg(feature = "cluster")]
        cluster,
    });

    if generated {
        println!("API token (random; set RELCOUNT_TOKEN or --token to choose one): {token}");
    }
    println!("relcount serving {url}/api/v1.1/<call>; ready. Try:\n");
    let shown = if generated {
        token.as_str()
    } else {
        "$RELCOUNT_TOKEN"
    };
    println!(
        "{}\n",
        demo::try_line(&url, shown, settings.empty || clustered)
    );
    tracing::info!(%url, workers, max_connections = settings.max_connections, "serving");

    let reporter = compactor
        .as_ref()
        .map(|c| tokio::spawn(report_compactions(Arc::clone(c))));
    let policy = listener::Policy {
        max_connections: settings.max_connections,
        header_timeout: settings.header_timeout,
        write_timeout: settings.write_timeout,
        shutdown_timeout: settings.shutdown_timeout,
    };
    listener::run(listener, Arc::clone(&app), policy, stop_signal()).await;

    // The requests not yet at work are refused (since the stop began); wait for those
    // at work, then make every acknowledged write durable.
    let permits = u32::try_from(workers).unwrap_or(u32::MAX);
    let _small = app.work[0].acquire_many(permits).await?;
    let _large = app.work[1].acquire_many(permits).await?;
    if let Some(reporter) = reporter {
        reporter.abort();
        let _ = reporter.await;
    }
    #[cfg(feature = "cluster")]
    if let Some(c) = &app.cluster {
        c.stop().await;
    }
    // The last reference: its drop lets a compaction in flight end, then stops it.
    drop(compactor);
    let e = Arc::clone(&engine);
    tokio::task::spawn_blocking(move || e.sync_log()).await??;
    if settings.data.is_some() {
        tracing::info!(
            relations = engine.relation_count(),
            "stopped; the write log is synced"
        );
    } else {
        tracing::info!(relations = engine.relation_count(), "stopped");
    }
    Ok(())
}

/// Reports what the compactor did, every 5 s.
async fn report_compactions(compactor: Arc<Compactor>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    let (mut done, mut failed) = (0, None);
    loop {
        tick.tick().await;
        let now = compactor.compactions();
        if now > done {
            tracing::info!(compactions = now, "compacted the log into a new snapshot");
            done = now;
        }
        let error = compactor.last_error().map(|e| e.to_string());
        if error != failed {
            if let Some(e) = &error {
                tracing::error!(error = %e, "compaction failed (tried again later)");
            }
            failed = error;
        }
    }
}

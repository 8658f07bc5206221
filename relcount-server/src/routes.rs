//! The routes: `POST /api/v1.1/<call>` (the JSON API), `GET /health`, `GET /metrics`.
//!
//! An API request's `Authorization` header is checked before its body is read; the
//! body is read within the body timeout and the size limit. A small `get_counter` by
//! id (which cannot wait, and whose work is small: `Api::handle_if_cheap`) then runs on
//! the connection's own thread; every other call's parsing and engine work run on a
//! pool of worker threads (at most `--workers` at once, in two lanes by body size),
//! never on the threads that serve the network, so a heavy request cannot hold up the
//! others' I/O.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use relcount::api::{self, Api};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// What every request shares.
#[derive(Debug)]
pub struct App {
    /// The JSON API over the engine.
    pub api: Arc<Api>,
    /// The server's metrics.
    pub metrics: Metrics,
    /// How long a body may take to arrive.
    pub body_timeout: Duration,
    /// Permits to run a request's work: `--workers` for bodies up to
    /// [`LARGE_BODY`] bytes, as many again for larger ones. Two lanes, so clients
    /// sending large bodies (an import, or a flood of costly ones) wait among
    /// themselves and never hold up the small calls (a `get_counter` answers in
    /// microseconds of work).
    pub work: [Arc<Semaphore>; 2],
    /// Set once a shutdown begins: `/health` answers 503, and requests not yet at work
    /// are refused (503), so the log's last sync covers every acknowledged write.
    pub closing: AtomicBool,
    /// Cluster mode: writes go to the log, reads to their partition's owner.
    #[cfg(feature = "cluster")]
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Bodies larger than this take the large lane of [`App::work`].
pub const LARGE_BODY: usize = 64 * 1024;

/// The prefix of every API call's path.
const API_PREFIX: &str = "/api/v1.1/";

type Answer = Response<Full<Bytes>>;

/// Serves one request.
///
/// # Errors
///
/// Never: every failure is an answer.
pub async fn serve(app: Arc<App>, req: Request<Incoming>) -> Result<Answer, Infallible> {
    let started = Instant::now();
    let path = req.uri().path();
    let (call, answer, code) = match (req.method(), path) {
        (&Method::GET, "/health") => ("health", health(&app), 0),
        (&Method::GET, "/metrics") => ("metrics", metrics(&app).await, 0),
        #[cfg(feature = "cluster")]
        (&Method::GET, "/cluster") => ("metrics", cluster_status(&app), 0),
        (method, p) if p.starts_with(API_PREFIX) => {
            let name = &p[API_PREFIX.len()..];
            match name.parse::<api::Call>() {
                // An unknown call is refused as the API words it, its body unread.
                Err(_) => {
                    let (answer, code) = answered(app.api.handle(name, None, b""), true);
                    ("other", answer, code)
                }
                Ok(call) if method == Method::POST => {
                    let (answer, code) = api_call(&app, call.path(), req).await;
                    (call.path(), answer, code)
                }
                Ok(call) => (call.path(), plain(405, "use POST\n"), 405),
            }
        }
        _ => ("other", plain(404, "not found\n"), 404),
    };
    if call != "metrics" && call != "health" {
        let seconds = started.elapsed().as_secs_f64();
        app.metrics.answered(call, code, seconds);
        tracing::debug!(call, code, seconds, "answered");
    }
    Ok(answer)
}

fn plain(status: u16, text: &'static str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *answer.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    answer
}

/// `GET /metrics`: rendered by a worker (a scrape reads the engine's counts and the
/// log's files), in the small requests' lane.
async fn metrics(app: &Arc<App>) -> Answer {
    let Ok(permit) = Arc::clone(&app.work[0]).acquire_owned().await else {
        return plain(503, "shutting down\n");
    };
    let a = Arc::clone(app);
    let text = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        a.metrics.render()
    })
    .await;
    let Ok(text) = text else {
        return plain(500, "");
    };
    Response::builder()
        .header(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_else(|_| plain(500, ""))
}

/// `GET /cluster`: the partitions this host owns, each with its state, last applied
/// sequence and the records its engine refused (writes whose refusal only their
/// owner could know), and the records of this host whose owners' answers it awaits,
/// as JSON (`{"partitions": [], "awaiting": 0}` outside cluster mode).
#[cfg(feature = "cluster")]
fn cluster_status(app: &App) -> Answer {
    let parts = app.cluster.as_ref().map(|c| c.status()).unwrap_or_default();
    let items: Vec<String> = parts
        .into_iter()
        .map(|(p, progress, seq, refused)| {
            let state = match progress {
                crate::cluster::partition::Progress::CatchingUp => "catching up".to_owned(),
                crate::cluster::partition::Progress::Serving => "serving".to_owned(),
                crate::cluster::partition::Progress::Failed(why) => format!("failed: {why}"),
            };
            format!(
                "{{\"partition\":{p},\"state\":{},\"seq\":{seq},\"refused\":{refused}}}",
                relcount::api::json_string(&state)
            )
        })
        .collect();
    let awaiting = app.cluster.as_ref().map_or(0, |c| c.awaiting());
    let mut answer = Response::new(Full::new(Bytes::from(format!(
        "{{\"partitions\":[{}],\"awaiting\":{awaiting}}}",
        items.join(",")
    ))));
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

/// `GET /health`: 200 while the server takes requests, 503 once it is shutting down.
fn health(app: &App) -> Answer {
    if app.closing.load(Ordering::Acquire) {
        plain(503, "shutting down\n")
    } else {
        plain(200, "ok\n")
    }
}

/// An envelope answer; `close` when the request's body was not read (the connection
/// cannot carry another request).
fn envelope(status: StatusCode, body: impl Into<Bytes>, code: u32, close: bool) -> Answer {
    let mut answer = Response::new(Full::new(body.into()));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        crate::CODE_HEADER,
        if code == 0 {
            HeaderValue::from_static("0")
        } else {
            HeaderValue::from(code)
        },
    );
    if close {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    answer
}

/// The API's answer (HTTP 200 and its envelope) and its code.
fn answered(r: api::Response, close: bool) -> (Answer, u32) {
    let code = r.code.number();
    (envelope(StatusCode::OK, r.body, code, close), code)
}

/// An answer outside the API's own codes (a timeout, a shutdown), in its envelope.
fn refusal(status: StatusCode, text: &str) -> (Answer, u32) {
    let code = u32::from(status.as_u16());
    let body = format!(
        "{{\"error\":{code},\"error_text\":{}}}",
        relcount::api::json_string(text)
    );
    (envelope(status, body, code, true), code)
}

async fn api_call(app: &Arc<App>, call: &'static str, req: Request<Incoming>) -> (Answer, u32) {
    let api = &app.api;
    let (head, body) = req.into_parts();
    // A header that is not text cannot be `Bearer <token>`: checked as empty.
    let auth = head
        .headers
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    if let Err(refused) = api.check_header(auth) {
        return answered(refused, true);
    }
    #[cfg(feature = "cluster")]
    let (min_seq, forwarded) = (
        head.headers
            .get(crate::cluster::MIN_SEQ)
            .map(|v| v.to_str().unwrap_or("?").to_owned()),
        head.headers.contains_key(crate::cluster::FORWARDED),
    );
    let max = api.limits().max_body_bytes;
    let declared = head
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return answered(api.too_large(), true);
    }
    let body =
        match tokio::time::timeout(app.body_timeout, read_body(body, max, &app.metrics)).await {
            Err(_) => {
                return refusal(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!(
                        "request body not received within {} s",
                        app.body_timeout.as_secs_f64()
                    ),
                );
            }
            Ok(Err(Body::TooLarge)) => return answered(api.too_large(), true),
            Ok(Err(Body::Broken)) => {
                return refusal(StatusCode::BAD_REQUEST, "request body could not be read");
            }
            Ok(Ok(body)) => body,
        };
    let shutting_down = || {
        refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
    };
    if app.closing.load(Ordering::Acquire) {
        return shutting_down();
    }
    #[cfg(feature = "cluster")]
    let clustered = app.cluster.is_some();
    #[cfg(not(feature = "cluster"))]
    let clustered = false;
    // A small read that cannot wait runs here, on the connection's thread: the
    // hand-off to a worker and back costs more than the call (BENCHMARKS.md). Then
    // the connection yields, so a client pipelining such reads cannot keep the thread
    // from the other connections' I/O.
    if !clustered && let Some(r) = api.handle_if_cheap(call, auth, &body) {
        tokio::task::yield_now().await;
        return finished(call, r);
    }
    let lane = &app.work[usize::from(body.len() > LARGE_BODY)];
    let Ok(permit) = Arc::clone(lane).acquire_owned().await else {
        return shutting_down();
    };
    if app.closing.load(Ordering::Acquire) {
        return shutting_down();
    }
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &app.cluster {
        // The cluster holds a permit for its CPU work only, not while it waits on the
        // network.
        drop(permit);
        let Ok(call) = call.parse::<api::Call>() else {
            return refusal(StatusCode::NOT_FOUND, "unknown call");
        };
        let a = cluster
            .serve(
                call,
                auth,
                Bytes::from(body),
                min_seq.as_deref(),
                forwarded,
                Arc::clone(lane),
            )
            .await;
        if a.status >= 500 {
            tracing::warn!(call = call.path(), code = a.code, "cluster request refused");
        }
        let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut answer = envelope(status, a.body, a.code, a.status != 200);
        if let Some(w) = a.written
            && let Ok(v) = HeaderValue::from_str(&w)
        {
            answer.headers_mut().insert(crate::cluster::WRITTEN, v);
        }
        return (answer, a.code);
    }
    let api = Arc::clone(api);
    let auth = auth.map(str::to_owned);
    let work = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        finished(call, api.handle(call, auth.as_deref(), &body))
    });
    work.await.unwrap_or_else(|e| {
        tracing::error!(call, error = %e, "request work ended abnormally");
        refusal(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })
}

/// The answer to a call, a failure's detail (a storage error's paths) logged.
fn finished(call: &'static str, r: api::Response) -> (Answer, u32) {
    if let Some(detail) = &r.detail {
        tracing::error!(call, code = r.code.number(), %detail, "request failed");
    }
    answered(r, false)
}

enum Body {
    TooLarge,
    Broken,
}

/// Reads a body of at most `max` bytes, counting what it reads.
async fn read_body(mut body: Incoming, max: usize, metrics: &Metrics) -> Result<Vec<u8>, Body> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Body::Broken)?;
        if let Ok(data) = frame.into_data() {
            metrics.body_bytes.inc_by(data.len() as u64);
            if out.len() + data.len() > max {
                return Err(Body::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

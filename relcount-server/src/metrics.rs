//! `GET /metrics`: the server's and the engine's numbers in the Prometheus text format
//! (OpenMetrics), through the `prometheus-client` crate. Nothing here names a profile,
//! a token or a path.

use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use relcount::{Compactor, Engine};

/// A request's call and answer code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallCode {
    /// The call (`relations/get_counter`, ...), or `other` for a path that is none.
    pub call: &'static str,
    /// The envelope's code (0 on success), or the HTTP status of an answer outside
    /// the envelope (408, 503).
    pub code: u32,
}

/// Every metric the server keeps.
#[derive(Debug)]
pub struct Metrics {
    /// Unique in the process: the key of this instance's handles in [`Metrics::answered`].
    id: u64,
    registry: Registry,
    /// Requests answered, by call and code.
    pub requests: Family<CallCode, Counter>,
    /// Seconds from a request's headers to its answer, by call and code.
    pub latency: Family<CallCode, Histogram>,
    /// Request body bytes read.
    pub body_bytes: Counter,
    /// Connections refused at the connection limit.
    pub refused_connections: Counter,
    /// Connections open now.
    pub open_connections: Gauge,
}

/// One (metrics, call, code)'s counter and histogram, as a thread keeps them.
struct Handles {
    /// The metrics' id, the code and the call.
    key: (u64, u32, &'static str),
    requests: Counter,
    latency: Histogram,
}

/// The engine's numbers (and its compactor's, while it runs), read at each scrape.
/// The compactor is held weakly: the server's shutdown stops it by dropping its
/// last reference.
#[derive(Debug)]
struct EngineNumbers(Arc<Engine>, Option<Weak<Compactor>>);

impl Collector for EngineNumbers {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let engine = &self.0;
        let gauge = |encoder: &mut DescriptorEncoder, name, help, value: i64| {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric)
        };
        let count = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            &mut encoder,
            "relcount_relations",
            "Relations held",
            count(engine.relation_count()),
        )?;
        gauge(
            &mut encoder,
            "relcount_profiles",
            "Live profiles held, over every database",
            count(engine.profile_count() as u64),
        )?;
        gauge(
            &mut encoder,
            "relcount_relation_types",
            "Relation types defined",
            count(engine.relation_type_count() as u64),
        )?;
        if let Some(rss) = relcount::api::resident_bytes() {
            gauge(
                &mut encoder,
                "relcount_resident_memory_bytes",
                "Resident memory of the process",
                count(rss),
            )?;
        }
        if let Some(compactor) = self.1.as_ref().and_then(Weak::upgrade) {
            let metric = encoder.encode_descriptor(
                "relcount_compactions",
                "Compactions the server's compactor finished",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(compactor.compactions()).encode(metric)?;
        }
        if let Some(stats) = engine.log_stats() {
            if let Ok(bytes) = engine.log_bytes() {
                gauge(
                    &mut encoder,
                    "relcount_log_bytes",
                    "Bytes of write log a restart would replay",
                    count(bytes),
                )?;
            }
            let metric = encoder.encode_descriptor(
                "relcount_log_fsyncs",
                "fsyncs of the write log",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(stats.fsyncs).encode(metric)?;
            let metric = encoder.encode_descriptor(
                "relcount_log_fsync_seconds",
                "Total time of the write log's fsyncs (divide by relcount_log_fsyncs_total for their mean latency)",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(stats.fsync_seconds).encode(metric)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// The metrics of a server over `engine`, compacted by `compactor` if any.
    #[must_use]
    pub fn new(engine: Arc<Engine>, compactor: Option<Weak<Compactor>>) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<CallCode, Counter>::default();
        registry.register(
            "relcount_requests",
            "API requests answered, by call and code",
            requests.clone(),
        );
        let latency = Family::<CallCode, Histogram>::new_with_constructor(|| {
            // 10 us to about 10 s.
            Histogram::new(exponential_buckets(1e-5, 4.0, 11))
        });
        registry.register(
            "relcount_request_seconds",
            "Seconds from a request's headers to its answer, by call and code",
            latency.clone(),
        );
        let body_bytes = Counter::default();
        registry.register(
            "relcount_request_body_bytes",
            "Request body bytes read",
            body_bytes.clone(),
        );
        let refused_connections = Counter::default();
        registry.register(
            "relcount_refused_connections",
            "Connections refused at the connection limit",
            refused_connections.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "relcount_open_connections",
            "Connections open now",
            open_connections.clone(),
        );
        registry.register_collector(Box::new(EngineNumbers(engine, compactor)));
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Metrics {
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            registry,
            requests,
            latency,
            body_bytes,
            refused_connections,
            open_connections,
        }
    }

    /// Counts one answered request.
    ///
    /// Each thread keeps the handles of the (call, code) pairs it has counted, so a
    /// request touches the two metrics' atomics and no family's lock or hash.
    pub fn answered(&self, call: &'static str, code: u32, seconds: f64) {
        thread_local! {
            static HANDLES: std::cell::RefCell<Vec<Handles>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let key = (self.id, code, call);
        HANDLES.with_borrow_mut(|handles| {
            let i = match handles.iter().position(|h| h.key == key) {
                Some(i) => i,
                None => {
                    // Bounded: a thread counts few pairs (calls times codes).
                    if handles.len() >= 256 {
                        handles.clear();
                    }
                    let label = CallCode { call, code };
                    handles.push(Handles {
                        key,
                        requests: self.requests.get_or_create(&label).clone(),
                        latency: self.latency.get_or_create(&label).clone(),
                    });
                    handles.len() - 1
                }
            };
            handles[i].requests.inc();
            handles[i].latency.observe(seconds);
        });
    }

    /// The text of a scrape.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

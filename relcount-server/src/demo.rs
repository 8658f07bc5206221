//! The demo data: the seed page's relation type and relation, then a Zipf fan-in
//! workload, and the ready `curl` line that reproduces the seed's request.

use relcount::workload::Workload;
use relcount::{Engine, Value};

/// The seed's relation type.
pub const REL_ID: u32 = 3;
const SEED_A: &str = "5c910f6bc484d023b1309bee";
const SEED_B: &str = "5c910938c484d023b1309bab";
/// Relations imported per batch (each one log record with a data directory).
const BATCH: usize = 50_000;

/// Loads the seed's relation and `relations` demo ones, reporting progress in the
/// log; a durable engine then folds the load's log into one snapshot.
///
/// # Errors
///
/// As the engine's writes and compaction.
pub fn load(engine: &Engine, relations: usize, durable: bool) -> Result<(), relcount::Error> {
    let started = std::time::Instant::now();
    let w = Workload::new(100_000, 1_000_000, 42);
    debug_assert_eq!(w.rel_id, REL_ID);
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
    let mut source = w.relations(relations);
    let (mut loaded, mut reported) = (0usize, 0usize);
    loop {
        let batch: Vec<_> = source.by_ref().take(BATCH).collect();
        if batch.is_empty() {
            break;
        }
        loaded += engine.import_relations(
            w.rel_id,
            batch
                .iter()
                .map(|r| (r.a.as_str(), r.b.as_str(), r.weights())),
        )?;
        if loaded >= reported + relations / 10 {
            tracing::info!(loaded, of = relations, "loading the demo relations");
            reported = loaded;
        }
    }
    if durable {
        engine.compact()?;
    }
    tracing::info!(
        relations = engine.relation_count(),
        profiles = engine.profile_count(),
        seconds = started.elapsed().as_secs_f64(),
        "loaded the demo data"
    );
    Ok(())
}

/// The `curl` line to try first: the seed's `get_counter`, or with `--empty` the
/// seed's relation type's definition. `token` is what to show for the token (the
/// token itself when it is a random one, else a shell variable).
#[must_use]
pub fn try_line(url: &str, token: &str, empty: bool) -> String {
    let auth = format!("-H \"Authorization: Bearer {token}\"");
    if empty {
        format!(
            "curl -s -X POST {url}/api/v1.1/relations/define {auth} -H 'Content-Type: application/json' -d '{{\"rel_id\": {REL_ID}, \"db_a\": 1, \"db_b\": 2, \"props\": {{\"Donate\": {{\"type\": \"int\", \"top\": 10}}, \"Like\": {{\"type\": \"int\", \"sum\": true}}, \"Subscriber\": {{\"type\": \"bool\"}}}}}}'"
        )
    } else {
        format!(
            "curl -s -X POST {url}/api/v1.1/relations/get_counter {auth} -H 'Content-Type: application/json' -d '{{\"rel_id\": {REL_ID}, \"matching\": \"profile_id\", \"profile_id\": \"{SEED_A}\"}}'"
        )
    }
}

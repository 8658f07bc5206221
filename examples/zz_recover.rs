//! scratch: recovery memory against log length.
use relcount::workload::Workload;
use relcount::{Engine, SyncPolicy, Value};
fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[2]);
    let w = Workload::new(100_000, 1_000_000, 42);
    if args[1] == "build" {
        let relations: usize = args[3].parse()?;
        let log_writes: usize = args[4].parse()?;
        let _ = std::fs::remove_dir_all(&dir);
        let e = Engine::builder()
            .auto_compact(relcount::AutoCompact {
                growth_percent: 0,
                min_log_bytes: 0,
            })
            .open(&dir, SyncPolicy::No)?;
        e.define(Workload::seed_schema(w.rel_id))?;
        let rels: Vec<_> = w.relations(relations).collect();
        for chunk in rels.chunks(100_000) {
            e.import_relations(
                w.rel_id,
                chunk
                    .iter()
                    .map(|r| (r.a.as_str(), r.b.as_str(), r.weights())),
            )?;
        }
        e.compact()?;
        for i in 0..log_writes {
            let r = &rels[i % rels.len()];
            e.strengthen(
                w.rel_id,
                r.a.as_str(),
                r.b.as_str(),
                &[("Like", Value::Int(1))],
            )?;
        }
        println!(
            "snapshot {} MB, log {} MB",
            std::fs::metadata(dir.join("snapshot.bin"))?.len() >> 20,
            e.log_bytes()? >> 20
        );
    } else {
        let t = std::time::Instant::now();
        let e = Engine::builder().open(&dir, SyncPolicy::No)?;
        println!(
            "open {:.1} s, {} relations, rss after open {} MB",
            t.elapsed().as_secs_f64(),
            e.relation_count(),
            rss_kb() >> 10
        );
    }
    Ok(())
}

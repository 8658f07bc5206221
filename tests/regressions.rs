//! Named regression tests: each failure found by the model, stress or fuzz tests, kept
//! with a one-line postmortem.

use relcount::{Engine, PropSpec, RelationType, Value};

/// Postmortem: while a profile's delete cascade ran, an attach re-created the same id
/// as a new profile, so a target held two relations from one id (listed twice, twice
/// in a top list). Now a write that would re-create an id waits for its delete to end.
/// Found by `stress::readers_never_see_a_torn_counter` ("rows not ordered by
/// initiator").
#[test]
fn recreating_an_id_during_its_delete_never_duplicates_it() {
    let engine = Engine::builder().shards(8).build();
    engine
        .define(RelationType::new(1, 1, 2).prop("W", PropSpec::int().top(5)))
        .expect("schema");
    let targets: Vec<String> = (0..3000).map(|i| format!("t{i}")).collect();
    for t in &targets {
        engine
            .attach(1, t, "b", &[("W", Value::Int(1))])
            .expect("attach");
    }
    std::thread::scope(|s| {
        s.spawn(|| engine.delete_profile(2, "b").expect("delete"));
        s.spawn(|| {
            while engine.contains_profile(2, "b") {
                std::hint::spin_loop();
            }
            // The delete has started (the id no longer reads as a profile).
            for t in targets.iter().rev().take(50) {
                engine
                    .attach(1, t, "b", &[("W", Value::Int(2))])
                    .expect("re-attach");
                let page = engine.list(1, t, 0, 1000).expect("list");
                assert_eq!(page.total_count, 1, "{t}: {page:?}");
                assert_eq!(page.rows[0].props, [("W".to_string(), Value::Int(2))]);
            }
        });
    });
    let relations: u64 = targets
        .iter()
        .map(|t| engine.get_counter(1, t).map_or(0, |c| c.total()))
        .sum();
    assert_eq!(relations, 50);
    assert_eq!(engine.relation_count(), 50);
}

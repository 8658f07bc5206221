//! `snapshot`: arbitrary bytes into the snapshot loader: an error or an engine, never a
//! panic, and never an allocation beyond the input's size (lengths are checked against
//! what is left before anything is allocated). Valid snapshots in the seed corpus let
//! mutations reach every record type past the checksum.
//! Run: `cargo fuzz run snapshot` (nightly) or `cargo fuzz run snapshot --sanitizer none`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relcount::Engine;

fuzz_target!(|bytes: &[u8]| {
    // Mutations rarely keep the checksum right, so half the inputs get a fresh one:
    // the loader's record parsing is fuzzed, not only its checksum check.
    let mut owned = bytes.to_vec();
    if owned.len() > 8 && owned.len() % 2 == 0 {
        let tail = owned.len() - 8;
        let sum = relcount::xxh64(&owned[..tail]).to_le_bytes();
        owned[tail..].copy_from_slice(&sum);
    }
    let _ = Engine::load_snapshot_bytes(&owned);
});

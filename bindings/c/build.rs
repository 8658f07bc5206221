//! Writes `include/relcount.h` from the crate's `extern "C"` items (cbindgen, with
//! `cbindgen.toml`), only when its text changes, so a build leaves an up-to-date
//! header unchanged. `.ci/run` checks that the committed header is this one.

use std::path::Path;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&dir);
    println!("cargo::rerun-if-changed=src");
    println!("cargo::rerun-if-changed=cbindgen.toml");
    let config =
        cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let header = dir.join("include").join("relcount.h");
    let mut text = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen reads the crate")
        .write(&mut text);
    if std::fs::read(&header).ok().as_deref() != Some(&text[..]) {
        std::fs::write(&header, &text).expect("include/relcount.h is writable");
    }
}

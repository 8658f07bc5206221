//! Builds `tests/seed.c` and the README's C example with the system C compiler
//! against the static library and the generated header, and runs each: plainly, under the address sanitizer (with
//! UBSan and leak checks) where the compiler has it, and under valgrind where it is
//! installed. The program checks the seed example, refused calls (each must answer its
//! code and message, not abort) and a durable reopen; any failed check, sanitizer
//! report or valgrind error fails this test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>/deps`, where cargo put the `librelcount_c.a` it built with this
/// test (every crate type of the library is built for its integration tests; only
/// `cargo build` copies them up to `target/<profile>`).
fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// The C example of this crate's README, written to a file of its own.
fn readme_example() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).expect("README.md");
    let start = readme.find("```c\n").expect("the README has a C example") + "```c\n".len();
    let len = readme[start..].find("```").expect("the C example ends");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme.c");
    std::fs::write(&path, &readme[start..start + len]).expect("target/tmp is writable");
    path
}

/// Compiles `source` with `extra` flags; `None` when the compiler refuses the flags
/// themselves (a sanitizer it lacks), a panic when the program does not build.
fn compile(source: &Path, name: &str, extra: &[&str]) -> Option<PathBuf> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let lib = deps_dir().join("librelcount_c.a");
    assert!(lib.exists(), "{} was not built", lib.display());
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"])
        .args(extra)
        .arg(source)
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("the C compiler ({cc}) did not start: {e}"));
    if status.success() {
        return Some(out);
    }
    assert!(!extra.is_empty(), "{} did not compile", source.display());
    None
}

/// Runs `cmd` with a fresh data directory as its argument; panics with its output
/// unless it exits 0 and prints `expect`.
fn run(what: &str, mut cmd: Command, expect: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("c-seed-data-{what}"));
    let _ = std::fs::remove_dir_all(&dir);
    let out = cmd.arg(&dir).output().expect("the program starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what}: {}\n{text}", out.status);
    assert!(text.contains(expect), "{what}: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_c_program_passes_plain_under_asan_and_under_valgrind() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/seed.c");
    check(&seed, "c-seed", "every check passed");
}

#[test]
fn the_readme_c_example_runs() {
    check(
        &readme_example(),
        "c-readme",
        "top donor 5c910938c484d023b1309bab (20)",
    );
}

/// Builds `source` and runs it plainly, under the sanitizers and under valgrind,
/// each run printing `expect`.
fn check(source: &Path, name: &str, expect: &str) {
    let plain = compile(source, name, &[]).expect("plain build");
    run(&format!("{name}-plain"), Command::new(&plain), expect);

    let asan_name = format!("{name}-asan");
    let sanitizers = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"];
    match compile(source, &asan_name, &sanitizers) {
        Some(asan) => {
            let mut cmd = Command::new(asan);
            cmd.env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
                .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1");
            run(&asan_name, cmd, expect);
        }
        None => eprintln!("the C compiler has no address sanitizer: skipped"),
    }

    if Command::new("valgrind").arg("--version").output().is_ok() {
        let mut cmd = Command::new("valgrind");
        cmd.args([
            "-q",
            "--error-exitcode=3",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
        ])
        .arg(&plain);
        run(&format!("{name}-valgrind"), cmd, expect);
    } else {
        eprintln!("valgrind is not installed: skipped");
    }
}

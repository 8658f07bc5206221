//! Builds `tests/seed.c` with the system C compiler against the static library and
//! the generated header, and runs it: plainly, under the address sanitizer (with
//! UBSan and leak checks) where the compiler has it, and under valgrind where it is
//! installed. The program checks the seed example, refused calls (each must answer its
//! code and message, not abort) and a durable reopen; any failed check, sanitizer
//! report or valgrind error fails this test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>`, where cargo put `librelcount_c.a` for this test.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// Compiles the program with `extra` flags; `None` when the compiler refuses the
/// flags themselves (a sanitizer it lacks), a panic when the program does not build.
fn compile(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let lib = target_dir().join("librelcount_c.a");
    assert!(lib.exists(), "{} was not built", lib.display());
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"])
        .args(extra)
        .arg(crate_dir.join("tests/seed.c"))
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
    assert!(!extra.is_empty(), "tests/seed.c did not compile");
    None
}

/// Runs `cmd` with a fresh data directory as its argument; panics with its output
/// unless it exits 0.
fn run(what: &str, mut cmd: Command) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("c-seed-data-{what}"));
    let _ = std::fs::remove_dir_all(&dir);
    let out = cmd.arg(&dir).output().expect("the program starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what}: {}\n{text}", out.status);
    assert!(text.contains("every check passed"), "{what}: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_c_program_passes_plain_under_asan_and_under_valgrind() {
    let plain = compile("c-seed", &[]).expect("plain build");
    run("plain", Command::new(&plain));

    match compile("c-seed-asan", &["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]) {
        Some(asan) => {
            let mut cmd = Command::new(asan);
            cmd.env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
                .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1");
            run("asan", cmd);
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
        run("valgrind", cmd);
    } else {
        eprintln!("valgrind is not installed: skipped");
    }
}

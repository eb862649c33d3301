//! Helpers shared by the command-line tests: run the built `gpt1` binary and check its result.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub fn gpt1(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpt1"))
        .args(args)
        .output()
        .expect("run gpt1")
}

/// Runs `gpt1 args`, asserts success, returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = gpt1(args);
    assert!(
        o.status.success(),
        "gpt1 {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `gpt1 args`, asserts a non-zero exit without a panic and `needle` in stderr.
pub fn fails(args: &[&str], needle: &str) -> String {
    let o = gpt1(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "gpt1 {args:?} should fail");
    assert!(
        err.contains(needle),
        "gpt1 {args:?}: expected {needle:?} in:\n{err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    err
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

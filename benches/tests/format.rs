//! Runs the built `kiln-bench` binary on the test GPU (lavapipe in CI) with small sizes and a
//! short timing budget, and checks its output format: every stdout line a JSON object with the
//! six keys the baselines use, so that results join on (workload, size). No timing asserts.

use serde_json::Value;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEYS: [&str; 6] = ["framework", "adapter", "workload", "size", "metric", "value"];
/// Far above the few seconds this takes on lavapipe: only a hang should hit it.
const TIMEOUT: Duration = Duration::from_secs(300);

/// The test GPU, or `None` (and a SKIPPED line) without one; a failure under KILN_REQUIRE_GPU=1.
fn gpu_available(test: &str) -> bool {
    if kiln_core::Device::gpu().is_ok() {
        return true;
    }
    if std::env::var("KILN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        panic!("{test}: KILN_REQUIRE_GPU=1 but no GPU adapter was found");
    }
    eprintln!("SKIPPED {test}: no GPU adapter (set KILN_REQUIRE_GPU=1 to make this a failure)");
    false
}

/// Runs the binary with `args`, killing it after `TIMEOUT`: (exit success, stdout, stderr).
fn run_bench(args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln-bench"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // Silences lavapipe's harmless "XDG_RUNTIME_DIR is invalid or not set".
        cmd.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    let mut child = cmd.spawn().expect("start kiln-bench");
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).expect("read kiln-bench output");
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout piped")));
    let err = drain(Box::new(child.stderr.take().expect("stderr piped")));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for kiln-bench") {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kiln-bench did not finish within {TIMEOUT:?}; stderr so far:\n{}", err.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.success(), out.join().expect("stdout thread"), err.join().expect("stderr thread"))
}

#[test]
fn small_run_prints_joinable_json_lines() {
    if !gpu_available("small_run_prints_joinable_json_lines") {
        return;
    }
    // --min-time 0: 3 warm-up and 5 timed iterations per result, enough to check the format.
    let (ok, stdout, stderr) =
        run_bench(&["--small", "--only", "W1,W8b", "--device", "gpu", "--min-time", "0", "--max-seconds", "120"]);
    assert!(ok, "kiln-bench failed; stderr:\n{stderr}");

    let mut seen = Vec::new();
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nstderr:\n{stderr}"));
        let obj = v.as_object().unwrap_or_else(|| panic!("not a JSON object: {line}"));
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want, "keys of {line}");
        for k in ["framework", "adapter", "workload", "size", "metric"] {
            assert!(obj[k].as_str().is_some_and(|s| !s.is_empty()), "{k} is not a non-empty string: {line}");
        }
        assert!(obj["framework"].as_str().is_some_and(|f| f.starts_with("kiln")), "framework: {line}");
        let value = obj["value"].as_f64().unwrap_or_else(|| panic!("value is not a number: {line}"));
        assert!(value.is_finite() && value > 0.0, "value not positive and finite: {line}");
        let field = |k: &str| obj[k].as_str().unwrap_or_default().to_string();
        seen.push((field("workload"), field("size"), field("metric")));
    }

    // The (workload, size) keys must be exactly the baselines' for --small.
    for want in [("W1", "256", "GFLOP/s"), ("W1", "512", "GFLOP/s"), ("W8b", "1000", "us/op")] {
        let found = seen.iter().any(|(w, s, m)| (w.as_str(), s.as_str(), m.as_str()) == want);
        assert!(found, "no {want:?} line in:\n{stdout}\nstderr:\n{stderr}");
    }
    assert!(seen.iter().all(|(w, _, _)| w == "W1" || w == "W8b"), "--only W1,W8b ran more:\n{stdout}");
}

#[test]
fn bad_arguments_exit_with_usage() {
    let (ok, stdout, stderr) = run_bench(&["--max-seconds", "soon"]);
    assert!(!ok, "a bad --max-seconds must fail");
    assert!(stdout.is_empty(), "no results on a usage error: {stdout}");
    assert!(stderr.contains("usage: kiln-bench"), "usage on stderr: {stderr}");
}

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

/// Whether the test GPU is there: a SKIPPED line without one; a failure under KILN_REQUIRE_GPU=1.
fn gpu_available(test: &str) -> bool {
    kiln_testkit::gpu_or_skip(test, kiln_core::Device::gpu()).is_some()
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

/// Every stdout line parsed: a JSON object with the six keys (non-empty strings, a positive
/// finite value, framework `kiln…`) and exactly the `extra` keys besides, each a finite number.
fn result_lines(stdout: &str, stderr: &str, extra: &[&str]) -> Vec<serde_json::Map<String, Value>> {
    let mut out = Vec::new();
    for line in stdout.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nstderr:\n{stderr}"));
        let obj = v.as_object().unwrap_or_else(|| panic!("not a JSON object: {line}")).clone();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want: Vec<&str> = KEYS.iter().chain(extra).copied().collect();
        want.sort_unstable();
        assert_eq!(keys, want, "keys of {line}");
        for k in ["framework", "adapter", "workload", "size", "metric"] {
            assert!(obj[k].as_str().is_some_and(|s| !s.is_empty()), "{k} is not a non-empty string: {line}");
        }
        assert!(obj["framework"].as_str().is_some_and(|f| f.starts_with("kiln")), "framework: {line}");
        let value = obj["value"].as_f64().unwrap_or_else(|| panic!("value is not a number: {line}"));
        assert!(value.is_finite() && value > 0.0, "value not positive and finite: {line}");
        for k in extra {
            assert!(obj[*k].as_f64().is_some_and(f64::is_finite), "{k} is not a finite number: {line}");
        }
        out.push(obj);
    }
    out
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
        // W8b also splits its time into recording and the readback.
        let extra: &[&str] = if line.contains("\"W8b\"") { &["record_us_per_op", "readback_us"] } else { &[] };
        for obj in result_lines(line, &stderr, extra) {
            let field = |k: &str| obj[k].as_str().unwrap_or_default().to_string();
            seen.push((field("workload"), field("size"), field("metric")));
        }
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

/// The memory keys every model workload adds on a GPU (`allocs_per_step`: buffers the pool had
/// to create per timed step).
const MEMORY_KEYS: [&str; 4] = ["peak_pool_mib", "peak_live_mib", "live_mib", "allocs_per_step"];

/// W6d (W6 with dropout) and W10 (the char_transformer step) with `--small`: their (workload,
/// size, metric) keys, the memory keys (peak pool ≥ peak live ≥ live now > 0), and W10's own keys
/// (2 timed steps of `--steps 22`, tokens/s matching ms/step, a finite last loss).
#[test]
fn small_model_runs_report_memory_and_w10() {
    if !gpu_available("small_model_runs_report_memory_and_w10") {
        return;
    }
    let (ok, stdout, stderr) = run_bench(&[
        "--small",
        "--only",
        "W6d,W10",
        "--device",
        "gpu",
        "--min-time",
        "0",
        "--steps",
        "22",
        "--max-seconds",
        "240",
    ]);
    assert!(ok, "kiln-bench failed; stderr:\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "one line each for W6d and W10:\n{stdout}\nstderr:\n{stderr}");
    let w6d = &result_lines(lines[0], &stderr, &MEMORY_KEYS)[0];
    let w10_keys: Vec<&str> = MEMORY_KEYS.iter().copied().chain(["tokens_per_s", "steps", "last_loss_bits"]).collect();
    let w10 = &result_lines(lines[1], &stderr, &w10_keys)[0];
    let key = |o: &serde_json::Map<String, Value>| {
        (
            o["workload"].as_str().map(String::from),
            o["size"].as_str().map(String::from),
            o["metric"].as_str().map(String::from),
        )
    };
    let owned = |w: &str, s: &str, m: &str| (Some(w.to_string()), Some(s.to_string()), Some(m.to_string()));
    assert_eq!(key(w6d), owned("W6d", "b2s64", "tokens/s"), "{stdout}");
    assert_eq!(key(w10), owned("W10", "b8s32", "ms/step"), "{stdout}");
    for o in [w6d, w10] {
        let n = |k: &str| o[k].as_f64().unwrap_or(f64::NAN);
        assert!(
            n("peak_pool_mib") >= n("peak_live_mib") && n("peak_live_mib") >= n("live_mib") && n("live_mib") > 0.0,
            "memory keys out of order: {o:?}"
        );
        assert!(n("allocs_per_step") >= 0.0, "allocs_per_step must be a count: {o:?}");
    }
    let n = |k: &str| w10[k].as_f64().unwrap_or(f64::NAN);
    assert_eq!(n("steps"), 2.0, "{w10:?}");
    let tokens = 8.0 * 32.0 * 1e3 / n("value");
    assert!(
        (n("tokens_per_s") - tokens).abs() <= 1e-3 * tokens,
        "tokens/s {} vs {tokens} from ms/step: {w10:?}",
        n("tokens_per_s")
    );
    // A character model at step 22 of a warm-up is near the uniform guess, log2(83) ≈ 6.4 bits.
    assert!(n("last_loss_bits") > 1.0 && n("last_loss_bits") < 8.0, "{w10:?}");
}

/// W11 (MiniLM embeddings) with `--small` on the CPU backend, fp32 and `--amp`: one line each,
/// sentences/s matching ms_per_batch (batch 8).
#[test]
fn w11_reports_sentences_per_second() {
    for amp in [false, true] {
        let mut args = vec!["--small", "--only", "W11", "--device", "cpu", "--min-time", "0", "--max-seconds", "120"];
        if amp {
            args.push("--amp");
        }
        let (ok, stdout, stderr) = run_bench(&args);
        assert!(ok, "kiln-bench failed; stderr:\n{stderr}");
        let lines = result_lines(&stdout, &stderr, &["ms_per_batch"]);
        assert_eq!(lines.len(), 1, "{stdout}");
        let o = &lines[0];
        assert_eq!(
            (o["workload"].as_str(), o["size"].as_str(), o["metric"].as_str()),
            (Some("W11"), Some("b8s32"), Some("sentences/s"))
        );
        let (value, ms) = (o["value"].as_f64().unwrap_or(f64::NAN), o["ms_per_batch"].as_f64().unwrap_or(f64::NAN));
        assert!((value - 8e3 / ms).abs() <= 1e-3 * value, "sentences/s {value} vs ms/batch {ms}");
        assert_eq!(o["framework"].as_str().is_some_and(|f| f.ends_with("-amp")), amp, "{stdout}");
    }
}

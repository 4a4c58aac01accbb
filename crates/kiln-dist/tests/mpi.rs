//! Data parallelism across processes: each test launches this same test binary under
//! `mpirun -n N` (its ignored `rank` test is the per-process body, chosen by
//! `KILN_DIST_SCENARIO`) and checks what every rank printed, and that the job ended in time.
//!
//! Needs the `mpi` feature and Open MPI's `mpirun` on PATH (`.ci/run` installs it):
//! `cargo test -p kiln-dist --features mpi --test mpi`.
#![cfg(feature = "mpi")]

mod common;

use common::{Kind, Tiny, assert_close, train_rank_keep, train_reference};
use kiln_core::Device;
use kiln_dist::{DdpConfig, DistError, DistributedDataParallel};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SCENARIO: &str = "KILN_DIST_SCENARIO";

/// The body every rank runs. Not a test of its own: `mpirun` starts it through the launchers
/// below, which set `KILN_DIST_SCENARIO`.
#[test]
#[ignore = "per-rank body of the mpirun tests"]
fn rank() {
    let scenario = std::env::var(SCENARIO).expect("run by the mpirun tests, which set KILN_DIST_SCENARIO");
    let comm = kiln_dist::init().expect("join the MPI job");
    let (r, world) = (comm.rank(), comm.world());
    let say = |what: String| println!("RANK {r}/{world} {what}");
    let timeout = |s: f64| DdpConfig { bucket_bytes: 256, timeout: Duration::from_secs_f64(s) };
    match scenario.as_str() {
        // Both models, 10 steps, against a one-process reference computed here.
        "equal-cpu" | "equal-gpu" => {
            let gpu = scenario == "equal-gpu";
            let device = if gpu { kiln_dist::local_device().expect("this rank's GPU") } else { Device::cpu() };
            assert_eq!(device.is_gpu(), gpu, "{}", device.describe());
            let mut comm = comm;
            for kind in [Kind::Mlp, Kind::Transformer] {
                // On the rank's own device: only the batch split differs from the reference.
                let want = train_reference(kind, &device);
                let (got, back) = train_rank_keep(kind, &device, comm, timeout(120.0), 1 + r % 2).expect("training");
                comm = back;
                assert_close(&format!("{kind:?} on rank {r} of {world}"), &got, &want, 1e-5);
                say(format!("PASS {kind:?} bits {:016x}", bits_digest(&got)));
            }
        }
        // Rank 1 fails before step 3 and leaves; the others must time out, not hang.
        "error" => {
            let model = Tiny::build(Kind::Mlp, 1, 17, &Device::cpu()).expect("model");
            let mut ddp = DistributedDataParallel::new(&model, comm, timeout(2.0)).expect("join");
            for step in 0..5u32 {
                if r == 1 && step == 3 {
                    say("LEAVES".into());
                    return;
                }
                let t = Instant::now();
                match ddp.backward(&model.loss(&[step], &Device::cpu()).expect("loss"), 1) {
                    Ok(()) => {}
                    Err(DistError::Timeout { .. }) => {
                        say(format!("TIMEOUT after {:.1} s", t.elapsed().as_secs_f64()));
                        return; // dropping the poisoned group aborts the job
                    }
                    Err(e) => panic!("rank {r}: expected a timeout, got {e}"),
                }
            }
            panic!("rank {r}: finished every step although rank 1 left");
        }
        // Rank 1's process dies mid-training.
        "die" => {
            let model = Tiny::build(Kind::Mlp, 1, 17, &Device::cpu()).expect("model");
            let mut ddp = DistributedDataParallel::new(&model, comm, timeout(5.0)).expect("join");
            for step in 0..50u32 {
                if r == 1 && step == 2 {
                    say("DIES".into());
                    std::process::exit(7);
                }
                if let Err(e) = ddp.backward(&model.loss(&[step], &Device::cpu()).expect("loss"), 1) {
                    say(format!("ERROR {e}"));
                    return;
                }
            }
        }
        // Rank 2 (the last) builds a narrower model: every rank must refuse at start.
        "mismatch" => {
            let hidden = if r == world - 1 { 16 } else { 17 };
            let model = Tiny::build(Kind::Mlp, 1, hidden, &Device::cpu()).expect("model");
            match DistributedDataParallel::new(&model, comm, timeout(30.0)) {
                Err(DistError::ModelMismatch { rank, .. }) if rank == world - 1 => say("MISMATCH".into()),
                Err(e) => panic!("rank {r}: expected a mismatch, got {e}"),
                Ok(_) => panic!("rank {r}: a mismatched model was accepted"),
            }
        }
        other => panic!("unknown scenario {other:?}"),
    }
}

/// A digest of every parameter's bits: ranks must agree exactly, not just within tolerance.
fn bits_digest(values: &[Vec<f32>]) -> u64 {
    values
        .iter()
        .flatten()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ u64::from(x.to_bits())).wrapping_mul(0x0100_0000_01b3))
}

struct Job {
    ok: bool,
    out: String,
    took: Duration,
}

/// Runs the `rank` body on `n` processes (none: directly, without mpirun) with `scenario`.
fn launch(n: Option<usize>, scenario: &str, limit: Duration) -> Job {
    // One job at a time: their time limits assume the cores are theirs (CI has two).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().expect("test binary path");
    let body = ["rank", "--exact", "--ignored", "--nocapture", "--test-threads=1"];
    let mut cmd = match n {
        Some(n) => {
            let mut c = Command::new("mpirun");
            // --oversubscribe: 3 ranks on CI's 2 cores; vader without single-copy: containers
            // forbid the ptrace-based copy.
            c.args(["-n", &n.to_string(), "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none"])
                .arg(&exe)
                .args(body);
            c
        }
        None => {
            let mut c = Command::new(&exe);
            c.args(body);
            c
        }
    };
    cmd.env(SCENARIO, scenario)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("KILN_DEVICE")
        .stdin(Stdio::null());
    let start = Instant::now();
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("mpirun on PATH (install openmpi-bin)");
    // Read both pipes on threads so a chatty job cannot block on a full pipe.
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || std::io::read_to_string(&mut so).unwrap_or_default());
    let err_t = std::thread::spawn(move || std::io::read_to_string(&mut se).unwrap_or_default());
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{scenario} on {n:?} ranks still running after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = format!("{}\n--- stderr ---\n{}", out_t.join().unwrap_or_default(), err_t.join().unwrap_or_default());
    Job { ok: status.success(), out, took: start.elapsed() }
}

/// The ranks' report lines containing `what` (libtest may print its `test rank ...` first).
fn lines<'a>(job: &'a Job, what: &str) -> Vec<&'a str> {
    job.out.lines().filter_map(|l| l.find("RANK ").map(|i| &l[i..])).filter(|l| l.contains(what)).collect()
}

fn equal(scenario: &str, worlds: &[usize], limit: Duration) {
    for &n in worlds {
        let job = launch(Some(n), scenario, limit);
        assert!(job.ok, "{scenario} on {n} ranks failed:\n{}", job.out);
        for kind in ["Mlp", "Transformer"] {
            let pass = lines(&job, &format!("PASS {kind} "));
            assert_eq!(pass.len(), n, "{scenario}, {n} ranks, {kind}: every rank passes\n{}", job.out);
            let bits: Vec<&str> = pass.iter().filter_map(|l| l.split("bits ").nth(1)).collect();
            assert!(bits.windows(2).all(|w| w[0] == w[1]), "ranks differ bit for bit: {pass:?}");
        }
        eprintln!("{scenario} on {n} ranks: {:.1} s", job.took.as_secs_f64());
    }
}

#[test]
fn processes_on_the_cpu_backend_train_like_one_process() {
    equal("equal-cpu", &[1, 2, 3], Duration::from_secs(120));
}

#[test]
fn processes_on_gpu_devices_train_like_one_process() {
    if Device::gpu().is_err() && std::env::var("KILN_REQUIRE_GPU").as_deref() != Ok("1") {
        eprintln!("SKIPPED processes_on_gpu_devices_train_like_one_process (no GPU adapter)");
        return;
    }
    equal("equal-gpu", &[2, 3], Duration::from_secs(300));
}

#[test]
fn without_mpirun_the_program_is_one_rank_and_trains() {
    let job = launch(None, "equal-cpu", Duration::from_secs(60));
    assert!(job.ok, "{}", job.out);
    assert_eq!(lines(&job, "RANK 0/1 PASS").len(), 2, "{}", job.out);
}

#[test]
fn a_rank_that_leaves_mid_training_makes_the_others_time_out() {
    let job = launch(Some(3), "error", Duration::from_secs(60));
    assert_eq!(lines(&job, "LEAVES").len(), 1, "{}", job.out);
    let timeouts = lines(&job, "TIMEOUT after");
    assert_eq!(timeouts.len(), 2, "ranks 0 and 2 report the timeout:\n{}", job.out);
    assert!(!job.ok, "the poisoned ranks abort the job");
    assert!(job.took < Duration::from_secs(40), "took {:?}", job.took);
}

#[test]
fn a_rank_that_dies_ends_the_job_in_bounded_time() {
    let job = launch(Some(2), "die", Duration::from_secs(60));
    assert_eq!(lines(&job, "DIES").len(), 1, "{}", job.out);
    assert!(!job.ok, "a dead rank fails the job:\n{}", job.out);
    assert!(job.took < Duration::from_secs(40), "took {:?}", job.took);
}

#[test]
fn mismatched_models_are_refused_on_every_rank() {
    let job = launch(Some(3), "mismatch", Duration::from_secs(60));
    assert_eq!(lines(&job, "MISMATCH").len(), 3, "{}", job.out);
    assert!(job.ok, "a refusal at start leaves the job able to finish cleanly:\n{}", job.out);
}

//! Checkpoints survive crashes and reject damage. A child process (this test binary run again
//! with `KILN_CRASH_CHILD` set) saves checkpoints in a loop and is killed with SIGKILL at random
//! moments; after every kill the file on disk must load and hold one whole save, the last one
//! the child reported or the one it was writing. Damaged files (truncated, bit-flipped, wrong
//! dtype or shape, not safetensors at all) must each give a typed error and leave the model as
//! it was.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use kiln::prelude::*;
use kiln_nn::Module;
use kiln_nn::checkpoint;
use kiln_testkit::Rng;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the child: the checkpoint path it saves to.
const CHILD_PATH_ENV: &str = "KILN_CRASH_CHILD";
/// Set in the child: the step value of its first save.
const CHILD_START_ENV: &str = "KILN_CRASH_START";
const KILLS: usize = 50;
const READY: &str = "KILN_CHILD_READY";
const SAVED: &str = "KILN_CHILD_SAVED ";

/// A model whose tensors all hold one value, the save's step number, so that a torn file
/// (part one save, part another) cannot pass for a whole one. About 1 MiB, so that a save
/// takes long enough for kills to land in the middle of writing it.
struct Net {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    scale: Tensor,
}

impl Net {
    fn new(value: f64) -> Net {
        let d = Device::cpu();
        let p = |shape: &[usize]| Tensor::full(shape, value, &d).unwrap().with_grad();
        Net { w1: p(&[256, 512]), b1: p(&[512]), w2: p(&[512, 256]), scale: p(&[1]) }
    }

    fn set_all(&self, value: f64) {
        for (_, t) in self.named_parameters() {
            t.set_data(&Tensor::full(t.shape(), value, t.device()).unwrap()).unwrap();
        }
    }

    /// The single value every parameter holds, or a description of the mix found.
    fn uniform_value(&self) -> std::result::Result<f64, String> {
        let mut seen = Vec::new();
        for (name, t) in self.named_parameters() {
            let v = t.to_f64_vec().unwrap();
            let first = v[0];
            if let Some(i) = v.iter().position(|&x| x != first) {
                return Err(format!("{name} holds {first} at 0 and {} at {i}", v[i]));
            }
            seen.push((name, first));
        }
        if seen.iter().all(|(_, v)| *v == seen[0].1) {
            Ok(seen[0].1)
        } else {
            Err(format!("tensors disagree: {seen:?}"))
        }
    }
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.w1)?.add(&self.b1)?.relu()?.matmul(&self.w2)?.mul(&self.scale)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("w1".into(), self.w1.clone()),
            ("b1".into(), self.b1.clone()),
            ("w2".into(), self.w2.clone()),
            ("scale".into(), self.scale.clone()),
        ]
    }
}

/// The child's entry point: does nothing unless `KILN_CRASH_CHILD` is set. Then it saves
/// step after step to that path, printing each finished step, until it is killed.
#[test]
fn crash_child_save_loop() {
    let Ok(path) = std::env::var(CHILD_PATH_ENV) else { return };
    let start: u64 = std::env::var(CHILD_START_ENV).ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let net = Net::new(0.0);
    let mut out = std::io::stdout().lock();
    // libtest may have printed "test crash_child_save_loop ... " on this line already: the
    // markers go on lines of their own and the parent looks for them anywhere in a line.
    writeln!(out, "\n{READY}").unwrap();
    out.flush().unwrap();
    // A child whose parent died must not save forever.
    let deadline = Instant::now() + Duration::from_secs(30);
    for step in start.. {
        net.set_all(step as f64);
        checkpoint::save(&net, &path).unwrap();
        writeln!(out, "{SAVED}{step}").unwrap();
        out.flush().unwrap();
        if Instant::now() > deadline {
            break;
        }
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Names of the temporary files in `dir`.
fn temporaries(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn checkpoints_survive_sigkill_mid_save() {
    let dir = scratch_dir("crash");
    let path = dir.join("model.safetensors");
    // Step 0 is on disk before the first child starts, so there is always a previous version.
    checkpoint::save(&Net::new(0.0), &path).unwrap();
    let seed = std::env::var("KILN_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
    });
    eprintln!("crash schedule seed {seed} (rerun with KILN_CRASH_SEED={seed})");
    let mut rng = Rng::from_state(seed.max(1));
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let (mut on_disk, mut survived, mut killed_mid_write, mut saves) = (0u64, 0usize, 0usize, 0u64);
    let mut new_version_seen = 0usize;
    let mut left_behind = std::collections::BTreeSet::new();
    for kill in 0..KILLS {
        let start = on_disk + 1;
        let mut child = Command::new(&exe)
            .args(["crash_child_save_loop", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_PATH_ENV, &path)
            .env(CHILD_START_ENV, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A reader thread, so that waiting on the child can time out instead of hanging.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until the child is in its loop, so that the kill lands among the saves.
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if l.contains(READY) => break,
                Ok(_) => continue,
                Err(e) => {
                    let _ = child.kill();
                    panic!("kill {kill}: the child never got ready ({e}): {:?}", child.wait());
                }
            }
        }
        let nap = 5 + rng.below(56) as u64;
        std::thread::sleep(Duration::from_millis(nap));
        child.kill().unwrap(); // SIGKILL on Unix: no destructor, no flush, no cleanup
        let status = child.wait().unwrap();
        assert!(!status.success(), "kill {kill}: the child was not killed: {status:?}");
        reader.join().unwrap();
        // Everything the child printed before dying was still in the pipe.
        let acknowledged =
            rx.try_iter().filter_map(|l| l.split(SAVED).nth(1).and_then(|s| s.trim().parse::<u64>().ok())).last();
        let last_done = acknowledged.unwrap_or(on_disk);
        saves += last_done - on_disk;
        // Each save removes the temporaries of the dead children before it, so they never pile
        // up: at most the one this child was writing is new, and the older ones are gone once
        // it finished a save.
        let now = temporaries(&dir);
        let new: Vec<&String> = now.difference(&left_behind).collect();
        assert!(new.len() <= 1, "kill {kill}: more than one new temporary: {now:?}");
        killed_mid_write += new.len();
        if acknowledged.is_some() {
            assert!(
                now.is_subset(&new.iter().map(|s| s.to_string()).collect()),
                "kill {kill}: a finished save left stale temporaries: {left_behind:?} -> {now:?}"
            );
        }
        left_behind = now;

        let fresh = Net::new(-1.0);
        checkpoint::load(&fresh, &path).unwrap_or_else(|e| {
            panic!("kill {kill} (after {nap} ms, last finished save {last_done}): the checkpoint does not load: {e}")
        });
        let value = fresh.uniform_value().unwrap_or_else(|e| panic!("kill {kill}: torn checkpoint: {e}"));
        // The file is the last finished save, or the save in flight whose rename landed before
        // the child could report it.
        assert!(
            value == last_done as f64 || value == (last_done + 1) as f64,
            "kill {kill}: the checkpoint holds step {value}, but the last finished save was {last_done}"
        );
        if value > on_disk as f64 {
            new_version_seen += 1;
        }
        on_disk = value as u64;
        survived += 1;
    }
    eprintln!(
        "survived {survived}/{KILLS} SIGKILLs in {:.1} s: {saves} saves finished, {killed_mid_write} killed mid-write \
         (temporary left behind), {new_version_seen} kills after a new version landed",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(survived, KILLS);
    // The schedule must actually have exercised the loop, not only killed idle children.
    assert!(saves > 0, "no child ever finished a save before being killed");
    // The next save, here, cleans up after the last killed child.
    checkpoint::save(&Net::new(0.0), &path).unwrap();
    assert!(temporaries(&dir).is_empty(), "stale temporaries after a save: {:?}", temporaries(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small model for the damage tests: small enough to flip every bit of its file.
struct Tiny {
    w: Tensor,
    b: Tensor,
}

impl Tiny {
    fn new(w: Vec<f32>, b: Vec<f32>) -> Tiny {
        let d = Device::cpu();
        Tiny {
            w: Tensor::from_vec(w, &[2, 3], &d).unwrap().with_grad(),
            b: Tensor::from_vec(b, &[3], &d).unwrap().with_grad(),
        }
    }

    fn saved() -> Tiny {
        Tiny::new(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![0.5, -0.5, 0.25])
    }

    fn blank() -> Tiny {
        Tiny::new(vec![9.0; 6], vec![9.0; 3])
    }

    fn values(&self) -> (Vec<f32>, Vec<f32>) {
        (self.w.to_vec().unwrap(), self.b.to_vec().unwrap())
    }
}

impl Module for Tiny {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.w)?.add(&self.b)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("w".into(), self.w.clone()), ("b".into(), self.b.clone())]
    }
}

/// Loads `path` into a blank model, expecting a `Checkpoint` error that mentions `needle`
/// (case-insensitive; empty matches anything), and checks that the model was not touched.
fn expect_checkpoint_error(what: &str, path: &Path, needle: &str) -> String {
    let m = Tiny::blank();
    let before = m.values();
    let e = match checkpoint::load(&m, path) {
        Ok(()) => panic!("{what}: loaded without error into {:?}", m.values()),
        Err(e) => e,
    };
    assert!(matches!(e, Error::Checkpoint { .. }), "{what}: expected Error::Checkpoint, got {e:?}");
    assert!(e.to_string().to_lowercase().contains(needle), "{what}: {e} does not mention {needle:?}");
    assert_eq!(m.values(), before, "{what}: a failed load changed the model");
    e.to_string()
}

#[test]
fn a_good_checkpoint_round_trips() {
    let dir = scratch_dir("roundtrip");
    let path = dir.join("tiny.safetensors");
    checkpoint::save(&Tiny::saved(), &path).unwrap();
    let m = Tiny::blank();
    checkpoint::load(&m, &path).unwrap();
    assert_eq!(m.values(), Tiny::saved().values());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_files_are_checkpoint_errors() {
    let dir = scratch_dir("truncated");
    let good = dir.join("good.safetensors");
    checkpoint::save(&Tiny::saved(), &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let bad = dir.join("bad.safetensors");
    // Every length short of the whole file: inside the length prefix, the header, the data.
    for len in 0..bytes.len() {
        std::fs::write(&bad, &bytes[..len]).unwrap();
        expect_checkpoint_error(&format!("truncated to {len} of {} bytes (header {header})", bytes.len()), &bad, "");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_single_bit_flip_is_a_checkpoint_error() {
    let dir = scratch_dir("bitflip");
    let good = dir.join("good.safetensors");
    checkpoint::save(&Tiny::saved(), &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let bad = dir.join("bad.safetensors");
    let mut checksum_caught = 0;
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            std::fs::write(&bad, &b).unwrap();
            let region = if i < 8 {
                "length prefix"
            } else if i < header {
                "header"
            } else {
                "data"
            };
            let msg = expect_checkpoint_error(&format!("bit {bit} of byte {i} ({region}) flipped"), &bad, "");
            if msg.contains("checksum") {
                checksum_caught += 1;
            }
        }
    }
    // Every flip in the tensor bytes parses fine and only the checksum can catch it.
    assert!(checksum_caught >= (bytes.len() - header) * 8, "{checksum_caught} flips caught by the checksum");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wrong_dtype_and_wrong_shape_are_checkpoint_errors() {
    let dir = scratch_dir("mismatch");
    let cpu = Device::cpu();
    let b = Tensor::from_vec(vec![0.5f32, -0.5, 0.25], &[3], &cpu).unwrap();
    let w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &cpu).unwrap();
    for dtype in [DType::F16, DType::F64, DType::I32, DType::U32, DType::Bool] {
        let path = dir.join(format!("w-{dtype}.safetensors"));
        checkpoint::save_state_dict(&[("w".into(), w.to_dtype(dtype).unwrap()), ("b".into(), b.clone())], &path)
            .unwrap();
        let msg = expect_checkpoint_error(&format!("w stored as {dtype}"), &path, "dtype");
        assert!(msg.contains("\"w\""), "the error names the key: {msg}");
    }
    for shape in [&[3, 2][..], &[6], &[2, 3, 1], &[2, 2]] {
        let path = dir.join("shape.safetensors");
        let n: usize = shape.iter().product();
        let t = Tensor::from_vec((0..n).map(|i| i as f32).collect::<Vec<_>>(), shape, &cpu).unwrap();
        checkpoint::save_state_dict(&[("w".into(), t), ("b".into(), b.clone())], &path).unwrap();
        let msg = expect_checkpoint_error(&format!("w stored with shape {shape:?}"), &path, "shape");
        assert!(msg.contains("\"w\""), "the error names the key: {msg}");
    }
    // A missing key and an extra key are mismatches too.
    let path = dir.join("keys.safetensors");
    checkpoint::save_state_dict(&[("w".into(), w.clone())], &path).unwrap();
    expect_checkpoint_error("b missing", &path, "missing key");
    checkpoint::save_state_dict(
        &[("w".into(), w.clone()), ("b".into(), b.clone()), ("extra".into(), b.clone())],
        &path,
    )
    .unwrap();
    expect_checkpoint_error("extra key", &path, "unexpected key");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn files_that_are_not_safetensors_are_checkpoint_errors() {
    let dir = scratch_dir("notsafetensors");
    let path = dir.join("x.safetensors");
    let huge_header = {
        let mut v = u64::MAX.to_le_bytes().to_vec();
        v.extend_from_slice(b"{}");
        v
    };
    let lying_header = {
        let mut v = 1000u64.to_le_bytes().to_vec();
        v.extend_from_slice(b"{\"w\":{}}");
        v
    };
    let bad_json = {
        let h = b"{\"w\": [1, 2, 3]}";
        let mut v = (h.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(h);
        v
    };
    let offsets_past_end = {
        let h = br#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"F32","shape":[3],"data_offsets":[24,36]}}"#;
        let mut v = (h.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(h);
        v.extend_from_slice(&[0u8; 20]);
        v
    };
    let unknown_dtype = {
        let h = br#"{"w":{"dtype":"I8","shape":[2,3],"data_offsets":[0,6]},"b":{"dtype":"F32","shape":[3],"data_offsets":[6,18]}}"#;
        let mut v = (h.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(h);
        v.extend_from_slice(&[0u8; 18]);
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty file", vec![]),
        ("plain text", b"this is not a checkpoint\n".to_vec()),
        ("json", br#"{"w": [1, 2, 3, 4, 5, 6], "b": [1, 2, 3]}"#.to_vec()),
        ("png signature", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec()),
        ("zip (torch.save) signature", b"PK\x03\x04\x14\0\0\0\0\0".to_vec()),
        ("random bytes", (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
        ("header length u64::MAX", huge_header),
        ("header length past the end", lying_header),
        ("header not a tensor table", bad_json),
        ("data offsets past the end", offsets_past_end),
        ("dtype Kiln cannot hold", unknown_dtype),
    ];
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        expect_checkpoint_error(what, &path, "");
    }
    // A path that is not there, or is a directory, is an I/O error.
    let m = Tiny::blank();
    let e = checkpoint::load(&m, dir.join("missing.safetensors")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "missing file: {e:?}");
    let e = checkpoint::load(&m, &dir).unwrap_err();
    assert!(matches!(e, Error::Io { .. } | Error::Checkpoint { .. }), "directory: {e:?}");
    assert_eq!(m.values(), Tiny::blank().values());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A save removes the temporaries that killed saves of the same checkpoint left behind (its
/// own naming pattern, writer process gone), and nothing else: not another checkpoint's, not
/// files that merely look similar, not those of a writer still running.
#[test]
#[cfg(target_os = "linux")]
fn a_save_removes_stale_temporaries_of_its_checkpoint_only() {
    let dir = scratch_dir("stale-tmp");
    let path = dir.join("model.safetensors");
    // Linux pids stop at 2^22: no live process has this one.
    let dead = 4_194_305u32;
    let me = std::process::id();
    let stale = [format!(".model.safetensors.{dead}.0.tmp"), format!(".model.safetensors.{dead}.17.tmp")];
    let kept = [
        format!(".other.safetensors.{dead}.0.tmp"),   // another checkpoint's
        format!(".model.safetensors.1.{dead}.0.tmp"), // checkpoint "model.safetensors.1"'s
        ".model.safetensors.notes.tmp".to_string(),   // not our pattern
        "model.safetensors.tmp".to_string(),
        format!(".model.safetensors.{me}.999999.tmp"), // this process: maybe a concurrent save
        format!(".model.safetensors.{}.0.tmp", std::os::unix::process::parent_id()), // alive
    ];
    for f in stale.iter().chain(&kept) {
        std::fs::write(dir.join(f), b"partial").unwrap();
    }
    checkpoint::save(&Tiny::saved(), &path).unwrap();
    let left = temporaries(&dir);
    for f in &stale {
        assert!(!left.contains(f), "{f} was not removed: {left:?}");
    }
    for f in &kept {
        assert!(left.contains(f), "{f} was removed: {left:?}");
    }
    let fresh = Tiny::blank();
    checkpoint::load(&fresh, &path).unwrap();
    assert_eq!(fresh.values(), Tiny::saved().values());
    let _ = std::fs::remove_dir_all(&dir);
}

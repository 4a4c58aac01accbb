//! In-process data parallelism (one thread per device): training equals one process with the
//! whole batch, and every failure ends every replica within a bounded time.

mod common;

use common::{Kind, Tiny, assert_close, train_rank, train_reference};
use kiln_core::{Device, Tensor};
use kiln_dist::{DdpConfig, DistError, DistributedDataParallel, Solo, run_replicas};
use kiln_nn::{Module, ModuleExt};
use std::time::{Duration, Instant};

/// 10 steps (Adam for the MLP, SGD with momentum for the transformer) on the CPU backend with N = 1, 2, 3 replicas equal one process (f32,
/// 1e-5 relative), including steps where some replicas have no samples; replicas agree bit
/// for bit with each other.
fn equal_to_one_process(kind: Kind, micro: usize, bucket_bytes: usize) {
    let cpu = Device::cpu();
    let want = train_reference(kind, &cpu);
    for world in 1..=3 {
        let devices = vec![cpu.clone(); world];
        let cfg = DdpConfig { bucket_bytes, timeout: Duration::from_secs(60) };
        let got = run_replicas(&devices, |r| train_rank(kind, &r.device, Box::new(r.comm), cfg.clone(), micro))
            .expect("replicas train");
        for (rank, g) in got.iter().enumerate() {
            assert_close(&format!("{kind:?}, {world} replicas, rank {rank}"), g, &want, 1e-5);
            assert_eq!(g, &got[0], "{kind:?}: replica {rank} differs from replica 0");
        }
    }
}

#[test]
fn mlp_replicas_train_like_one_process() {
    // 64-byte buckets: every tensor in a bucket of its own or two, so many all-reduces overlap.
    equal_to_one_process(Kind::Mlp, 1, 64);
}

#[test]
fn transformer_replicas_train_like_one_process() {
    equal_to_one_process(Kind::Transformer, 1, kiln_dist::DEFAULT_BUCKET_BYTES);
}

#[test]
fn micro_batches_under_no_sync_accumulate_like_one_batch() {
    equal_to_one_process(Kind::Mlp, 2, 256);
}

#[test]
fn replicas_on_two_gpu_devices_train_like_one_process() {
    let Some(first) = gpu() else { return };
    let second = Device::open_gpu("gpu").expect("a second device on the same adapter");
    assert!(first != second, "open_gpu must give a device of its own");
    for kind in [Kind::Mlp, Kind::Transformer] {
        // The reference runs on the same adapter, so only the batch split differs.
        let want = train_reference(kind, &first);
        let devices = vec![first.clone(), second.clone()];
        let cfg = DdpConfig { bucket_bytes: 1024, timeout: Duration::from_secs(120) };
        let got = run_replicas(&devices, |r| train_rank(kind, &r.device, Box::new(r.comm), cfg.clone(), 1))
            .expect("replicas train");
        for (rank, g) in got.iter().enumerate() {
            assert_close(&format!("{kind:?} on 2 GPU devices, rank {rank}"), g, &want, 1e-5);
            assert_eq!(g, &got[0], "{kind:?}: GPU replica {rank} differs from replica 0");
        }
    }
}

/// A GPU device of its own, or `None` (with a note) where there is none, unless `KILN_REQUIRE_GPU=1`.
fn gpu() -> Option<Device> {
    kiln_testkit::gpu_or_skip(std::thread::current().name().unwrap_or("replicas"), Device::open_gpu("gpu"))
}

fn cfg(timeout_s: f64) -> DdpConfig {
    DdpConfig { bucket_bytes: 256, timeout: Duration::from_secs_f64(timeout_s) }
}

#[test]
fn a_replica_that_fails_mid_step_stops_the_others_at_once() {
    let start = Instant::now();
    let outcome = run_replicas(&vec![Device::cpu(); 3], |r| {
        let model = Tiny::build(Kind::Mlp, 1, 17, &r.device)?;
        let mut ddp = DistributedDataParallel::new(&model, Box::new(r.comm), cfg(60.0))?;
        for step in 0..5u32 {
            if r.rank == 2 && step == 2 {
                return Err(DistError::Invalid { op: "test", msg: "replica 2 gives up".into() });
            }
            ddp.backward(&model.loss(&[step], &r.device)?, 1)?;
        }
        Ok(())
    });
    let err = outcome.expect_err("the failure must surface");
    assert!(err.to_string().contains("replica 2 gives up"), "the cause, not its consequence: {err}");
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?} (the timeout is 60 s)", start.elapsed());
}

#[test]
fn a_stalled_replica_times_the_others_out() {
    let observed = std::sync::Mutex::new(Vec::new());
    let start = Instant::now();
    let _ = run_replicas(&vec![Device::cpu(); 2], |r| {
        let model = Tiny::build(Kind::Mlp, 1, 17, &r.device)?;
        let mut ddp = DistributedDataParallel::new(&model, Box::new(r.comm), cfg(1.0))?;
        if r.rank == 1 {
            // Alive but stuck: holds its communicator, never joins the step.
            std::thread::sleep(Duration::from_secs(4));
            return Ok(());
        }
        let t = Instant::now();
        let outcome = ddp.backward(&model.loss(&[0, 1], &r.device)?, 2);
        observed.lock().unwrap().push((outcome, t.elapsed()));
        // The group is out of step now: further use is refused, not hung.
        let again = ddp.sync();
        assert!(matches!(again, Err(DistError::Invalid { .. })), "{again:?}");
        Ok(())
    });
    let observed = observed.into_inner().unwrap();
    let (outcome, waited) = &observed[0];
    assert!(matches!(outcome, Err(DistError::Timeout { rank: 0, world: 2, .. })), "{outcome:?}");
    assert!(*waited >= Duration::from_millis(900) && *waited < Duration::from_secs(3), "timed out after {waited:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_panicking_replica_is_reported_and_the_others_stop() {
    let start = Instant::now();
    let outcome: kiln_dist::Result<Vec<()>> = run_replicas(&vec![Device::cpu(); 2], |r| {
        let model = Tiny::build(Kind::Mlp, 1, 17, &r.device)?;
        let mut ddp = DistributedDataParallel::new(&model, Box::new(r.comm), cfg(60.0))?;
        if r.rank == 1 {
            panic!("replica 1 crashed");
        }
        ddp.backward(&model.loss(&[0], &r.device)?, 1)?;
        Ok(())
    });
    match outcome {
        Err(DistError::Panicked { rank: 1, msg }) => assert!(msg.contains("crashed")),
        other => panic!("expected replica 1's panic, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn different_models_are_refused_at_start_on_every_rank() {
    let outcome = run_replicas(&vec![Device::cpu(); 3], |r| {
        let hidden = if r.rank == 2 { 16 } else { 17 };
        let model = Tiny::build(Kind::Mlp, 1, hidden, &r.device)?;
        Ok(DistributedDataParallel::new(&model, Box::new(r.comm), cfg(60.0)).err())
    })
    .expect("each replica returns its own outcome");
    for (rank, e) in outcome.iter().enumerate() {
        match e {
            Some(DistError::ModelMismatch { rank: 2, .. }) => {}
            other => panic!("rank {rank}: expected a mismatch naming rank 2, got {other:?}"),
        }
    }
}

#[test]
fn a_checkpoint_is_complete_before_any_rank_reads_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.safetensors");
    let read = run_replicas(&vec![Device::cpu(); 3], |r| {
        let model = Tiny::build(Kind::Mlp, 7 + r.rank as u64, 17, &r.device)?;
        let mut ddp = DistributedDataParallel::new(&model, Box::new(r.comm), cfg(60.0))?;
        ddp.save_on_root(|| kiln_nn::checkpoint::save(&model, &path))?;
        let loaded = kiln_nn::checkpoint::load_state_dict(&path)?;
        Ok((loaded.len(), model.num_parameters()))
    })
    .expect("save and read");
    for (n, _) in &read {
        assert_eq!(*n, 6, "every rank reads all six tensors");
    }
    // Rank 0 cannot write: every rank learns it.
    let bad = dir.path().join("missing-dir").join("model.safetensors");
    let outcome = run_replicas(&vec![Device::cpu(); 2], |r| {
        let model = Tiny::build(Kind::Mlp, 7, 17, &r.device)?;
        let mut ddp = DistributedDataParallel::new(&model, Box::new(r.comm), cfg(60.0))?;
        Ok(ddp.save_on_root(|| kiln_nn::checkpoint::save(&model, &bad)).err().map(|e| e.to_string()))
    })
    .expect("both replicas return");
    assert!(outcome[0].is_some(), "rank 0's own error");
    assert!(outcome[1].as_deref().is_some_and(|m| m.contains("rank 0")), "{:?}", outcome[1]);
}

#[test]
fn without_a_launcher_there_is_one_rank_that_trains() {
    assert!(!kiln_dist::launched_by_mpi() || std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some());
    let cpu = Device::cpu();
    let comm = Box::new(Solo);
    let got = train_rank(Kind::Mlp, &cpu, comm, DdpConfig::default(), 1).expect("solo training");
    assert_close("solo", &got, &train_reference(Kind::Mlp, &cpu), 1e-6);
}

#[test]
fn a_parameter_the_loss_ignores_gets_a_zero_gradient_and_nothing_hangs() {
    let d = Device::cpu();
    let used = kiln_nn::Linear::new(3, 2, true, &d).unwrap();
    let unused = kiln_nn::Linear::new(3, 2, true, &d).unwrap();
    struct Two(kiln_nn::Linear, kiln_nn::Linear);
    impl Module for Two {
        fn forward(&self, x: &Tensor) -> kiln_core::Result<Tensor> {
            self.0.forward(x)
        }
        fn named_parameters(&self) -> Vec<(String, Tensor)> {
            let mut v = kiln_nn::module::prefixed("a", self.0.named_parameters());
            v.extend(kiln_nn::module::prefixed("b", self.1.named_parameters()));
            v
        }
    }
    let model = Two(used, unused);
    let mut ddp =
        DistributedDataParallel::new(&model, Box::new(Solo), DdpConfig { bucket_bytes: 16, ..Default::default() })
            .unwrap();
    let loss = model.forward(&Tensor::ones(&[1, 3], &d).unwrap()).unwrap().sum_all().unwrap();
    ddp.backward(&loss, 1).unwrap();
    assert_eq!(model.1.weight.grad().unwrap().to_vec::<f32>().unwrap(), vec![0.0; 6]);
    assert_eq!(model.0.weight.grad().unwrap().to_vec::<f32>().unwrap(), vec![1.0; 6]);
}

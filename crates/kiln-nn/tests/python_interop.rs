//! Kiln checkpoints are standard safetensors: Python's `safetensors` package reads them back
//! with the same keys, dtypes, shapes and bits. Needs `python3` with `safetensors` and `numpy`
//! (`.ci/run` installs them and sets KILN_REQUIRE_PYTHON=1 so that CI cannot skip this).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use kiln_core::{DType, Device, HostData, Tensor};
use kiln_nn::{Linear, Module, Relu, Sequential, checkpoint};
use std::path::Path;
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/check_safetensors.py");

fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import safetensors, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("KILN_REQUIRE_PYTHON").as_deref() == Ok("1") {
            panic!("KILN_REQUIRE_PYTHON=1 but python3 cannot import safetensors and numpy");
        }
        eprintln!("!!! python3 with safetensors + numpy not found: skipping the Python interop test !!!");
    }
    ok
}

/// `{"name": {"dtype": "F32", "shape": [..], "values": [..]}, ...}` for the checker script.
fn expected_json(named: &[(String, Tensor)]) -> String {
    let entries: Vec<String> = named
        .iter()
        .map(|(name, t)| {
            let dtype = match t.dtype() {
                DType::F32 => "F32",
                DType::F16 => "F16",
                DType::F64 => "F64",
                DType::I32 => "I32",
                DType::U32 => "U32",
                DType::Bool => "BOOL",
            };
            let values: Vec<String> = match t.to_host().unwrap() {
                HostData::Bool(v) => v.iter().map(|b| b.to_string()).collect(),
                _ => t.to_f64_vec().unwrap().iter().map(|x| format!("{x:?}")).collect(),
            };
            format!(r#""{name}": {{"dtype": "{dtype}", "shape": {:?}, "values": [{}]}}"#, t.shape(), values.join(", "))
        })
        .collect();
    format!("{{{}}}", entries.join(",\n"))
}

fn run_checker(file: &Path, expected: &Path) {
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT).arg(file).arg(expected);
    if std::env::var("KILN_CHECK_TORCH").as_deref() == Ok("1") {
        cmd.arg("--torch");
    }
    let out = cmd.output().expect("running python3");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "Python's safetensors disagrees with Kiln's checkpoint:\n{text}");
}

#[test]
fn python_safetensors_reads_kiln_checkpoints() {
    if !python_ready() {
        return;
    }
    let cpu = Device::cpu();
    let _lock = common::seeded(3);
    let model = Sequential::new()
        .add(Linear::new(5, 7, true, &cpu).unwrap())
        .add(Relu)
        .add(Linear::new(7, 3, true, &cpu).unwrap());
    let mut named = model.named_parameters();
    named.push((
        "extra.f16".into(),
        Tensor::from_vec(vec![kiln_core::f16::from_f32(1.5), kiln_core::f16::MIN_POSITIVE], &[2], &cpu).unwrap(),
    ));
    named.push(("extra.f64".into(), Tensor::from_vec(vec![0.1f64, -1e300, 3.0], &[3, 1], &cpu).unwrap()));
    named.push(("extra.i32".into(), Tensor::from_vec(vec![i32::MIN, -1, 7, i32::MAX], &[2, 2], &cpu).unwrap()));
    named.push(("extra.u32".into(), Tensor::from_vec(vec![0u32, u32::MAX], &[2], &cpu).unwrap()));
    named.push(("extra.bool".into(), Tensor::from_vec(vec![true, false, true], &[3], &cpu).unwrap()));
    named.push(("extra.scalar".into(), Tensor::from_vec(vec![2.5f32], &[], &cpu).unwrap()));
    named.push(("extra.empty".into(), Tensor::from_vec(Vec::<f32>::new(), &[0, 4], &cpu).unwrap()));

    // KILN_PY_OUT keeps the files (to check them with PyTorch on another machine).
    let keep = std::env::var_os("KILN_PY_OUT").map(std::path::PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("kiln-py-{}", std::process::id())));
    std::fs::create_dir_all(&dir).unwrap();
    let (file, expected) = (dir.join("all.safetensors"), dir.join("all.json"));
    checkpoint::save_state_dict(&named, &file).unwrap();
    std::fs::write(&expected, expected_json(&named)).unwrap();
    run_checker(&file, &expected);

    // A model checkpoint as `save` writes it (kiln metadata included) reads the same way.
    let (file, expected) = (dir.join("model.safetensors"), dir.join("model.json"));
    checkpoint::save(&model, &file).unwrap();
    std::fs::write(&expected, expected_json(&model.named_parameters())).unwrap();
    run_checker(&file, &expected);
    if keep.is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
}

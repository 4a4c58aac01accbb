//! PyTorch state dicts by name (`kiln_nn::torch`): checkpoints that PyTorch wrote for every
//! kiln-nn layer (tests/data/torch/, made by scripts/make_torch_checkpoints.py) load into the Kiln
//! layer, which then computes PyTorch's outputs, on the CPU backend and on the GPU; every mistake
//! is a typed error naming the keys, with the module unchanged; Kiln's own saves load back into
//! Kiln and, where python3 has torch, into the PyTorch twin with `strict=True`.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{gpu, seeded};
use kiln_core::{DType, Device, Error, Result, Tensor};
use kiln_nn::torch::{self, LoadReport, StateDict};
use kiln_nn::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch")
}

fn checkpoint(name: &str) -> StateDict {
    StateDict::open(data_dir().join(format!("{name}.safetensors"))).unwrap()
}

/// `name.io.safetensors`: the input, optional mask and PyTorch's output.
struct Io(StateDict);

impl Io {
    fn open(name: &str) -> Io {
        Io(StateDict::open(data_dir().join(format!("{name}.io.safetensors"))).unwrap())
    }
    fn get(&self, key: &str, dtype: DType, device: &Device) -> Tensor {
        self.0.tensor(key, dtype, device).unwrap()
    }
    fn input(&self, device: &Device) -> Tensor {
        self.get("input", DType::F32, device)
    }
    fn mask(&self, device: &Device) -> Tensor {
        self.get("mask", DType::Bool, device)
    }
    fn output(&self) -> (Vec<f64>, Vec<usize>) {
        let t = self.get("output", DType::F64, &Device::cpu());
        (t.to_f64_vec().unwrap(), t.shape().to_vec())
    }
}

fn load_strict(m: &dyn Module, name: &str) {
    let report = torch::load_state_dict(m, &checkpoint(name), true).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(report, LoadReport::default(), "{name}");
}

/// Kiln's output for case `name`, computed on `d` after loading PyTorch's checkpoint.
fn kiln_output(name: &str, d: &Device) -> Result<Tensor> {
    let io = Io::open(name);
    // Embedding's input is int64 ids in the file; every other input is f32.
    let x = if name == "embedding" { io.get("input", DType::U32, d) } else { io.input(d) };
    let plain = |m: &dyn Module| -> Result<Tensor> {
        m.eval();
        load_strict(m, name);
        m.forward(&x)
    };
    let conv2d = |stride, padding, dilation, groups| Conv2dOptions { stride, padding, dilation, groups };
    match name {
        "linear" => plain(&Linear::new(5, 7, true, d)?),
        "linear_nobias" => plain(&Linear::new(5, 3, false, d)?),
        "linear_f16" | "linear_bf16" => plain(&Linear::new(6, 4, true, d)?),
        "conv1d" => plain(&Conv1d::new(4, 6, 3, 2, 1, 1, 2, true, d)?),
        "conv2d" => plain(&Conv2d::new(4, 6, (3, 2), conv2d((2, 1), (1, 1), (1, 2), 2), true, d)?),
        "conv_transpose2d" => plain(&ConvTranspose2d::new(3, 4, (3, 3), (2, 2), (1, 1), (1, 1), true, d)?),
        "layer_norm" => plain(&LayerNorm::new(&[6], d)?),
        "rms_norm" => plain(&RmsNorm::new(6, None, d)?),
        "group_norm" => plain(&GroupNorm::new(2, 6, d)?),
        "batch_norm1d" => plain(&BatchNorm1d::new(5, d)?),
        "batch_norm2d" => plain(&BatchNorm2d::new(3, d)?),
        "sequential" => {
            plain(&Sequential::new().add(Linear::new(5, 7, true, d)?).add(Relu).add(Linear::new(7, 3, true, d)?))
        }
        "embedding" => {
            let m = Embedding::new(10, 4, d)?;
            load_strict(&m, name);
            m.forward(&x)
        }
        "mha" | "mha_causal" => {
            let m = MultiHeadAttention::new(8, 2, true, d)?;
            load_strict(&m, name);
            if name == "mha" {
                m.forward_masked(&x, false, Some(&io.mask(d)))
            } else {
                m.forward_masked(&x, true, None)
            }
        }
        "mha_nobias" => {
            let m = MultiHeadAttention::new(8, 4, false, d)?;
            load_strict(&m, name);
            m.forward(&x)
        }
        "transformer_block" => {
            let m = TransformerBlock::new(8, 2, 4, 0.0, d)?;
            load_strict(&m, name);
            m.forward_masked(&x, false, Some(&io.mask(d)))
        }
        other => panic!("no Kiln twin for case {other}"),
    }
}

const CASES: &[&str] = &[
    "linear",
    "linear_nobias",
    "linear_f16",
    "linear_bf16",
    "conv1d",
    "conv2d",
    "conv_transpose2d",
    "layer_norm",
    "rms_norm",
    "group_norm",
    "batch_norm1d",
    "batch_norm2d",
    "embedding",
    "mha",
    "mha_causal",
    "mha_nobias",
    "sequential",
    "transformer_block",
];

fn check_cases(d: &Device) {
    for name in CASES {
        let (want, shape) = Io::open(name).output();
        let got = kiln_output(name, d).unwrap_or_else(|e| panic!("{name} on {}: {e}", d.describe()));
        assert_eq!(got.shape(), shape, "{name}: output shape");
        let got = got.to_f64_vec().unwrap();
        let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / (1.0 + w.abs())).fold(0.0, f64::max);
        assert!(worst <= 2e-5, "{name} on {}: worst relative difference to PyTorch {worst:e}", d.describe());
    }
}

#[test]
fn pytorch_checkpoints_of_every_layer_match_on_cpu() {
    check_cases(&Device::cpu());
}

#[test]
fn pytorch_checkpoints_of_every_layer_match_on_gpu() {
    if let Some(d) = gpu() {
        check_cases(&d);
    }
}

#[test]
fn every_case_in_the_data_folder_is_checked() {
    let mut files: Vec<String> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|f| f.strip_suffix(".io.safetensors").map(str::to_string))
        .collect();
    files.sort();
    let mut cases: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
    cases.sort();
    assert_eq!(files, cases);
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

fn state_dict_error(r: Result<LoadReport>) -> (Vec<String>, Vec<String>, Vec<(String, String)>) {
    match r {
        Err(Error::StateDict { missing, unexpected, mismatched }) => (missing, unexpected, mismatched),
        other => panic!("expected Error::StateDict, got {other:?}"),
    }
}

#[test]
fn missing_and_unexpected_keys_are_listed_and_the_module_is_unchanged() {
    let d = Device::cpu();
    let _g = seeded(1);
    // PyTorch's Linear with a bias into a Kiln Linear without one.
    let m = Linear::new(5, 7, false, &d).unwrap();
    let before = values(&m.weight);
    let (missing, unexpected, mismatched) = state_dict_error(torch::load_state_dict(&m, &checkpoint("linear"), true));
    assert_eq!((missing, unexpected, mismatched), (vec![], vec!["bias".to_string()], vec![]));
    assert_eq!(values(&m.weight), before, "a failed load changed the module");

    // Not strict: the same load succeeds and reports the key.
    let report = torch::load_state_dict(&m, &checkpoint("linear"), false).unwrap();
    assert_eq!(report, LoadReport { missing: vec![], unexpected: vec!["bias".into()] });
    assert_ne!(values(&m.weight), before);

    // A Sequential with a third layer: its keys are missing.
    let seq = Sequential::new()
        .add(Linear::new(5, 7, true, &d).unwrap())
        .add(Relu)
        .add(Linear::new(7, 3, true, &d).unwrap())
        .add(Linear::new(3, 2, true, &d).unwrap());
    let (missing, unexpected, _) = state_dict_error(torch::load_state_dict(&seq, &checkpoint("sequential"), true));
    assert_eq!(missing, vec!["3.weight".to_string(), "3.bias".into()]);
    assert!(unexpected.is_empty());
    let report = torch::load_state_dict(&seq, &checkpoint("sequential"), false).unwrap();
    assert_eq!(report.missing, vec!["3.weight".to_string(), "3.bias".into()]);
}

#[test]
fn shape_and_dtype_mismatches_are_named_and_nothing_changes() {
    let d = Device::cpu();
    let _g = seeded(2);
    // Weight fits, bias does not: all or nothing, so the weight is not assigned either.
    let m = Linear::new(5, 7, true, &d).unwrap();
    let before = (values(&m.weight), values(&m.bias.clone().unwrap()));
    let sd = StateDict::from_tensors(&[
        ("weight".into(), Tensor::zeros(&[7, 5], &d).unwrap()),
        ("bias".into(), Tensor::zeros(&[8], &d).unwrap()),
    ])
    .unwrap();
    for strict in [true, false] {
        let (_, _, mismatched) = state_dict_error(torch::load_state_dict(&m, &sd, strict));
        assert_eq!(mismatched.len(), 1, "{mismatched:?}");
        assert_eq!(mismatched[0].0, "bias");
        assert!(mismatched[0].1.contains("[8]") && mismatched[0].1.contains("[7]"), "{}", mismatched[0].1);
    }
    assert_eq!((values(&m.weight), values(&m.bias.clone().unwrap())), before);

    // An integer tensor for a float weight.
    let sd = StateDict::from_tensors(&[
        ("weight".into(), Tensor::from_vec(vec![1i32; 35], &[7, 5], &d).unwrap()),
        ("bias".into(), Tensor::zeros(&[7], &d).unwrap()),
    ])
    .unwrap();
    let (_, _, mismatched) = state_dict_error(torch::load_state_dict(&m, &sd, true));
    assert_eq!(mismatched[0].0, "weight");
    assert!(mismatched[0].1.contains("I32") && mismatched[0].1.contains("f32"), "{}", mismatched[0].1);
    assert_eq!(values(&m.weight), before.0);

    // A packed projection of the wrong width names the packed key, once.
    let mha = MultiHeadAttention::new(6, 2, true, &d).unwrap();
    let (_, _, mismatched) = state_dict_error(torch::load_state_dict(&mha, &checkpoint("mha"), true));
    let keys: Vec<&str> = mismatched.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"], "{mismatched:?}");
    assert!(mismatched[0].1.contains("[24, 8]") && mismatched[0].1.contains("[18, 6]"), "{}", mismatched[0].1);
}

#[test]
fn key_remapping() {
    let d = Device::cpu();
    let _g = seeded(3);
    // The first Linear of PyTorch's Sequential, picked out and renamed.
    let m = Linear::new(5, 7, true, &d).unwrap();
    let sd = checkpoint("sequential").filter(|k| k.starts_with("0.")).strip_prefix("0.");
    assert_eq!(sd.keys().collect::<Vec<_>>(), ["bias", "weight"]);
    torch::load_state_dict(&m, &sd, true).unwrap();
    assert_eq!(values(&m.weight), values(&checkpoint("sequential").tensor("0.weight", DType::F32, &d).unwrap()));

    // A closure: "0.*" → "first.*", drop "2.*".
    let sd = checkpoint("sequential").map_keys(|k| k.strip_prefix("0.").map(|rest| format!("first.{rest}"))).unwrap();
    assert_eq!(sd.keys().collect::<Vec<_>>(), ["first.bias", "first.weight"]);
    let sd = checkpoint("sequential").replace_prefix("2.", "last.");
    assert_eq!(sd.keys().collect::<Vec<_>>(), ["0.bias", "0.weight", "last.bias", "last.weight"]);

    // Two keys onto one name is an error, not a silent overwrite.
    let err = checkpoint("sequential").map_keys(|k| Some(k.replace(['0', '2'], "x"))).err().unwrap();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[test]
fn conversions_to_the_module_dtype() {
    let d = Device::cpu();
    let _g = seeded(4);
    // f32 checkpoint into f64 and f16 layers.
    let want = values(&checkpoint("linear").tensor("weight", DType::F32, &d).unwrap());
    let m64 = kiln_nn::init::with_default_dtype(DType::F64, || Linear::new(5, 7, true, &d)).unwrap();
    torch::load_state_dict(&m64, &checkpoint("linear"), true).unwrap();
    assert_eq!(m64.weight.dtype(), DType::F64);
    assert_eq!(values(&m64.weight), want);
    let m16 = kiln_nn::init::with_default_dtype(DType::F16, || Linear::new(5, 7, true, &d)).unwrap();
    torch::load_state_dict(&m16, &checkpoint("linear"), true).unwrap();
    assert_eq!(m16.weight.dtype(), DType::F16);
    for (g, w) in values(&m16.weight).iter().zip(&want) {
        assert!((g - w).abs() <= 1e-3 * w.abs().max(6e-5), "{g} vs {w}");
    }
    // bf16 and f16 checkpoints into f32: exact (every bf16/f16 value is an f32).
    for name in ["linear_f16", "linear_bf16"] {
        let sd = checkpoint(name);
        let m = Linear::new(6, 4, true, &d).unwrap();
        torch::load_state_dict(&m, &sd, true).unwrap();
        assert_eq!(values(&m.weight), values(&sd.tensor("weight", DType::F64, &d).unwrap()), "{name}");
    }
    // BatchNorm's int64 counter is accepted and ignored; ids as int64 convert to i32/u32 when they fit.
    assert_eq!(checkpoint("batch_norm1d").dtype_name("num_batches_tracked").as_deref(), Some("I64"));
    let ids = Io::open("embedding").get("input", DType::I32, &d);
    assert_eq!(ids.to_vec::<i32>().unwrap(), vec![1, 0, 9, 3, 3, 7]);
    let big = StateDict::from_tensors(&[("x".into(), Tensor::from_vec(vec![-1i32, 5], &[2], &d).unwrap())]).unwrap();
    assert!(big.tensor("x", DType::U32, &d).is_err(), "-1 does not fit u32");
}

/// A Kiln model for the round trips; attention takes a padding mask.
enum Model {
    Plain(Box<dyn Module>),
    Mha(MultiHeadAttention),
    Block(TransformerBlock),
}

impl Model {
    fn module(&self) -> &dyn Module {
        match self {
            Model::Plain(m) => m.as_ref(),
            Model::Mha(m) => m,
            Model::Block(m) => m,
        }
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        match self {
            Model::Plain(m) => m.forward(x),
            Model::Mha(m) => m.forward_masked(x, false, Some(mask)),
            Model::Block(m) => m.forward_masked(x, false, Some(mask)),
        }
    }
}

/// Kiln models with every kind of key: plain, packed attention, buffers, nested prefixes.
fn kiln_models(d: &Device) -> Vec<(&'static str, Model)> {
    let bn = BatchNorm2d::new(3, d).unwrap();
    // Non-trivial running statistics: one training step.
    bn.forward(&Tensor::randn(&[4, 3, 5, 5], d).unwrap().mul_scalar(2.0).unwrap().add_scalar(1.0).unwrap()).unwrap();
    bn.eval();
    let block = TransformerBlock::new(8, 2, 4, 0.0, d).unwrap();
    // LayerNorm weights are ones at construction: give them values that a swap would show.
    for (_, p) in block.named_parameters() {
        p.set_data(&Tensor::randn(p.shape(), d).unwrap().mul_scalar(0.5).unwrap()).unwrap();
    }
    let conv = Conv2dOptions { stride: (2, 1), padding: (1, 1), dilation: (1, 2), groups: 2 };
    let seq =
        Sequential::new().add(Linear::new(5, 7, true, d).unwrap()).add(Relu).add(Linear::new(7, 3, true, d).unwrap());
    vec![
        ("linear", Model::Plain(Box::new(Linear::new(5, 7, true, d).unwrap()))),
        ("conv2d", Model::Plain(Box::new(Conv2d::new(4, 6, (3, 2), conv, true, d).unwrap()))),
        ("batch_norm2d", Model::Plain(Box::new(bn))),
        ("mha", Model::Mha(MultiHeadAttention::new(8, 2, true, d).unwrap())),
        ("transformer_block", Model::Block(block)),
        ("sequential", Model::Plain(Box::new(seq))),
    ]
}

fn kiln_input(name: &str, d: &Device) -> Tensor {
    let shape: &[usize] = match name {
        "linear" | "sequential" => &[3, 5],
        "conv2d" => &[2, 4, 7, 6],
        "batch_norm2d" => &[2, 3, 4, 4],
        _ => &[2, 5, 8],
    };
    Tensor::randn(shape, d).unwrap()
}

#[test]
fn kiln_saves_load_back_into_kiln() {
    let d = Device::cpu();
    let _g = seeded(5);
    let dir = tempfile::tempdir().unwrap();
    let saved = kiln_models(&d);
    let fresh = kiln_models(&d);
    for ((name, a), (_, b)) in saved.iter().zip(&fresh) {
        let path = dir.path().join(format!("{name}.safetensors"));
        torch::save(a.module(), &path).unwrap();
        let keys: Vec<String> = StateDict::open(&path).unwrap().keys().map(str::to_string).collect();
        if *name == "mha" {
            assert_eq!(keys, ["in_proj_bias", "in_proj_weight", "out_proj.bias", "out_proj.weight"]);
        }
        torch::load(b.module(), &path, true).unwrap();
        let (pa, pb) = (torch::state_dict(a.module()).unwrap(), torch::state_dict(b.module()).unwrap());
        assert_eq!(pa.len(), pb.len());
        for ((na, ta), (nb, tb)) in pa.iter().zip(&pb) {
            assert_eq!((na, values(ta)), (nb, values(tb)), "{name}");
        }
    }
}

fn torch_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import torch, safetensors"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("KILN_REQUIRE_PYTHON").as_deref() == Ok("1") {
            panic!("KILN_REQUIRE_PYTHON=1 but python3 cannot import torch and safetensors");
        }
        eprintln!("!!! python3 with torch + safetensors not found: skipping the PyTorch strict-load test !!!");
    }
    ok
}

/// Kiln writes each model with `torch::save` plus its input, mask and output; the checker
/// builds the PyTorch twin, loads the file with `load_state_dict(strict=True)` and compares.
#[test]
fn pytorch_loads_kiln_saves_strictly() {
    if !torch_ready() {
        return;
    }
    let d = Device::cpu();
    let _g = seeded(6);
    let dir = tempfile::tempdir().unwrap();
    let mask = Tensor::from_vec([[false; 5], [false, false, false, true, true]].concat(), &[2, 5], &d).unwrap();
    for (name, m) in kiln_models(&d) {
        let x = kiln_input(name, &d);
        let y = m.forward(&x, &mask).unwrap();
        torch::save(m.module(), dir.path().join(format!("{name}.safetensors"))).unwrap();
        let io = [("input".to_string(), x), ("mask".to_string(), mask.clone()), ("output".to_string(), y)];
        checkpoint::save_state_dict(&io, dir.path().join(format!("{name}.io.safetensors"))).unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_torch_twins.py");
    let out = Command::new("python3").arg(&script).arg(dir.path()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "PyTorch does not load Kiln's state dicts:\n{text}");
    assert!(text.contains("6 twins loaded strictly"), "{text}");
}

//! Bad input gives a typed error naming the op, never a panic; and the inputs stay intact.

mod common;

use kiln::prelude::*;

fn cpu() -> Device {
    Device::cpu()
}

#[test]
fn shape_errors() {
    let d = cpu();
    let e = Tensor::from_vec(vec![1.0f32; 5], &[2, 3], &d).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "from_vec", .. }), "{e}");
    let a = Tensor::ones(&[2, 3], &d).unwrap();
    let b = Tensor::ones(&[4], &d).unwrap();
    let e = (&a + &b).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "add", .. }));
    assert!(e.to_string().contains("[2, 3]") && e.to_string().contains("[4]"), "{e}");
    assert!(matches!(a.matmul(&a), Err(Error::ShapeMismatch { op: "matmul", .. })));
    assert!(matches!(a.reshape(&[5]), Err(Error::ShapeMismatch { op: "reshape", .. })));
    assert!(matches!(a.item(), Err(Error::ShapeMismatch { op: "item", .. })));
    assert_eq!(a.to_vec::<f32>().unwrap(), vec![1.0; 6], "inputs untouched");
}

#[test]
fn dtype_errors() {
    let d = cpu();
    let a = Tensor::ones(&[3], &d).unwrap();
    let i = Tensor::full_dtype(&[3], 1.0, DType::I32, &d).unwrap();
    assert!(matches!(&a + &i, Err(Error::DTypeMismatch { op: "add", .. })));
    assert!(matches!(i.exp(), Err(Error::UnsupportedDType { op: "exp", .. })));
    assert!(matches!(a.to_vec::<i32>(), Err(Error::DTypeMismatch { .. })));
    assert!(matches!(Tensor::where_(&a, &a, &a), Err(Error::DTypeMismatch { op: "where", .. })));
    if let Some(g) = common::gpu("dtype_errors") {
        let f = Tensor::ones(&[2], &d).unwrap().to_dtype(DType::F64).unwrap();
        assert!(matches!(f.to(&g), Err(Error::UnsupportedDType { .. })));
    }
}

#[test]
fn index_and_argument_errors() {
    let d = cpu();
    let a = Tensor::ones(&[3, 2], &d).unwrap();
    let ids = Tensor::from_vec(vec![0u32, 3], &[2], &d).unwrap();
    assert!(matches!(a.index_select(0, &ids), Err(Error::IndexOutOfRange { op: "index_select", .. })));
    let neg = Tensor::from_vec(vec![-1i32], &[1], &d).unwrap();
    assert!(matches!(a.index_select(0, &neg), Err(Error::IndexOutOfRange { .. })));
    assert!(matches!(a.sum(&[2], false), Err(Error::IndexOutOfRange { op: "sum", .. })));
    assert!(matches!(a.narrow(0, 2, 2), Err(Error::IndexOutOfRange { op: "slice", .. })));
    assert!(matches!(Tensor::arange(0.0, 1.0, 0.0, &d), Err(Error::InvalidArgument { op: "arange", .. })));
    assert!(matches!(a.permute(&[0, 0]), Err(Error::InvalidArgument { op: "permute", .. })));
    assert!(matches!(a.clamp(1.0, 0.0), Err(Error::InvalidArgument { op: "clamp", .. })));
    assert!(matches!(Tensor::cat(&[], 0), Err(Error::InvalidArgument { op: "cat", .. })));
    assert!(matches!(a.topk(5, true), Err(Error::InvalidArgument { op: "topk", .. })));
    if let Some(g) = common::gpu("index_and_argument_errors") {
        let ag = a.to(&g).unwrap();
        assert!(matches!(ag.index_select(0, &ids.to(&g).unwrap()), Err(Error::IndexOutOfRange { .. })));
    }
}

/// Ids uploaded from the host carry their range, so checking them needs no readback (no
/// submit mid-step); ids the GPU computed, and ids whose buffer the application took, are read
/// back and checked as before.
#[test]
fn index_checks_use_the_uploaded_range_and_read_back_otherwise() {
    // A device of its own: its submit count is this test's alone.
    let Some(g) = common::own_gpu("index_checks_use_the_uploaded_range_and_read_back_otherwise", |_| {}) else {
        return;
    };
    let c = cpu();
    let table = Tensor::randn(&[5, 3], &g).unwrap();
    let logits = Tensor::randn(&[4, 5], &g).unwrap();
    let ids = Tensor::from_vec(vec![4u32, 0, 2, 4], &[4], &g).unwrap();
    g.sync().unwrap();
    let before = g.memory_stats().submits;
    let rows = table.index_select(0, &ids).unwrap();
    let loss = logits.cross_entropy_rows(&ids, None, 0.0).unwrap();
    assert_eq!(g.memory_stats().submits, before, "in-range ids from the host were read back");
    let ids_c = ids.to(&c).unwrap();
    let want_rows = table.to(&c).unwrap().index_select(0, &ids_c).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(rows.to_vec::<f32>().unwrap(), want_rows);
    let want_loss = logits.to(&c).unwrap().cross_entropy_rows(&ids_c, None, 0.0).unwrap().to_vec::<f32>().unwrap();
    for (a, b) in loss.to_vec::<f32>().unwrap().iter().zip(&want_loss) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    // Computed on the GPU: no known range, so the readback still catches it.
    let shifted = ids.add_scalar(1.0).unwrap();
    assert!(matches!(table.index_select(0, &shifted), Err(Error::IndexOutOfRange { index: 5, .. })));
    assert!(matches!(logits.cross_entropy_rows(&shifted, None, 0.0), Err(Error::IndexOutOfRange { index: 5, .. })));
    // Out of range from the host: the exact error, from the readback.
    let bad = Tensor::from_vec(vec![0i32, -2], &[2], &g).unwrap();
    assert!(matches!(table.index_select(0, &bad), Err(Error::IndexOutOfRange { index: -2, .. })));
    // The application may write a buffer it was given: the range is no longer trusted.
    let _ = ids.wgpu_buffer();
    g.sync().unwrap();
    let before = g.memory_stats().submits;
    table.index_select(0, &ids).unwrap();
    assert!(g.memory_stats().submits > before, "ids whose buffer went to the application were not read back");
}

#[test]
fn device_errors() {
    let Some(g) = common::gpu("device_errors") else { return };
    let a = Tensor::ones(&[3], &cpu()).unwrap();
    let b = Tensor::ones(&[3], &g).unwrap();
    assert!(matches!(&a + &b, Err(Error::DeviceMismatch { op: "add", .. })));
    assert!(matches!(a.matmul(&b), Err(Error::DeviceMismatch { .. })));
    assert!(matches!(Device::gpu_named("no-such-adapter-anywhere"), Err(Error::NoDevice { .. })));
    assert!(g.describe().contains("gpu"));
}

#[test]
fn allocations_past_the_limits_are_errors_and_the_device_stays_usable() {
    let huge = [1usize << 20, 1 << 20, 1 << 10];
    assert!(matches!(Tensor::zeros(&huge, &cpu()), Err(Error::OutOfMemory { .. })));
    assert!(matches!(Tensor::zeros(&[usize::MAX, 2], &cpu()), Err(Error::OutOfMemory { .. })));
    let Some(g) = common::gpu("allocations_past_the_limits") else { return };
    assert!(matches!(Tensor::zeros(&huge, &g), Err(Error::OutOfMemory { .. })));
    let t = Tensor::ones(&[4], &g).unwrap().add_scalar(1.0).unwrap();
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![2.0; 4]);
}

#[test]
fn f16_needs_shader_f16() {
    // The GL adapter of lavapipe has no SHADER_F16; where it (or any such adapter) exists,
    // f16 must be a typed error. Where every adapter has f16, f16 must work.
    let Some(g) = common::gpu("f16_needs_shader_f16") else { return };
    let h = Tensor::ones(&[2], &cpu()).unwrap().to_dtype(DType::F16).unwrap();
    let has_f16 = g.gpu_context().map(|c| c.has_f16()).unwrap_or(false);
    match h.to(&g) {
        Ok(t) => assert!(has_f16 && t.to_f64_vec().unwrap() == vec![1.0, 1.0]),
        Err(e) => assert!(!has_f16 && matches!(e, Error::Unsupported { .. }), "{e}"),
    }
    if let Ok(gl) = Device::gpu_named("gl") {
        let gl_f16 = gl.gpu_context().map(|c| c.has_f16()).unwrap_or(false);
        if !gl_f16 {
            assert!(matches!(h.to(&gl), Err(Error::Unsupported { .. })));
        }
    }
}

/// Pools, transposed convolutions and activations refuse bad arguments with typed errors
/// naming the op, and leave their inputs as they were.
#[test]
fn pool_conv_transpose_and_activation_errors() {
    let d = cpu();
    let x = Tensor::arange(0.0, 40.0, 1.0, &d).unwrap().reshape(&[1, 2, 4, 5]).unwrap();
    let before = x.to_vec::<f32>().unwrap();
    let inv = |r: Result<Tensor>, op: &str| match r {
        Err(Error::InvalidArgument { op: o, .. }) => assert_eq!(o, op),
        other => panic!("{op}: expected InvalidArgument, got {:?}", other.map(|t| t.shape().to_vec())),
    };
    let shape = |r: Result<Tensor>, op: &str| match r {
        Err(Error::ShapeMismatch { op: o, .. }) => assert_eq!(o, op),
        other => panic!("{op}: expected ShapeMismatch, got {:?}", other.map(|t| t.shape().to_vec())),
    };
    inv(x.max_pool2d_opts(MaxPool2dOptions { padding: (2, 0), ..MaxPool2dOptions::new((3, 3)) }), "max_pool2d");
    inv(x.max_pool2d_opts(MaxPool2dOptions { dilation: (0, 1), ..MaxPool2dOptions::new((2, 2)) }), "max_pool2d");
    shape(x.max_pool2d_opts(MaxPool2dOptions { dilation: (3, 1), ..MaxPool2dOptions::new((3, 1)) }), "max_pool2d");
    inv(
        x.avg_pool2d_opts(AvgPool2dOptions { divisor_override: Some(0), ..AvgPool2dOptions::new((2, 2)) }),
        "avg_pool2d",
    );
    shape(x.max_pool1d(MaxPool1dOptions::new(2)), "max_pool1d");
    shape(x.squeeze(0).unwrap().max_pool1d(MaxPool1dOptions::new(9)), "max_pool1d");
    shape(x.adaptive_max_pool2d((0, 2)), "adaptive_max_pool2d");
    shape(x.adaptive_max_pool1d(2), "adaptive_max_pool1d");
    let w = Tensor::ones(&[2, 3, 2, 2], &d).unwrap();
    let ct = |o: ConvTranspose2dOptions| x.conv_transpose2d(&w, None, o);
    inv(ct(ConvTranspose2dOptions { output_padding: (1, 0), ..Default::default() }), "conv_transpose2d");
    shape(ct(ConvTranspose2dOptions { groups: 3, ..Default::default() }), "conv_transpose2d");
    shape(ct(ConvTranspose2dOptions { padding: (3, 0), ..Default::default() }), "conv_transpose2d");
    shape(
        x.conv_transpose2d(&w, Some(&Tensor::ones(&[2], &d).unwrap()), ConvTranspose2dOptions::default()),
        "conv_transpose2d",
    );
    inv(x.hardtanh(1.0, -1.0), "hardtanh");
    inv(x.celu(0.0), "celu");
    inv(x.softplus_with(0.0, 20.0), "softplus");
    shape(x.glu(3), "glu");
    shape(x.prelu(&Tensor::ones(&[3], &d).unwrap()), "prelu");
    let i = Tensor::full_dtype(&[3], 1.0, DType::I32, &d).unwrap();
    assert!(matches!(i.selu(), Err(Error::UnsupportedDType { op: "selu", .. })));
    assert!(matches!(
        x.prelu(&Tensor::ones(&[1], &d).unwrap().to_dtype(DType::F64).unwrap()),
        Err(Error::DTypeMismatch { op: "prelu", .. })
    ));
    assert_eq!(x.to_vec::<f32>().unwrap(), before, "inputs untouched");
}

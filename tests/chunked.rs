//! Ops on tensors past `max_storage_buffer_binding_size`, at small sizes: the device here is
//! opened with a 64 KiB binding limit (wgpu validates every binding against it, as lavapipe's
//! 128 MiB limit does for real), so tensors of a few tens of thousands of elements take the
//! windowed path. Every op runs against the CPU oracle on random data: odd sizes, strided,
//! transposed and broadcast inputs, f16 where the adapter has it. `tests/memory.rs` runs the
//! same path on a real 208 MB tensor.

// `&[a.clone()]` reads like the `&[a.clone(), b.clone()]` calls beside it, and cloning a
// Tensor only bumps a reference count: clearer than `std::slice::from_ref(&a)`.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use kiln::prelude::*;

const LIMIT: u64 = 64 << 10;

/// The test adapter again, as a device whose bindings stop at [`LIMIT`].
fn small_binding_gpu(test: &str) -> Option<Device> {
    let dev = common::own_gpu(test, |l| l.max_storage_buffer_binding_size = LIMIT)?;
    let limit = dev.gpu_context().map(|c| c.limits.max_storage_buffer_binding_size);
    assert_eq!(limit, Some(LIMIT));
    Some(dev)
}

fn bytes(t: &Tensor) -> u64 {
    t.numel() as u64 * if t.dtype() == DType::F16 { 2 } else { 4 }
}

#[test]
fn elementwise_ops_past_the_binding_limit_match_the_cpu() {
    let Some(g) = small_binding_gpu("elementwise_ops_past_the_binding_limit_match_the_cpu") else { return };
    let a = common::random(&[211, 197], DType::F32, 1, -2.0, 2.0); // 166 KB
    let b = common::random(&[211, 197], DType::F32, 2, -2.0, 2.0);
    let row = common::random(&[197], DType::F32, 3, -2.0, 2.0);
    let at = common::random(&[197, 211], DType::F32, 4, -2.0, 2.0);
    assert!(bytes(&a) > 2 * LIMIT);
    common::check("exp", &g, &[a.clone()], 1e-5, 1e-6, |x| x[0].exp());
    common::check("add", &g, &[a.clone(), b.clone()], 1e-6, 1e-6, |x| &x[0] + &x[1]);
    common::check("mul by a broadcast row", &g, &[a.clone(), row.clone()], 1e-6, 1e-6, |x| &x[0] * &x[1]);
    common::check("sub a scalar", &g, &[a.clone()], 1e-6, 1e-6, |x| x[0].sub_scalar(0.5));
    common::check("transposed input", &g, &[at.clone(), b.clone()], 1e-6, 1e-6, |x| &x[0].t()? + &x[1]);
    common::check("strided input", &g, &[a.clone()], 1e-6, 1e-6, |x| x[0].slice(1, 1, 197, 2)?.tanh());
    common::check("where", &g, &[a.clone(), b.clone()], 0.0, 0.0, |x| Tensor::where_(&x[0].gt(&x[1])?, &x[0], &x[1]));
    common::check("cast to i32", &g, &[a.mul_scalar(100.0).unwrap()], 0.0, 0.0, |x| x[0].to_dtype(DType::I32));
    common::check("compare", &g, &[a.clone(), b.clone()], 0.0, 0.0, |x| x[0].lt(&x[1]));
    common::check("contiguous copy of a transpose", &g, &[at], 0.0, 0.0, |x| x[0].t()?.contiguous());
    let z = Tensor::full(&[50_001], 2.5, &g).unwrap();
    assert!(z.to_vec::<f32>().unwrap().iter().all(|&v| v == 2.5));
}

#[test]
fn f16_pieces_past_the_binding_limit_match_the_cpu() {
    let Some(g) = small_binding_gpu("f16_pieces_past_the_binding_limit_match_the_cpu") else { return };
    if !g.gpu_context().is_some_and(|c| c.has_f16()) {
        eprintln!("SKIPPED f16_pieces_past_the_binding_limit_match_the_cpu: the adapter has no SHADER_F16");
        return;
    }
    // Odd element counts: pieces end at odd f16 elements.
    let a = common::random(&[3, 40_001], DType::F16, 5, -2.0, 2.0);
    let b = common::random(&[70_001], DType::F16, 6, -2.0, 2.0);
    common::check("f16 exp", &g, &[b.clone()], 2e-3, 1e-3, |x| x[0].exp());
    common::check("f16 row sums", &g, &[a.clone()], 2e-2, 2e-2, |x| x[0].sum(&[1], false));
    common::check("f16 max of everything", &g, &[b.clone()], 0.0, 0.0, |x| x[0].max(&[0], false));
    common::check("f16 argmax of everything", &g, &[b], 0.0, 0.0, |x| x[0].argmax(0, false));
}

#[test]
fn reductions_past_the_binding_limit_match_the_cpu() {
    let Some(g) = small_binding_gpu("reductions_past_the_binding_limit_match_the_cpu") else { return };
    let rows = common::random(&[401, 101], DType::F32, 7, -2.0, 2.0); // 162 KB, rows fit
    let long = common::random(&[3, 40_003], DType::F32, 8, -2.0, 2.0); // each row past the limit
    let ints = common::random(&[2, 33_333], DType::I32, 9, -50.0, 50.0);
    common::check("row sums", &g, &[rows.clone()], 1e-5, 1e-4, |x| x[0].sum(&[1], false));
    common::check("column max (strided rows)", &g, &[rows.clone()], 0.0, 0.0, |x| x[0].max(&[0], false));
    common::check("mean of everything", &g, &[rows.clone()], 1e-4, 1e-5, |x| x[0].mean_all());
    common::check("long row sums", &g, &[long.clone()], 1e-5, 1e-3, |x| x[0].sum(&[1], true));
    common::check("long row min", &g, &[long.clone()], 0.0, 0.0, |x| x[0].min(&[1], false));
    common::check("long row argmax", &g, &[long.clone()], 0.0, 0.0, |x| x[0].argmax(1, false));
    common::check("long row argmin", &g, &[long], 0.0, 0.0, |x| x[0].argmin(-1, false));
    common::check("int prod", &g, &[ints.clone()], 0.0, 0.0, |x| x[0].prod(&[1], false));
    common::check("int argmax of everything", &g, &[ints], 0.0, 0.0, |x| x[0].reshape(&[66_666])?.argmax(0, false));
}

#[test]
fn matmul_past_the_binding_limit_matches_the_cpu() {
    let Some(g) = small_binding_gpu("matmul_past_the_binding_limit_matches_the_cpu") else { return };
    let a = common::random(&[301, 150], DType::F32, 10, -1.0, 1.0); // 180 KB
    let b = common::random(&[150, 7], DType::F32, 11, -1.0, 1.0);
    common::check("A past the limit", &g, &[a.clone(), b.clone()], 1e-4, 1e-4, |x| x[0].matmul(&x[1]));
    let ba = common::random(&[3, 101, 150], DType::F32, 12, -1.0, 1.0);
    let bb = common::random(&[3, 150, 5], DType::F32, 13, -1.0, 1.0);
    common::check("batched", &g, &[ba, bb], 1e-4, 1e-4, |x| x[0].matmul(&x[1]));
    let tall = common::random(&[600, 9], DType::F32, 14, -1.0, 1.0);
    let wide = common::random(&[9, 41], DType::F32, 15, -1.0, 1.0); // C: 98 KB
    common::check("C past the limit", &g, &[tall, wide], 1e-4, 1e-4, |x| x[0].matmul(&x[1]));
    common::check("A transposed", &g, &[a, b], 1e-4, 1e-4, |x| x[0].t()?.t()?.matmul(&x[1]));
}

#[test]
fn ops_without_a_split_refuse_with_a_typed_error() {
    let Some(g) = small_binding_gpu("ops_without_a_split_refuse_with_a_typed_error") else { return };
    let a = common::random(&[211, 197], DType::F32, 16, -2.0, 2.0).to(&g).unwrap();
    match a.softmax(-1) {
        Err(Error::OutOfMemory { msg, .. }) => assert!(msg.contains("max_storage_buffer_binding_size"), "{msg}"),
        other => panic!("softmax of a tensor past the binding limit: {:?}", other.map(|t| t.shape().to_vec())),
    }
    // The device goes on.
    let (got, want) =
        (a.sum_all().unwrap().item().unwrap(), a.to(&Device::cpu()).unwrap().sum_all().unwrap().item().unwrap());
    assert!((got - want).abs() < 1e-3, "sum after the refusal: {got} vs {want}");
}

#[test]
fn random_tensors_past_the_binding_limit_match_the_cpu() {
    let Some(g) = small_binding_gpu("random_tensors_past_the_binding_limit_match_the_cpu") else { return };
    let cpu = Device::cpu();
    // Generated in pieces whose first element is a multiple of 4: each piece starts on a
    // Philox block, so the pieces join into the same stream as the CPU's (and dropout of a
    // tensor past the limit multiplies by that mask).
    let st = kiln::RngState { seed: 5, offset: 0xffff_f000 };
    let draw = |d: &Device, f: &dyn Fn(&Device) -> Result<Tensor>| {
        kiln::set_rng_state(st);
        f(d).unwrap().to_f64_vec().unwrap()
    };
    let n = 50_001; // 200 KB of f32
    assert!(n as u64 * 4 > 3 * LIMIT);
    let same = |what: &str, f: &dyn Fn(&Device) -> Result<Tensor>| assert!(draw(&g, f) == draw(&cpu, f), "{what}");
    same("random_bits", &|d| Tensor::random_bits(&[n], d));
    same("rand", &|d| Tensor::rand(&[n], d));
    same("bernoulli", &|d| Tensor::bernoulli(&[n], 0.7, d));
    let x = common::random(&[n], DType::F32, 11, -2.0, 2.0);
    same("dropout", &|d| x.to(d)?.dropout(0.25));
    let (zg, zc) = (draw(&g, &|d| Tensor::randn(&[n], d)), draw(&cpu, &|d| Tensor::randn(&[n], d)));
    common::assert_close("randn", &zg, &zc, 0.0, 1e-5);
}

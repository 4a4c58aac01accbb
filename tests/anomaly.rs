//! The opt-in NaN watch names the first op whose output (forward) or gradient (backward)
//! holds NaN/inf. Its own test binary: the switch is process-wide.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use kiln::prelude::*;

fn run(device: &Device) {
    kiln::set_detect_anomaly(true);
    let x = Tensor::from_vec(vec![-1.0f32, 4.0], &[2], device).unwrap();
    // Forward: sqrt(-1) is the first NaN.
    let e = x.sqrt().unwrap_err();
    assert!(matches!(e, Error::Anomaly { op: "sqrt", .. }), "{e}");
    // Backward: d/dx sqrt(x) at 0 is inf, while the forward values are finite.
    let z = Tensor::from_vec(vec![0.0f32, 4.0], &[2], device).unwrap().with_grad();
    let loss = z.sqrt().unwrap().sum_all().unwrap();
    let e = loss.backward().unwrap_err();
    assert!(e.to_string().contains("sqrt") && e.to_string().contains("anomaly"), "{e}");
    // Off again: NaN flows silently, as usual.
    kiln::set_detect_anomaly(false);
    assert!(x.sqrt().unwrap().to_vec::<f32>().unwrap()[0].is_nan());
}

#[test]
fn anomaly_mode_names_the_op() {
    run(&Device::cpu());
    if let Some(g) = common::gpu("anomaly_mode_names_the_op") {
        run(&g);
    }
}

//! A lost device (simulated with `Device::destroy`) gives `DeviceLost` from the next op and
//! from readback: no hang, no panic. Its own test binary, so no other test shares the device.

mod common;

use kiln::prelude::*;

#[test]
fn lost_device_is_an_error() {
    let Some(g) = common::gpu("lost_device_is_an_error") else { return };
    let t = Tensor::ones(&[16], &g).unwrap().add_scalar(1.0).unwrap();
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![2.0; 16]);
    g.destroy();
    assert!(matches!(t.to_vec::<f32>(), Err(Error::DeviceLost { .. })));
    assert!(matches!(t.add_scalar(1.0).and_then(|x| x.to_vec::<f32>()), Err(Error::DeviceLost { .. })));
    assert!(matches!(g.sync(), Err(Error::DeviceLost { .. })));
}

//! Kiln's browser demo, the Rust half (the page is `index.html` + `main.js`; `build.sh` builds
//! both). The page draws, downsamples and plots; this crate runs the model with Kiln on the
//! page's WebGPU device, or on the CPU backend where the browser has no WebGPU:
//! - `loadModel(bytes)` fills the MLP the native `mnist` example trains from its
//!   `model.safetensors`, and `classify(pixels)` gives the ten class probabilities of a drawing;
//! - `startTraining(slice)` + repeated `train(steps)` train the same MLP on a slice of MNIST in
//!   the tab. Each `train` call records its steps without waiting for the GPU and then reads the
//!   last loss asynchronously, so the page stays responsive and can draw the curve in between.
//!
//! Natively the crate is empty; it exists for wasm32 only.

#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Promise;
use kiln::prelude::*;
use kiln_data::{Batcher, Dataset, MNIST_PIXELS, Mnist, MnistBatcher, normalize_pixel};
use kiln_nn::optim::{Adam, AdamConfig, Optimizer};
use kiln_nn::{Dropout, Linear, Module, ModuleExt, Relu, Sequential};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

/// The native `mnist` example's MLP (784 → 512 → 256 → 10, ReLU, dropout 0.2): the same layers
/// in the same order, so that its checkpoint's keys (`0.weight`, `3.bias`, ...) match.
fn mlp(device: &Device) -> Result<Sequential> {
    Ok(Sequential::new()
        .add(Linear::new(784, 512, true, device)?)
        .add(Relu)
        .add(Dropout::new(0.2))
        .add(Linear::new(512, 256, true, device)?)
        .add(Relu)
        .add(Dropout::new(0.2))
        .add(Linear::new(256, 10, true, device)?))
}

fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsValue::from(JsError::new(&e.to_string()))
}

/// Training in the tab: the model, its optimizer, the slice and where the epoch stands.
struct Trainer {
    model: Rc<Sequential>,
    opt: Adam,
    data: Mnist,
    order: Vec<usize>,
    next: usize,
    batch: usize,
    seed: u64,
}

impl Trainer {
    /// The next `batch` images (normalised like the native example) and labels, reshuffling the
    /// slice at the end of each pass.
    fn next_batch(&mut self, device: &Device) -> Result<(Tensor, Tensor)> {
        if self.next + self.batch > self.order.len() {
            self.seed += 1;
            shuffle(&mut self.order, self.seed);
            self.next = 0;
        }
        let items = self.order[self.next..self.next + self.batch].iter().filter_map(|&i| self.data.get(i)).collect();
        self.next += self.batch;
        let b = MnistBatcher.batch(items);
        Ok((
            Tensor::from_vec(b.images, &[b.size, MNIST_PIXELS], device)?,
            Tensor::from_vec(b.labels, &[b.size], device)?,
        ))
    }

    /// Records one forward/backward/Adam step; returns the loss tensor (not read).
    fn step(&mut self, device: &Device) -> Result<Tensor> {
        let (x, y) = self.next_batch(device)?;
        self.model.train(); // dropout on (the classifier may share this model)
        let loss = kiln_nn::loss::cross_entropy_loss(&self.model.forward(&x)?, &y)?;
        self.opt.zero_grad();
        loss.backward()?;
        self.opt.step()?;
        Ok(loss)
    }
}

/// Fisher-Yates with a xorshift generator: a reproducible order per pass.
fn shuffle(v: &mut [usize], seed: u64) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
}

struct State {
    device: Device,
    classifier: Option<Rc<Sequential>>,
    trainer: Option<Trainer>,
}

/// The demo's handle, held by the page.
#[wasm_bindgen]
pub struct Demo {
    state: Rc<RefCell<State>>,
    gpu_error: Option<String>,
}

#[wasm_bindgen]
impl Demo {
    /// Opens the page's WebGPU device; without one (or with `force_cpu`), the CPU backend, and
    /// `gpuError` says why.
    pub async fn create(force_cpu: bool) -> Demo {
        let (device, gpu_error) = if force_cpu {
            (Device::cpu(), Some("the CPU backend was asked for (?cpu in the address)".to_string()))
        } else {
            match Device::gpu_async().await {
                Ok(d) => (d, None),
                Err(e) => (Device::cpu(), Some(e.to_string())),
            }
        };
        Demo { state: Rc::new(RefCell::new(State { device, classifier: None, trainer: None })), gpu_error }
    }

    /// The device in words: the adapter's name and backend, or the CPU backend.
    #[wasm_bindgen(getter)]
    pub fn device(&self) -> String {
        self.state.borrow().device.describe()
    }

    /// Whether the model runs on WebGPU.
    #[wasm_bindgen(getter, js_name = onGpu)]
    pub fn on_gpu(&self) -> bool {
        self.state.borrow().device.is_gpu()
    }

    /// Why the demo runs on the CPU backend, if it does.
    #[wasm_bindgen(getter, js_name = gpuError)]
    pub fn gpu_error(&self) -> Option<String> {
        self.gpu_error.clone()
    }

    /// Fills the classifier from a safetensors file's bytes (the native example's
    /// `model.safetensors`). Errors say what is wrong with the file; the old classifier stays.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(&self, bytes: &[u8]) -> std::result::Result<(), JsValue> {
        let mut state = self.state.borrow_mut();
        let model = mlp(&state.device).map_err(js_error)?;
        kiln_nn::checkpoint::load_from_bytes(&model, bytes).map_err(js_error)?;
        state.classifier = Some(Rc::new(model));
        Ok(())
    }

    /// Classifies 784 pixels (28×28, row-major, 0 = background, 255 = ink, centred like
    /// MNIST); resolves to a Float32Array of the ten class probabilities.
    pub fn classify(&self, pixels: Vec<u8>) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            if pixels.len() != MNIST_PIXELS {
                return Err(js_error(format!("classify: {} pixels, expected {MNIST_PIXELS}", pixels.len())));
            }
            let probs = {
                let state = state.borrow();
                let model = state.classifier.as_ref().ok_or_else(|| js_error("no model is loaded yet"))?;
                let x: Vec<f32> = pixels.iter().map(|&p| normalize_pixel(p)).collect();
                let x = Tensor::from_vec(x, &[1, MNIST_PIXELS], &state.device).map_err(js_error)?;
                model.eval(); // dropout off
                no_grad(|| model.forward(&x)?.softmax(-1)).map_err(js_error)?
            };
            let v = probs.to_vec_async::<f32>().await.map_err(js_error)?;
            Ok(js_sys::Float32Array::from(v.as_slice()).into())
        })
    }

    /// Starts training a fresh MLP on `slice` (`n` images of 784 bytes, then their `n` labels:
    /// what `build.sh` writes to `mnist-slice.bin`) with Adam at `lr`, `batch` images a step.
    /// Returns `n`.
    #[wasm_bindgen(js_name = startTraining)]
    pub fn start_training(&self, slice: &[u8], batch: usize, lr: f64) -> std::result::Result<usize, JsValue> {
        let n = slice.len() / (MNIST_PIXELS + 1);
        if n == 0 || slice.len() != n * (MNIST_PIXELS + 1) || batch == 0 || batch > n {
            return Err(js_error(format!(
                "startTraining: {} bytes are not whole images of {MNIST_PIXELS} pixels plus labels, or batch {batch} does not fit",
                slice.len()
            )));
        }
        let (images, labels) = slice.split_at(n * MNIST_PIXELS);
        let data = Mnist::from_parts(images.to_vec(), labels.to_vec()).map_err(js_error)?;
        let mut state = self.state.borrow_mut();
        kiln::manual_seed(0);
        let model = mlp(&state.device).map_err(js_error)?;
        let opt = Adam::new(model.parameters(), AdamConfig { lr, ..Default::default() }).map_err(js_error)?;
        let mut order: Vec<usize> = (0..n).collect();
        shuffle(&mut order, 1);
        state.trainer = Some(Trainer { model: Rc::new(model), opt, data, order, next: 0, batch, seed: 1 });
        Ok(n)
    }

    /// Records `steps` training steps without waiting for the device, then resolves to the last
    /// step's loss, read asynchronously.
    pub fn train(&self, steps: u32) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let loss = {
                let mut guard = state.borrow_mut();
                let State { device, trainer, .. } = &mut *guard;
                let trainer = trainer.as_mut().ok_or_else(|| js_error("train: call startTraining first"))?;
                let mut last = None;
                for _ in 0..steps.max(1) {
                    last = Some(trainer.step(device).map_err(js_error)?);
                }
                last.ok_or_else(|| js_error("train: no step ran"))?
            };
            Ok(JsValue::from_f64(loss.item_async().await.map_err(js_error)?))
        })
    }

    /// Makes the model trained in the tab the classifier.
    #[wasm_bindgen(js_name = useTrainedModel)]
    pub fn use_trained_model(&self) -> std::result::Result<(), JsValue> {
        let mut state = self.state.borrow_mut();
        let trainer = state.trainer.as_ref().ok_or_else(|| js_error("nothing has been trained yet"))?;
        state.classifier = Some(trainer.model.clone());
        Ok(())
    }
}

//! The predictor thread: holds the model, classifies the newest drawing, and reports the ten
//! class probabilities. The UI sends requests and reads replies without ever blocking; the
//! readback of the probabilities (which waits for the GPU) happens here.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};

use eframe::egui;
use kiln::{Device, Tensor, no_grad};
use kiln_nn::{Module, ModuleExt, Sequential};

use crate::AnyResult;
use crate::model::ModelKind;

/// What the UI asks of the predictor.
pub enum Request {
    /// Load the model from this checkpoint (replacing the current one).
    Load(PathBuf),
    /// Classify one 28×28 image of normalised pixels; `generation` identifies the drawing.
    Classify { generation: u64, pixels: Vec<f32> },
}

/// What the predictor reports.
pub enum Reply {
    Loaded {
        path: PathBuf,
        kind: ModelKind,
    },
    /// The checkpoint is missing or unreadable; the message says what to do.
    LoadFailed(String),
    Probabilities {
        generation: u64,
        probs: [f32; 10],
    },
    Failed(String),
}

/// The UI's end of the predictor thread.
pub struct Predictor {
    requests: Sender<Request>,
    replies: Receiver<Reply>,
}

impl Predictor {
    /// Starts the thread on `device`; it wakes the UI (`ctx.request_repaint`) after each reply.
    pub fn spawn(device: Device, ctx: egui::Context) -> std::io::Result<Predictor> {
        let (requests, inbox) = mpsc::channel::<Request>();
        let (outbox, replies) = mpsc::channel::<Reply>();
        std::thread::Builder::new().name("kiln-predictor".into()).spawn(move || {
            serve(&device, &inbox, |reply| {
                // The UI has gone when the send fails; the next recv ends the loop then.
                let _ = outbox.send(reply);
                ctx.request_repaint();
            })
        })?;
        Ok(Predictor { requests, replies })
    }

    pub fn send(&self, request: Request) {
        // Fails only if the thread ended, which it does only when this side is dropped.
        let _ = self.requests.send(request);
    }

    /// The replies that have arrived since the last call, without waiting.
    pub fn poll(&self) -> Vec<Reply> {
        let mut out = Vec::new();
        loop {
            match self.replies.try_recv() {
                Ok(reply) => out.push(reply),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return out,
            }
        }
    }
}

fn serve(device: &Device, inbox: &Receiver<Request>, mut reply: impl FnMut(Reply)) {
    let mut model: Option<(Sequential, ModelKind)> = None;
    while let Ok(first) = inbox.recv() {
        // Only the newest drawing matters: skip classifications that a later one replaced.
        let mut pending = vec![first];
        pending.extend(inbox.try_iter());
        let last_classify = pending.iter().rposition(|r| matches!(r, Request::Classify { .. }));
        for (i, request) in pending.into_iter().enumerate() {
            match request {
                Request::Load(path) => match load(&path, device) {
                    Ok(loaded) => {
                        reply(Reply::Loaded { path, kind: loaded.1 });
                        model = Some(loaded);
                    }
                    Err(e) => {
                        model = None;
                        reply(Reply::LoadFailed(e.to_string()));
                    }
                },
                Request::Classify { generation, pixels } if Some(i) == last_classify => {
                    let Some((m, kind)) = &model else { continue };
                    match classify(m, *kind, pixels, device) {
                        Ok(probs) => reply(Reply::Probabilities { generation, probs }),
                        Err(e) => reply(Reply::Failed(e.to_string())),
                    }
                }
                Request::Classify { .. } => {}
            }
        }
    }
}

/// The model saved at `path`, its architecture read from the file, in evaluation mode.
pub fn load(path: &Path, device: &Device) -> AnyResult<(Sequential, ModelKind)> {
    if !path.is_file() {
        return Err(format!(
            "No checkpoint at {}.\nTrain one with\n    cargo run --release --example mnist\n\
             (from the repository root), or in the Train tab, or pass --checkpoint PATH.",
            path.display()
        )
        .into());
    }
    let tensors = kiln_nn::checkpoint::load_state_dict(path)?;
    let kind = match tensors.iter().find(|(name, _)| name == "0.weight").map(|(_, t)| t.rank()) {
        Some(4) => ModelKind::Cnn,
        _ => ModelKind::Mlp,
    };
    let model = kind.build(device)?;
    kiln_nn::checkpoint::load(&model, path)
        .map_err(|e| format!("cannot load {} as the mnist example's {kind}: {e}", path.display()))?;
    model.eval();
    Ok((model, kind))
}

/// The ten class probabilities of one image of normalised pixels.
pub fn classify(model: &Sequential, kind: ModelKind, pixels: Vec<f32>, device: &Device) -> AnyResult<[f32; 10]> {
    let probs = no_grad(|| -> kiln::Result<Vec<f32>> {
        let x: Tensor = kind.input(pixels, 1, device)?;
        model.forward(&x)?.softmax(-1)?.to_vec::<f32>()
    })?;
    probs.try_into().map_err(|v: Vec<f32>| format!("the model gave {} outputs, expected 10", v.len()).into())
}

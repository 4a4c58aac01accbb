//! The window: a Draw tab (canvas and live class probabilities) and a Train tab (background
//! training with a loss curve and a progress bar).

use std::path::PathBuf;

use eframe::egui::{self, Color32, ColorImage, RichText, Stroke, TextureHandle, TextureOptions, Vec2};
use kiln::Device;

use crate::canvas::{self, Canvas};
use crate::predictor::{Predictor, Reply, Request};
use crate::script::{Script, ScriptRun};
use crate::trainer::{TrainConfig, TrainEvent, Trainer};
use crate::{APP_CHECKPOINT, AnyResult};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tab {
    Draw,
    Train,
}

enum ModelState {
    Loading(PathBuf),
    Ready { path: PathBuf, kind: crate::model::ModelKind },
    Missing(String),
}

/// Everything the Train tab shows about the current or last run.
#[derive(Default)]
struct TrainView {
    epochs: usize,
    trainer: Option<Trainer>,
    total_steps: usize,
    step: usize,
    /// (step, mean loss) points of the curve.
    losses: Vec<(usize, f64)>,
    accuracies: Vec<(usize, f64)>,
    status: String,
    saved: Option<PathBuf>,
}

pub struct DigitsApp {
    device: Device,
    tab: Tab,
    canvas: Canvas,
    predictor: Predictor,
    model: ModelState,
    /// The newest probabilities and the canvas generation they belong to.
    probs: Option<(u64, [f32; 10])>,
    /// The canvas generation last sent for classification.
    sent: Option<u64>,
    model_view: Option<TextureHandle>,
    train: TrainView,
    script: Option<ScriptRun>,
    error: Option<String>,
}

impl DigitsApp {
    /// The app on `device` (the window's own wgpu device, shared), loading `checkpoint`.
    pub fn new(
        ctx: &egui::Context,
        device: Device,
        checkpoint: PathBuf,
        script: Option<Script>,
    ) -> AnyResult<DigitsApp> {
        let predictor = Predictor::spawn(device.clone(), ctx.clone())?;
        predictor.send(Request::Load(checkpoint.clone()));
        let script = script.map(ScriptRun::new).transpose()?;
        Ok(DigitsApp {
            device,
            tab: Tab::Draw,
            canvas: Canvas::default(),
            predictor,
            model: ModelState::Loading(checkpoint),
            probs: None,
            sent: None,
            model_view: None,
            train: TrainView { epochs: 1, ..Default::default() },
            script,
            error: None,
        })
    }

    fn read_predictor(&mut self, ctx: &egui::Context) {
        for reply in self.predictor.poll() {
            match reply {
                Reply::Loaded { path, kind } => {
                    self.model = ModelState::Ready { path, kind };
                    self.sent = None; // classify the current drawing with the new model
                    if let Some(s) = &mut self.script {
                        s.model_ready(&mut self.canvas);
                    }
                }
                Reply::LoadFailed(msg) => {
                    if let Some(s) = self.script.as_mut().filter(|s| !s.trains()) {
                        s.fail(ctx, &msg);
                    }
                    self.model = ModelState::Missing(msg);
                    self.probs = None;
                }
                Reply::Probabilities { generation, probs } => self.probs = Some((generation, probs)),
                Reply::Failed(msg) => self.error = Some(msg),
            }
        }
    }

    /// Sends the drawing for classification when it changed since the last request.
    fn request_prediction(&mut self, ctx: &egui::Context) {
        let generation = self.canvas.generation();
        if self.sent == Some(generation) || !matches!(self.model, ModelState::Ready { .. }) {
            return;
        }
        self.sent = Some(generation);
        let centred = canvas::centered(self.canvas.ink());
        let image = match &centred {
            Some(img) => ColorImage::new(
                [28, 28],
                img.iter().map(|&v| Color32::from_gray((v.clamp(0.0, 1.0) * 255.0) as u8)).collect(),
            ),
            None => ColorImage::new([28, 28], vec![Color32::BLACK; 28 * 28]),
        };
        match &mut self.model_view {
            Some(t) => t.set(image, TextureOptions::NEAREST),
            None => self.model_view = Some(ctx.load_texture("digits-model-input", image, TextureOptions::NEAREST)),
        }
        match canvas::mnist_input(self.canvas.ink()) {
            Some(pixels) => self.predictor.send(Request::Classify { generation, pixels }),
            None => self.probs = None,
        }
    }

    fn draw_tab(&mut self, ui: &mut egui::Ui) {
        ui.horizontal_top(|ui| {
            ui.vertical(|ui| {
                ui.label("Draw a digit (hold the left button):");
                self.canvas.show(ui, 336.0);
                ui.horizontal(|ui| {
                    if ui.button("Clear").clicked() {
                        self.canvas.clear();
                    }
                    if let Some(t) = &self.model_view {
                        ui.label("model input:");
                        ui.add(egui::Image::new(t).fit_to_exact_size(Vec2::splat(56.0)));
                    }
                });
            });
            ui.add_space(16.0);
            ui.vertical(|ui| {
                ui.set_min_width(360.0);
                match &self.model {
                    ModelState::Loading(path) => {
                        ui.label(format!("Loading {} …", path.display()));
                    }
                    ModelState::Missing(msg) => {
                        ui.colored_label(ui.visuals().warn_fg_color, msg.as_str());
                    }
                    ModelState::Ready { path, kind } => {
                        // The last two parts of the path (runs/mnist/model.safetensors → mnist/model.safetensors).
                        let parts: Vec<_> = path.iter().map(|p| p.to_string_lossy()).collect();
                        let name = parts[parts.len().saturating_sub(2)..].join("/");
                        ui.label(format!("Model: {kind}, {name}")).on_hover_text(path.display().to_string());
                        self.probability_bars(ui);
                    }
                }
                if let Some(e) = &self.error {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
            });
        });
    }

    fn probability_bars(&self, ui: &mut egui::Ui) {
        let probs = self.probs.filter(|_| !self.canvas.is_empty()).map(|(_, p)| p);
        let best = probs.and_then(|p| (0..10).max_by(|&a, &b| p[a].total_cmp(&p[b])));
        ui.add_space(4.0);
        match (best, probs) {
            (Some(d), Some(p)) => ui.heading(format!("Prediction: {d}  ({:.1} %)", 100.0 * p[d])),
            _ => ui.heading("Prediction: —"),
        };
        ui.add_space(4.0);
        for digit in 0..10 {
            let p = probs.map_or(0.0, |p| p[digit]);
            ui.horizontal(|ui| {
                let text = RichText::new(format!("{digit}")).monospace().size(18.0);
                ui.label(if best == Some(digit) { text.strong() } else { text });
                probability_bar(ui, p, best == Some(digit));
            });
        }
    }

    fn read_trainer(&mut self) {
        let Some(trainer) = &self.train.trainer else { return };
        for event in trainer.poll() {
            let t = &mut self.train;
            match event {
                TrainEvent::Started { total_steps, device } => {
                    t.total_steps = total_steps;
                    t.status = format!("training on {device}");
                }
                TrainEvent::Loss { step, loss } => {
                    t.step = step;
                    t.losses.push((step, loss));
                }
                TrainEvent::Evaluated { epoch, test_acc } => t.accuracies.push((epoch, test_acc)),
                TrainEvent::Saved { path } => {
                    t.status = format!("done; saved {}", path.display());
                    t.saved = Some(path);
                }
                TrainEvent::Stopped => t.status = "stopped".into(),
                TrainEvent::Failed(e) => t.status = format!("failed: {e}"),
            }
        }
        if self.train.trainer.as_ref().is_some_and(Trainer::finished) {
            self.train.trainer = None;
        }
    }

    fn train_tab(&mut self, ui: &mut egui::Ui) {
        let running = self.train.trainer.is_some();
        ui.horizontal(|ui| {
            ui.label("Epochs:");
            ui.add_enabled(!running, egui::DragValue::new(&mut self.train.epochs).range(1..=20));
            if running {
                if ui.button("Stop").clicked()
                    && let Some(t) = &self.train.trainer
                {
                    t.stop();
                }
            } else if ui.button("Train the MLP on MNIST").clicked() {
                self.start_training(ui.ctx(), None);
            }
        });
        let t = &self.train;
        let fraction = if t.total_steps == 0 { 0.0 } else { t.step as f32 / t.total_steps as f32 };
        ui.add(egui::ProgressBar::new(fraction).text(format!("step {} / {}", t.step, t.total_steps)));
        ui.label(&t.status);
        for (epoch, acc) in &t.accuracies {
            ui.label(format!("epoch {epoch}: test accuracy {:.2} %", 100.0 * acc));
        }
        if let Some(path) = t.saved.clone()
            && ui.button("Use this model in the Draw tab").clicked()
        {
            self.model = ModelState::Loading(path.clone());
            self.predictor.send(Request::Load(path));
            self.tab = Tab::Draw;
        }
        ui.add_space(8.0);
        loss_curve(ui, &self.train.losses);
    }

    /// Starts a run of `self.train.epochs` epochs, or of `max_steps` steps.
    fn start_training(&mut self, ctx: &egui::Context, max_steps: Option<usize>) {
        let cfg = TrainConfig {
            epochs: self.train.epochs,
            max_steps,
            out: PathBuf::from(APP_CHECKPOINT),
            ..Default::default()
        };
        self.train = TrainView { epochs: self.train.epochs, status: "starting…".into(), ..Default::default() };
        match Trainer::spawn(cfg, self.device.clone(), ctx.clone()) {
            Ok(t) => self.train.trainer = Some(t),
            Err(e) => self.train.status = format!("cannot start the training thread: {e}"),
        }
    }
}

/// A plain horizontal bar, `p` of its width filled (egui's ProgressBar draws a rounded stub
/// even at 0, which reads as a small probability), with the percentage beside it.
fn probability_bar(ui: &mut egui::Ui, p: f32, best: bool) {
    let (rect, _) = ui.allocate_exact_size(Vec2::new(220.0, 18.0), egui::Sense::hover());
    let painter = ui.painter();
    painter.rect_filled(rect, 3.0, ui.visuals().extreme_bg_color);
    let filled = egui::Rect::from_min_size(rect.min, Vec2::new(rect.width() * p.clamp(0.0, 1.0), rect.height()));
    let colour = if best { Color32::from_rgb(60, 140, 220) } else { Color32::from_gray(110) };
    painter.rect_filled(filled, 3.0, colour);
    ui.label(RichText::new(format!("{:5.1} %", 100.0 * p)).monospace());
}

/// The training loss against the step, on axes from 0 to the largest loss.
fn loss_curve(ui: &mut egui::Ui, losses: &[(usize, f64)]) {
    ui.label("Training loss (mean over each 10 steps)");
    let size = Vec2::new(ui.available_width().max(200.0), ui.available_height().clamp(120.0, 320.0));
    let (rect, _) = ui.allocate_exact_size(size, egui::Sense::hover());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 2.0, ui.visuals().extreme_bg_color);
    let Some(&(last_step, last_loss)) = losses.last() else { return };
    let top = losses.iter().map(|&(_, l)| l).fold(0.0f64, f64::max).max(1e-6);
    let inner = rect.shrink(8.0);
    let point = |(s, l): (usize, f64)| {
        egui::pos2(
            inner.left() + inner.width() * s as f32 / last_step.max(1) as f32,
            inner.bottom() - inner.height() * (l / top) as f32,
        )
    };
    let line: Vec<egui::Pos2> = losses.iter().copied().map(point).collect();
    painter.add(egui::Shape::line(line, Stroke::new(2.0, Color32::from_rgb(230, 120, 40))));
    let text = ui.visuals().text_color();
    let font = egui::FontId::monospace(12.0);
    // Axis ends: loss 0 to its maximum upwards, step 0 to the last step rightwards.
    painter.text(inner.left_top(), egui::Align2::LEFT_TOP, format!("{top:.3}"), font.clone(), text);
    painter.text(inner.left_bottom(), egui::Align2::LEFT_BOTTOM, "0", font.clone(), text);
    painter.text(inner.right_bottom(), egui::Align2::RIGHT_BOTTOM, format!("step {last_step}"), font.clone(), text);
    painter.text(inner.right_top(), egui::Align2::RIGHT_TOP, format!("last loss {last_loss:.4}"), font, text);
}

impl eframe::App for DigitsApp {
    fn raw_input_hook(&mut self, _ctx: &egui::Context, raw_input: &mut egui::RawInput) {
        if let Some(s) = &mut self.script {
            s.inject(raw_input, &self.canvas);
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.read_predictor(&ctx);
        self.read_trainer();
        if let Some(s) = &mut self.script {
            self.tab = if s.trains() { Tab::Train } else { Tab::Draw };
            if let Some(steps) = s.take_training() {
                self.start_training(&ctx, Some(steps));
            }
        }
        egui::Panel::top("tabs").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.selectable_value(&mut self.tab, Tab::Draw, RichText::new("Draw").size(16.0));
                ui.selectable_value(&mut self.tab, Tab::Train, RichText::new("Train").size(16.0));
            });
        });
        egui::Panel::bottom("device").show(ui, |ui| {
            let line = format!("Kiln runs on the window's own wgpu device: {}", self.device.describe());
            ui.add(egui::Label::new(line.clone()).truncate()).on_hover_text(line);
        });
        egui::CentralPanel::default().show(ui, |ui| match self.tab {
            Tab::Draw => self.draw_tab(ui),
            Tab::Train => self.train_tab(ui),
        });
        self.request_prediction(&ctx);
        if self.train.trainer.is_some() {
            // Keep the curve moving even between events (and notice the thread's end).
            ctx.request_repaint_after(std::time::Duration::from_millis(200));
        }
        if let Some(s) = &mut self.script
            && let Some(code) = s.after_frame(&ctx, &self.canvas, self.probs, self.train.trainer.is_none())
        {
            if code != 0 {
                std::process::exit(code);
            }
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }
}

//! Scripted input for tests: `--script draw=<MNIST test index | PNG path>,screenshot=<PNG path>`
//! makes the app draw a digit itself, through the same pointer events a mouse sends, wait for
//! the prediction of that drawing, take a screenshot of the window, write it as PNG, print
//! `predicted <digit>` on stdout and close. `--script train=<steps>,screenshot=<PNG path>`
//! instead trains for that many steps in the Train tab, then screenshots it and prints
//! `trained <steps> steps`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use eframe::egui::{self, ColorImage, Event, Modifiers, PointerButton, RawInput};
use kiln_data::{MNIST_SIDE, Mnist};

use crate::AnyResult;
use crate::canvas::Canvas;

/// Where the digit to draw comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum DigitSource {
    /// An image of MNIST's test set, by index.
    MnistTest(usize),
    /// A 28×28 grayscale PNG (light digit on dark, or inverted).
    Png(PathBuf),
}

/// A parsed `--script` value.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub action: Action,
    pub screenshot: PathBuf,
}

/// What a script does before its screenshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Draw(DigitSource),
    /// Train this many steps in the Train tab.
    Train(usize),
}

impl Script {
    /// Parses `draw=<index or path>,screenshot=<path>` or `train=<steps>,screenshot=<path>`
    /// (keys in any order).
    pub fn parse(spec: &str) -> Result<Script, String> {
        let (mut action, mut screenshot) = (None, None);
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("draw", v)) => {
                    let v = v.strip_prefix("mnist:").unwrap_or(v);
                    action = Some(Action::Draw(match v.parse::<usize>() {
                        Ok(i) => DigitSource::MnistTest(i),
                        Err(_) => DigitSource::Png(PathBuf::from(v)),
                    }))
                }
                Some(("train", v)) => match v.parse::<usize>() {
                    Ok(steps) if steps > 0 => action = Some(Action::Train(steps)),
                    _ => return Err(format!("--script: train={v}: expected a number of steps, at least 1")),
                },
                Some(("screenshot", v)) if !v.is_empty() => screenshot = Some(PathBuf::from(v)),
                _ => {
                    return Err(format!(
                        "--script: cannot read {part:?}; expected draw=<MNIST test index or PNG>,screenshot=<PNG path>"
                    ));
                }
            }
        }
        match (action, screenshot) {
            (Some(action), Some(screenshot)) => Ok(Script { action, screenshot }),
            _ => {
                Err("--script needs draw=<MNIST test index or PNG> (or train=<steps>) and screenshot=<PNG path>".into())
            }
        }
    }
}

/// The digit's ink in `[0, 1]`, 28×28, and its label when known.
pub fn digit_ink(source: &DigitSource) -> AnyResult<(Vec<f32>, Option<u8>)> {
    match source {
        DigitSource::MnistTest(i) => {
            let test = Mnist::test()?;
            let image =
                test.image(*i).ok_or_else(|| format!("MNIST test index {i} out of range (0..{})", test.len()))?;
            Ok((image.iter().map(|&p| f32::from(p) / 255.0).collect(), test.label(*i)))
        }
        DigitSource::Png(path) => Ok((read_png_ink(path)?, None)),
    }
}

/// One straight stroke per run of dark-enough pixels in a row: (row, first column, last column).
pub fn strokes(ink: &[f32]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for y in 0..MNIST_SIDE {
        let row = &ink[y * MNIST_SIDE..(y + 1) * MNIST_SIDE];
        let mut x = 0;
        while x < MNIST_SIDE {
            if row[x] > 0.5 {
                let start = x;
                while x + 1 < MNIST_SIDE && row[x + 1] > 0.5 {
                    x += 1;
                }
                out.push((y, start, x));
            }
            x += 1;
        }
    }
    out
}

enum Phase {
    /// Waiting for the model to load (or fail to).
    WaitModel,
    /// A training run of this many steps is to be started by the app.
    StartTraining(usize),
    /// Waiting for the training run to end.
    Training,
    /// Injecting stroke `next` on the coming frame.
    Drawing {
        next: usize,
    },
    /// Waiting for the prediction of the finished drawing.
    WaitPrediction,
    /// Screenshot requested; the receiver reports when the PNG is written.
    Screenshot(Receiver<Result<(), String>>),
    Done,
}

/// A script in progress; the app drives it once per frame.
pub struct ScriptRun {
    script: Script,
    strokes: Vec<(usize, usize, usize)>,
    label: Option<u8>,
    phase: Phase,
    started: Instant,
    /// The prediction that ends the drawing phase: (digit, probability).
    prediction: Option<(usize, f32)>,
    /// Why the script failed; it still takes its screenshot (of the error shown), then exits 1.
    failure: Option<String>,
}

/// The longest a script may take (lavapipe builds pipelines on first use).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

impl ScriptRun {
    pub fn new(script: Script) -> AnyResult<ScriptRun> {
        let (strokes, label, phase) = match &script.action {
            Action::Draw(source) => {
                let (ink, label) = digit_ink(source)?;
                let strokes = strokes(&ink);
                if strokes.is_empty() {
                    return Err(format!("{source:?}: the image has no pixel brighter than half").into());
                }
                (strokes, label, Phase::WaitModel)
            }
            Action::Train(steps) => (Vec::new(), None, Phase::StartTraining(*steps)),
        };
        Ok(ScriptRun { script, strokes, label, phase, started: Instant::now(), prediction: None, failure: None })
    }

    /// Whether the script works in the Train tab.
    pub fn trains(&self) -> bool {
        matches!(self.script.action, Action::Train(_))
    }

    /// The number of steps to train, once: the app starts the run when it gets `Some`.
    pub fn take_training(&mut self) -> Option<usize> {
        let Phase::StartTraining(steps) = self.phase else { return None };
        self.phase = Phase::Training;
        Some(steps)
    }

    /// Called when the model is loaded: start drawing on a cleared canvas.
    pub fn model_ready(&mut self, canvas: &mut Canvas) {
        if matches!(self.phase, Phase::WaitModel) {
            canvas.clear();
            self.phase = Phase::Drawing { next: 0 };
        }
    }

    /// Adds this frame's scripted pointer events: one stroke (press, move, release) a frame.
    pub fn inject(&mut self, raw: &mut RawInput, canvas: &Canvas) {
        let Phase::Drawing { next } = &mut self.phase else { return };
        let Some(&(y, x0, x1)) = self.strokes.get(*next) else { return };
        let (Some(a), Some(b)) = (canvas.cell_center(x0, y), canvas.cell_center(x1, y)) else { return };
        let button = |pos, pressed| Event::PointerButton {
            pos,
            button: PointerButton::Primary,
            pressed,
            modifiers: Modifiers::NONE,
        };
        raw.events.extend([Event::PointerMoved(a), button(a, true), Event::PointerMoved(b), button(b, false)]);
        *next += 1;
    }

    /// Advances the script after a frame: `drawn` is the canvas generation the shown
    /// probabilities belong to, if any. Returns `Some(exit code)` when the app should close.
    /// `trained` says whether the training run ended (saved, stopped or failed).
    pub fn after_frame(
        &mut self,
        ctx: &egui::Context,
        canvas: &Canvas,
        shown: Option<(u64, [f32; 10])>,
        trained: bool,
    ) -> Option<i32> {
        ctx.request_repaint();
        if self.started.elapsed() > SCRIPT_TIMEOUT {
            eprintln!("digits_app: script timed out after {} s", SCRIPT_TIMEOUT.as_secs());
            return Some(1);
        }
        match &mut self.phase {
            Phase::WaitModel | Phase::StartTraining(_) | Phase::Done => None,
            Phase::Training => {
                if trained {
                    self.screenshot(ctx);
                }
                None
            }
            Phase::Drawing { next } => {
                if *next >= self.strokes.len() {
                    self.phase = Phase::WaitPrediction;
                }
                None
            }
            Phase::WaitPrediction => {
                let (generation, probs) = shown?;
                if generation != canvas.generation() {
                    return None;
                }
                let best = (0..10).max_by(|&a, &b| probs[a].total_cmp(&probs[b])).unwrap_or(0);
                self.prediction = Some((best, probs[best]));
                self.screenshot(ctx);
                None
            }
            Phase::Screenshot(rx) => {
                let written = rx.try_recv().ok()?;
                self.phase = Phase::Done;
                if let Err(e) = written {
                    eprintln!("digits_app: screenshot: {e}");
                    return Some(1);
                }
                if let Some(failure) = &self.failure {
                    eprintln!("digits_app: script: {failure}\n(screenshot {})", self.script.screenshot.display());
                    return Some(1);
                }
                let shot = self.script.screenshot.display();
                match (&self.script.action, self.prediction) {
                    (Action::Train(steps), _) => println!("trained {steps} steps; screenshot {shot}"),
                    (Action::Draw(_), Some((digit, p))) => {
                        let label = self.label.map(|l| format!(", label {l}")).unwrap_or_default();
                        println!("predicted {digit} (p = {p:.3}){label}; screenshot {shot}");
                    }
                    (Action::Draw(_), None) => println!("no prediction; screenshot {shot}"),
                }
                Some(0)
            }
        }
    }

    /// Asks for a screenshot of the next frame, written to the script's path.
    fn screenshot(&mut self, ctx: &egui::Context) {
        let (tx, rx) = mpsc::channel();
        let path = self.script.screenshot.clone();
        ctx.request_screenshot(move |image| {
            let _ = tx.send(write_png(&image, &path).map_err(|e| e.to_string()));
        });
        self.phase = Phase::Screenshot(rx);
    }

    /// The script cannot go on (the model did not load): screenshot what the window shows,
    /// then exit with status 1.
    pub fn fail(&mut self, ctx: &egui::Context, message: &str) {
        if self.failure.is_none() {
            self.failure = Some(message.to_owned());
            self.screenshot(ctx);
        }
    }
}

/// Writes an egui screenshot as an 8-bit RGBA PNG.
pub fn write_png(image: &ColorImage, path: &Path) -> AnyResult<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let [w, h] = image.size;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let bytes: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_srgba_unmultiplied()).collect();
    encoder.write_header()?.write_image_data(&bytes)?;
    Ok(())
}

/// A 28×28 PNG as ink in `[0, 1]` (light digit on dark; a mostly light image is inverted).
fn read_png_ink(path: &Path) -> AnyResult<Vec<f32>> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| format!("{}: not a readable PNG: {e}", path.display()))?;
    let size = reader.output_buffer_size().ok_or_else(|| format!("{}: image too large", path.display()))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(|e| format!("{}: corrupt PNG: {e}", path.display()))?;
    if (info.width as usize, info.height as usize) != (MNIST_SIDE, MNIST_SIDE) {
        return Err(format!("{}: image is {}x{}, expected 28x28", path.display(), info.width, info.height).into());
    }
    let channels = info.color_type.samples();
    let gray: Vec<f32> = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|px| if px.len() <= 2 { f32::from(px[0]) } else { (f32::from(px[0]) + f32::from(px[1]) + f32::from(px[2])) / 3.0 } / 255.0)
        .collect();
    let invert = gray.iter().sum::<f32>() / gray.len() as f32 > 0.5;
    Ok(gray.into_iter().map(|v| if invert { 1.0 - v } else { v }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_index_path_and_rejects_junk() {
        let s = Script::parse("draw=3,screenshot=/tmp/a.png").unwrap();
        assert_eq!(s.action, Action::Draw(DigitSource::MnistTest(3)));
        assert_eq!(s.screenshot, PathBuf::from("/tmp/a.png"));
        let s = Script::parse("screenshot=x.png,draw=digit.png").unwrap();
        assert_eq!(s.action, Action::Draw(DigitSource::Png("digit.png".into())));
        assert_eq!(
            Script::parse("draw=mnist:12,screenshot=x.png").unwrap().action,
            Action::Draw(DigitSource::MnistTest(12))
        );
        assert_eq!(Script::parse("train=40,screenshot=x.png").unwrap().action, Action::Train(40));
        assert!(Script::parse("train=0,screenshot=x.png").is_err());
        assert!(Script::parse("draw=3").is_err());
        assert!(Script::parse("draw=3,screenshot=x.png,zoom=2").is_err());
    }

    #[test]
    fn strokes_cover_each_run_of_bright_pixels() {
        let mut ink = vec![0.0f32; MNIST_SIDE * MNIST_SIDE];
        ink[2 * MNIST_SIDE + 3..2 * MNIST_SIDE + 7].fill(1.0);
        ink[2 * MNIST_SIDE + 9] = 0.8;
        ink[5 * MNIST_SIDE + 27] = 0.6;
        ink[6 * MNIST_SIDE] = 0.4; // too faint
        assert_eq!(strokes(&ink), vec![(2, 3, 6), (2, 9, 9), (5, 27, 27)]);
    }
}

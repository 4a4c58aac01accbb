//! Kiln digits: draw a digit and see an MLP classify it live; train the MLP in the background.
//!
//! ```text
//! cargo run --release --example mnist          # once: the checkpoint the Draw tab uses
//! cargo run --release -p digits_app            # the window
//! cargo run --release -p digits_app -- --checkpoint runs/mnist-cnn/model.safetensors
//! ```
//!
//! egui draws through its wgpu renderer on a device requested with Kiln's features and limits
//! (`Device::wgpu_device_descriptor`); Kiln then runs on that same device
//! (`Device::from_wgpu`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use digits_app::app::DigitsApp;
use digits_app::script::Script;
use digits_app::{AnyResult, DEFAULT_CHECKPOINT};
use eframe::egui;
use eframe::egui_wgpu::{WgpuConfiguration, WgpuSetup, WgpuSetupCreateNew};

const USAGE: &str = "\
usage: digits_app [--checkpoint PATH] [--script draw=<MNIST test index|PNG>,screenshot=<PNG>]

  --checkpoint PATH  model saved by the mnist example (default runs/mnist/model.safetensors)
  --script SPEC      draw the digit itself, wait for the prediction, save a screenshot,
                     print `predicted <digit>` and exit (for tests)
  --help             this text";

struct Args {
    checkpoint: PathBuf,
    script: Option<Script>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args { checkpoint: PathBuf::from(DEFAULT_CHECKPOINT), script: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--checkpoint" => args.checkpoint = PathBuf::from(value()?),
            "--script" => args.script = Some(Script::parse(&value()?)?),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("digits_app: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> AnyResult<()> {
    let Some(args) = parse_args()? else { return Ok(()) };
    // The window's device is requested with what Kiln's kernels use (f16, subgroups, the
    // adapter's full limits), so the one device serves both.
    let setup = WgpuSetupCreateNew {
        device_descriptor: Arc::new(kiln::Device::wgpu_device_descriptor),
        ..WgpuSetupCreateNew::without_display_handle()
    };
    let options = eframe::NativeOptions {
        renderer: eframe::Renderer::Wgpu,
        viewport: egui::ViewportBuilder::default().with_title("Kiln digits").with_inner_size([760.0, 560.0]),
        wgpu_options: WgpuConfiguration { wgpu_setup: WgpuSetup::CreateNew(setup), ..Default::default() },
        ..Default::default()
    };
    let Args { checkpoint, script } = args;
    eframe::run_native(
        "Kiln digits",
        options,
        Box::new(move |cc| {
            let state = cc.wgpu_render_state.as_ref().ok_or("eframe started without its wgpu renderer")?;
            let device = kiln::Device::from_wgpu(&state.adapter, state.device.clone(), state.queue.clone());
            Ok(Box::new(DigitsApp::new(&cc.egui_ctx, device, checkpoint, script)?))
        }),
    )
    .map_err(|e| format!("window: {e}"))?;
    Ok(())
}

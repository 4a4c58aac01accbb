//! The Kiln digits desktop app: draw a digit and watch an MLP classify it live, or train the
//! MLP on MNIST in the background. egui draws the window through its wgpu renderer, and Kiln
//! runs on that same wgpu device (`Device::from_wgpu`): one device, one queue.
//!
//! The UI thread never waits for the GPU: classification runs on a predictor thread and
//! training on a trainer thread, and both report back through channels the UI drains with
//! `try_recv` each frame. A Kiln `Device` is `Send + Sync` (tests/threads.rs), so all three
//! threads share it.
//!
//! The binary is `src/main.rs`; this library holds the parts so that the tests can use them.

pub mod app;
pub mod canvas;
pub mod predictor;
pub mod script;
pub mod trainer;

/// The MLP and CNN the `mnist` example trains, from the same file, so that its checkpoints load here.
#[allow(dead_code)]
#[path = "../../common/model.rs"]
pub mod model;

/// Errors from any layer (Kiln ops, data loading, I/O, flags), shown to the user as text.
pub type AnyError = Box<dyn std::error::Error + Send + Sync>;
/// Shorthand for results carrying an [`AnyError`].
pub type AnyResult<T> = std::result::Result<T, AnyError>;

/// Where the `mnist` example saves its model (relative to the directory it runs in).
pub const DEFAULT_CHECKPOINT: &str = "runs/mnist/model.safetensors";
/// Where the Train tab saves the model it trains.
pub const APP_CHECKPOINT: &str = "runs/digits_app/model.safetensors";

//! Code shared by the MNIST examples (`mnist`, `mnist_infer`) and by
//! `examples/tests/examples_smoke.rs`, which includes this module by path so that the
//! smoke test exercises exactly the loop a user runs.

// Each includer uses a different subset.
#![allow(dead_code)]

pub mod cli;
#[cfg(feature = "mpi")]
pub mod ddp;
pub mod infer;
pub mod memlog;
pub mod model;
pub mod plot;
pub mod train;

/// Errors from any layer (Kiln ops, data loading, I/O, flags), shown to the user as text.
pub type AnyError = Box<dyn std::error::Error + Send + Sync>;
/// Shorthand for results carrying an [`AnyError`].
pub type AnyResult<T> = std::result::Result<T, AnyError>;

/// Prints `Error: <message>` and every underlying cause on stderr.
pub fn print_error(err: &(dyn std::error::Error + 'static)) {
    eprintln!("Error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}

/// Runs `body`, turning an error into a message on stderr and exit status 1 (never a panic
/// or a `Debug` dump).
pub fn main_with(body: impl FnOnce() -> AnyResult<()>) -> std::process::ExitCode {
    match body() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            print_error(err.as_ref());
            std::process::ExitCode::FAILURE
        }
    }
}

//! The examples' command lines, declared with clap's derive: each example has a `Flags` struct,
//! and every one flattens [`DeviceFlag`]. Flags without a fixed default are `Option`s whose
//! default depends on another flag (`--model`, `--size`); their help says so.

use clap::error::ErrorKind;
use clap::{Args, Parser};

/// `--device`, which every example takes.
#[derive(Args, Debug, Clone, Default)]
pub struct DeviceFlag {
    /// best (default), cpu, gpu, vulkan, or part of an adapter name
    #[arg(long, value_name = "WHICH")]
    pub device: Option<String>,
}

impl DeviceFlag {
    /// The device `--device` names, or the best one present.
    pub fn device(&self) -> kiln::Result<kiln::Device> {
        match &self.device {
            Some(word) => kiln::Device::parse(word),
            None => Ok(kiln::Device::best()),
        }
    }
}

/// Parses the process's arguments as `T`. On `--help` prints the usage and returns `None`, so
/// an example's `run` can simply return; a bad flag is an error whose text names it (printed
/// by `main_with` as `Error: ...`, exit status 1, like every other error of the examples).
pub fn parse_args<T: Parser>() -> Result<Option<T>, String> {
    parse_from(std::env::args_os())
}

/// [`parse_args`] over `args` (the first is the program name).
pub fn parse_from<T: Parser, I: Into<std::ffi::OsString> + Clone>(
    args: impl IntoIterator<Item = I>,
) -> Result<Option<T>, String> {
    match T::try_parse_from(args) {
        Ok(flags) => Ok(Some(flags)),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            print!("{e}");
            Ok(None)
        }
        Err(e) => {
            let text = e.render().to_string();
            Err(text.trim().trim_start_matches("error: ").to_owned())
        }
    }
}

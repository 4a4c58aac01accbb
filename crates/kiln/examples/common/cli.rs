//! A tiny `--flag value` parser: the examples need a handful of flags, which does not
//! justify a command-line framework as a dependency.

use std::collections::HashMap;
use std::str::FromStr;

/// One flag an example accepts.
pub struct FlagSpec {
    /// Name without the leading dashes (`"epochs"`).
    pub name: &'static str,
    /// Placeholder shown in help (`"N"`); `None` for a switch that takes no value.
    pub value: Option<&'static str>,
    /// One line of help, including the default.
    pub help: &'static str,
}

/// The flags given on a command line, by name.
#[derive(Debug, Default)]
pub struct Flags {
    values: HashMap<&'static str, String>,
    switches: Vec<&'static str>,
}

/// What parsing found: flags to run with, or a request for help.
pub enum Parsed {
    /// Run with these flags.
    Run(Flags),
    /// `--help` / `-h` was given.
    Help,
}

/// Parses `args` (without the program name) against `spec`. Accepts `--name value` and
/// `--name=value`; anything unknown or malformed is an error message naming it.
pub fn parse(args: impl IntoIterator<Item = String>, spec: &[FlagSpec]) -> Result<Parsed, String> {
    let mut flags = Flags::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(Parsed::Help);
        }
        let Some(body) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg:?} (flags start with --; try --help)"));
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        let Some(flag) = spec.iter().find(|f| f.name == name) else {
            return Err(format!("unknown flag --{name} (try --help)"));
        };
        match (flag.value, inline) {
            (None, None) => flags.switches.push(flag.name),
            (None, Some(_)) => return Err(format!("--{name} takes no value")),
            (Some(_), Some(v)) => {
                flags.values.insert(flag.name, v);
            }
            (Some(placeholder), None) => {
                let v = args.next().ok_or_else(|| format!("--{name} needs a value ({placeholder})"))?;
                flags.values.insert(flag.name, v);
            }
        }
    }
    Ok(Parsed::Run(flags))
}

impl Flags {
    /// The raw value of `--name`, if given.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether the switch `--name` was given.
    pub fn switch(&self, name: &str) -> bool {
        self.switches.contains(&name)
    }

    /// `--name` parsed as `T`, or `default` when absent.
    pub fn get_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        Ok(self.get(name)?.unwrap_or(default))
    }

    /// `--name` parsed as `T`, or `None` when absent.
    pub fn get<T: FromStr>(&self, name: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        self.str(name)
            .map(|v| v.parse::<T>().map_err(|e| format!("--{name} {v:?}: {e}")))
            .transpose()
    }
}

/// The `--device` flag every example takes; read it with [`Flags::device`].
pub const DEVICE_FLAG: FlagSpec =
    FlagSpec { name: "device", value: Some("WHICH"), help: "best (default), cpu, gpu, vulkan, or part of an adapter name" };

/// Parses the process's arguments against `spec`; on `--help` prints the usage and returns
/// `None`, so an example's `run` can simply return.
pub fn parse_args(program: &str, about: &str, spec: &[FlagSpec]) -> Result<Option<Flags>, String> {
    match parse(std::env::args().skip(1), spec)? {
        Parsed::Run(flags) => Ok(Some(flags)),
        Parsed::Help => {
            print!("{}", usage(program, about, spec));
            Ok(None)
        }
    }
}

impl Flags {
    /// The device `--device` names, or the best one present.
    pub fn device(&self) -> kiln::Result<kiln::Device> {
        match self.str("device") {
            Some(word) => kiln::Device::parse(word),
            None => Ok(kiln::Device::best()),
        }
    }
}

/// The usage text for `program` with `spec`.
pub fn usage(program: &str, about: &str, spec: &[FlagSpec]) -> String {
    let mut out = format!("{about}\n\nUsage: cargo run --release --example {program} -- [FLAGS]\n\nFlags:\n");
    for f in spec {
        let left = match f.value {
            Some(v) => format!("--{} {v}", f.name),
            None => format!("--{}", f.name),
        };
        out.push_str(&format!("  {left:<22} {}\n", f.help));
    }
    out.push_str(&format!("  {:<22} {}\n", "--help", "print this help"));
    out
}

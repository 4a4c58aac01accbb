//! The command line. Flags shared with `torch_bench.py` and `burn-bench` mean the same thing
//! there, so one set of instructions runs all three.

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct Args {
    /// Scaled-down sizes (those of `torch_bench.py --small`), recorded in "size".
    pub small: bool,
    /// Lower-cased workload ids; `None` runs everything.
    pub only: Option<Vec<String>>,
    /// `gpu` (honours `KILN_DEVICE`), `cpu`, `best`, a backend (`vulkan`) or part of an adapter name.
    pub device: String,
    /// Stop starting workloads (and sizes) after this many seconds in total; a timing loop that
    /// is running stops after its fifth iteration once past it.
    pub max_seconds: Option<f64>,
    /// The least measured time per result before the median is taken (the protocol says 1 s);
    /// at least `MIN_ITERS` iterations always run. Smaller values make smoke tests fast.
    pub min_time: f64,
    /// Mixed precision for the model workloads (W5, W6, W7, W9): forward under f16 autocast,
    /// training steps through a `GradScaler`. Results carry the framework name `kiln-<ver>-amp`,
    /// so they join with the fp32 baselines on (workload, size) as a column of their own.
    pub amp: bool,
    /// W10's optimizer steps; the first `W10_WARMUP` are not timed. `None`: 300 (as
    /// `char_gpt.py --steps 300`), 30 with `--small`.
    pub steps: Option<usize>,
}

/// W10's untimed first steps (as `char_gpt.py`: the clock starts at step 21).
pub const W10_WARMUP: usize = 20;

/// `--help` text.
pub const USAGE: &str = "\
usage: kiln-bench [--small] [--only W1,W3,...] [--device gpu|cpu|best|vulkan|<adapter name>]
                  [--max-seconds N] [--min-time S] [--amp] [--steps N]

  --small          scaled-down sizes for a software adapter (recorded in \"size\")
  --only LIST      comma-separated workload ids; W4 = W4a+W4b, W8 = W8a+W8b
  --device D       gpu (default; KILN_DEVICE overrides it), cpu, best, a backend name
                   (vulkan, metal, dx12, gl) or part of an adapter's name
  --max-seconds N  stop starting new workloads after N seconds in total; a running timing
                   loop stops after 5 iterations once past it (as torch_bench.py / burn-bench)
  --min-time S     least measured seconds per result (default 1, the suite's protocol);
                   3 warm-up and 5 timed iterations always run
  --amp            W5, W6, W6d, W7, W9, W10, W11 in mixed precision (f16 autocast, GradScaler); the
                   results' framework is kiln-<version>-amp
  --steps N        W10's optimizer steps (default 300, 30 with --small; at least 21): steps
                   21..N are timed, as char_gpt.py times them
workloads: W1 W1h W2 W3 W4a W4b W5 W6 W6d W7 W8a W8b W9 W10 W11
results go to stdout, one JSON object per line; progress goes to stderr";

/// Parses the arguments after the program name. `Ok(None)` means `--help` was asked for.
pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args {
        small: false,
        only: None,
        device: "gpu".into(),
        max_seconds: None,
        min_time: 1.0,
        amp: false,
        steps: None,
    };
    while let Some(a) = it.next() {
        // Both `--flag value` and `--flag=value`.
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value =
            |name: &str| inline.clone().or_else(|| it.next()).ok_or_else(|| format!("{name} needs a value"));
        match key.as_str() {
            "--small" => args.small = true,
            "--amp" => args.amp = true,
            "--only" => {
                let list: Vec<String> = value("--only")?
                    .split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect();
                args.only = Some(list);
            }
            "--device" => args.device = value("--device")?,
            "--max-seconds" => args.max_seconds = Some(seconds("--max-seconds", &value("--max-seconds")?)?),
            "--min-time" => args.min_time = seconds("--min-time", &value("--min-time")?)?,
            "--steps" => {
                let v = value("--steps")?;
                match v.parse::<usize>() {
                    Ok(n) if n > W10_WARMUP => args.steps = Some(n),
                    _ => {
                        return Err(format!(
                            "--steps: {v:?} is not a whole number above {W10_WARMUP} (the untimed warm-up steps)"
                        ));
                    }
                }
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(args))
}

fn seconds(flag: &str, v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(format!("{flag}: {v:?} is not a number of seconds")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<Option<Args>, String> {
        parse(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_parse_in_both_spellings() {
        let a =
            p(&["--small", "--only=W1,w8b", "--device", "cpu", "--max-seconds", "5", "--min-time=0"]).unwrap().unwrap();
        assert!(a.small);
        assert_eq!(a.only, Some(vec!["w1".to_string(), "w8b".to_string()]));
        assert_eq!(a.device, "cpu");
        assert_eq!(a.max_seconds, Some(5.0));
        assert_eq!(a.min_time, 0.0);
        assert!(!a.amp);
        assert_eq!(a.steps, None);
        assert!(p(&["--amp"]).unwrap().unwrap().amp);
        assert_eq!(p(&["--steps=21"]).unwrap().unwrap().steps, Some(21));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(p(&["--max-seconds", "soon"]).is_err());
        assert!(p(&["--min-time", "-1"]).is_err());
        assert!(p(&["--only"]).is_err());
        assert!(p(&["--fast"]).is_err());
        assert!(p(&["--steps", "20"]).is_err());
        assert!(p(&["--steps", "many"]).is_err());
        assert!(p(&["--help"]).unwrap().is_none());
    }
}

//! "Find a GPU or skip": one rule for every test that needs an adapter (or a feature of one).

use std::fmt::Display;

/// Whether the environment variable `var` is set to `1` (`KILN_REQUIRE_GPU`, `KILN_REQUIRE_COOP`).
pub fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// `found` when it holds the thing; otherwise a failure naming `test` under `KILN_REQUIRE_GPU=1`,
/// or `None` and a `SKIPPED` line on stderr. Every GPU probe in the tests goes through here, so a
/// missing adapter is never a silent pass.
pub fn gpu_or_skip<T, E: Display>(test: &str, found: Result<T, E>) -> Option<T> {
    match found {
        Ok(t) => Some(t),
        Err(e) if required("KILN_REQUIRE_GPU") => {
            panic!("{test}: KILN_REQUIRE_GPU=1 but no GPU adapter was found ({e})")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: no GPU adapter ({e}; set KILN_REQUIRE_GPU=1 to make this a failure)");
            None
        }
    }
}

/// A fresh empty directory under the system temp dir, unique to this process and `name`.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    dir
}

//! `--memory-log CSV`: device memory over a run, for the "memory stays flat" figures (mnist: a
//! row per epoch; char_transformer: a row per minute). Each row: the caller's key columns, live
//! bytes (in tensors), pooled bytes (free buffers kept for reuse), their sum and the buffers
//! allocated so far.

use std::io::Write;
use std::path::PathBuf;

use kiln::Device;

use super::AnyResult;

/// A logger writing to `path` (a header starting with `key_header`, then a row per call, which
/// starts with the call's key); a no-op without a path. A failed write is reported once on
/// stderr and does not stop training.
pub fn open(path: Option<PathBuf>, key_header: &str) -> AnyResult<impl FnMut(&str, &Device) + use<>> {
    let mut file = match &path {
        Some(p) => {
            let mut f = std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
            writeln!(f, "{key_header},live_bytes,pooled_bytes,total_bytes,allocations")
                .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            Some(f)
        }
        None => None,
    };
    Ok(move |key: &str, device: &Device| {
        let Some(f) = file.as_mut() else { return };
        // Counted after the epoch's work has finished on the device.
        let synced = device.sync();
        let m = device.memory_stats();
        let row =
            format!("{key},{},{},{},{}", m.live_bytes, m.pooled_bytes, m.live_bytes + m.pooled_bytes, m.allocations);
        if let Err(e) = synced.map_err(|e| e.to_string()).and_then(|()| writeln!(f, "{row}").map_err(|e| e.to_string()))
        {
            eprintln!("memory log: {e}; no more rows are written");
            file = None;
        }
    })
}

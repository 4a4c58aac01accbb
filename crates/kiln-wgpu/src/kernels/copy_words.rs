//! A copy between two blocks of one pooled buffer (see `pool`): `copy_buffer_to_buffer` refuses
//! a copy whose source and destination are the same buffer, even between disjoint ranges, so
//! such a copy runs as a kernel over 4-byte words (every buffer copy moves whole words). One
//! binding spans both blocks; the blocks never overlap (each belongs to another tensor).

use super::{WG, module};
use crate::context::GpuContext;
use crate::pool::Span;
use kiln_backend::{Error, Result};

const OP: &str = "copy";
const KEY: &str = "copy_words";

/// info: [source word, destination word, words], both words relative to the binding.
fn source() -> String {
    let body = "@group(0) @binding(1) var<storage, read_write> buf: array<u32>;\n\
                @compute @workgroup_size(256)\n\
                fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, \
                @builtin(local_invocation_index) lid: u32) {\n\
                \x20   let i = linear_group(wid, nwg) * 256u + lid;\n\
                \x20   if i < info[2] {\n\
                \x20       buf[info[1] + i] = buf[info[0] + i];\n\
                \x20   }\n\
                }\n";
    module("", false, body)
}

pub(crate) fn specialisations() -> Vec<(String, String)> {
    vec![(KEY.to_string(), source())]
}

impl GpuContext {
    /// Copies `bytes` from `src_offset` within `src` to `dst_offset` within `dst`, two blocks of
    /// one buffer: offsets and length whole words, as for a buffer copy.
    pub(crate) fn copy_within(
        &self,
        src: Span<'_>,
        src_offset: u64,
        dst: Span<'_>,
        dst_offset: u64,
        bytes: u64,
    ) -> Result<()> {
        let (from, to) = (src.offset + src_offset, dst.offset + dst_offset);
        if !from.is_multiple_of(4) || !to.is_multiple_of(4) || !bytes.is_multiple_of(4) {
            return Err(Error::invalid(
                OP,
                format!("a copy of {bytes} bytes from {from} to {to} is not in whole words"),
            ));
        }
        debug_assert!(from + bytes <= to || to + bytes <= from, "overlapping blocks");
        let align = u64::from(self.limits.min_storage_buffer_offset_alignment).max(256);
        let start = from.min(to) / align * align;
        let end = (from + bytes).max(to + bytes);
        let words = |b: u64| u32::try_from(b / 4).map_err(|_| Error::invalid(OP, "a copy past u32 words"));
        let span = Span { buffer: src.buffer, offset: start, size: end - start };
        let meta = [words(from - start)?, words(to - start)?, words(bytes)?];
        let kernel = self.cache.get(&self.device, OP, KEY, source)?;
        self.dispatch(OP, &kernel, &[span], &meta, meta[2].div_ceil(WG))
    }
}

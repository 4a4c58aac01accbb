//! Per-kernel GPU time (`KILN_PROFILE=1`). Each dispatch is bracketed by two timestamps in a
//! query set that belongs to the current batch; at submit the batch resolves its queries into a
//! buffer and copies them to a mappable one, whose `map_async` completes in some later poll, so
//! recording never waits for the GPU. Totals are folded in whenever a batch is submitted and when
//! a report is asked for (which waits for the GPU once).
//!
//! Where the adapter allows timestamps inside passes, the dispatches keep sharing one compute
//! pass, as they do unprofiled; otherwise each dispatch gets a pass of its own whose begin and end
//! timestamps bracket it (which adds the per-pass cost to the run, not to the measured times).
//! Without timestamp queries the table holds counts only and says so. Unprofiled contexts carry
//! `None` and pay one branch per dispatch.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// Dispatches one query set can time: a batch that fills it is submitted early.
pub(crate) const PAIRS: u32 = 512;

/// How dispatches are timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProfileMode {
    /// No profiling (the default without `KILN_PROFILE=1`).
    Off,
    /// Counts only, even where timestamps exist.
    Counts,
    /// GPU time per dispatch where the adapter has `TIMESTAMP_QUERY`, counts otherwise.
    Timestamps,
    /// Like `Timestamps`, but always one timed pass per dispatch, even where timestamps inside
    /// passes exist (to compare the two, and to test this path everywhere).
    PassTimestamps,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stamps {
    None,
    InsidePasses,
    PassPerDispatch,
}

/// Where one dispatch writes its begin (`index`) and end (`index + 1`) timestamps.
pub(crate) struct Slot {
    pub set: wgpu::QuerySet,
    pub index: u32,
    pub inside: bool,
}

struct Frame {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    read: wgpu::Buffer,
    names: Vec<Arc<str>>,
    /// 0 while mapping, 1 mapped, 2 failed.
    state: Arc<AtomicU8>,
}

#[derive(Default, Clone, Copy)]
struct Total {
    count: u64,
    ns: f64,
}

pub(crate) struct Profiler {
    stamps: Stamps,
    period_ns: f64,
    totals: HashMap<Arc<str>, Total>,
    current: Option<Frame>,
    in_flight: Vec<Frame>,
    free: Vec<Frame>,
}

impl Profiler {
    pub(crate) fn new(mode: ProfileMode, features: wgpu::Features, queue: &wgpu::Queue) -> Option<Profiler> {
        let stamps = match mode {
            ProfileMode::Off => return None,
            ProfileMode::Counts => Stamps::None,
            _ if !features.contains(wgpu::Features::TIMESTAMP_QUERY) => Stamps::None,
            ProfileMode::PassTimestamps => Stamps::PassPerDispatch,
            ProfileMode::Timestamps if features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES) => {
                Stamps::InsidePasses
            }
            ProfileMode::Timestamps => Stamps::PassPerDispatch,
        };
        Some(Profiler {
            stamps,
            period_ns: queue.get_timestamp_period() as f64,
            totals: HashMap::new(),
            current: None,
            in_flight: Vec::new(),
            free: Vec::new(),
        })
    }

    /// True when the current batch's query set has no room for another dispatch.
    pub(crate) fn full(&self) -> bool {
        self.current.as_ref().is_some_and(|f| f.names.len() as u32 >= PAIRS)
    }

    /// Notes one dispatch of `name`; where it should write its timestamps, if anywhere.
    pub(crate) fn record(&mut self, device: &wgpu::Device, name: &Arc<str>) -> Option<Slot> {
        if self.stamps == Stamps::None {
            self.totals.entry(name.clone()).or_default().count += 1;
            return None;
        }
        if self.current.is_none() {
            self.current = Some(self.free.pop().unwrap_or_else(|| new_frame(device)));
        }
        let frame = self.current.as_mut()?;
        let index = frame.names.len() as u32 * 2;
        frame.names.push(name.clone());
        Some(Slot { set: frame.set.clone(), index, inside: self.stamps == Stamps::InsidePasses })
    }

    /// Before the batch's encoder finishes: resolve this batch's timestamps into a mappable buffer.
    pub(crate) fn resolve(&mut self, encoder: &mut wgpu::CommandEncoder) {
        let Some(frame) = &self.current else { return };
        let queries = frame.names.len() as u32 * 2;
        encoder.resolve_query_set(&frame.set, 0..queries, &frame.resolve, 0);
        encoder.copy_buffer_to_buffer(&frame.resolve, 0, &frame.read, 0, queries as u64 * 8);
    }

    /// After the submit: start mapping the batch's timestamps and fold in any that arrived.
    pub(crate) fn submitted(&mut self) {
        if let Some(frame) = self.current.take() {
            let state = frame.state.clone();
            state.store(0, Ordering::SeqCst);
            let bytes = frame.names.len() as u64 * 16;
            frame.read.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
                state.store(if r.is_ok() { 1 } else { 2 }, Ordering::SeqCst);
            });
            self.in_flight.push(frame);
        }
        self.collect();
    }

    /// Folds the timestamps of every batch whose readback has landed into the totals.
    pub(crate) fn collect(&mut self) {
        let mut i = 0;
        while i < self.in_flight.len() {
            let state = self.in_flight[i].state.load(Ordering::SeqCst);
            if state == 0 {
                i += 1;
                continue;
            }
            let mut frame = self.in_flight.swap_remove(i);
            if state == 1 {
                let bytes = frame.names.len() as u64 * 16;
                if let Ok(view) = frame.read.get_mapped_range(0..bytes) {
                    let ticks: &[u64] = bytemuck::cast_slice(&view);
                    for (name, pair) in frame.names.iter().zip(ticks.chunks_exact(2)) {
                        let t = self.totals.entry(name.clone()).or_default();
                        t.count += 1;
                        t.ns += pair[1].saturating_sub(pair[0]) as f64 * self.period_ns;
                    }
                }
                frame.read.unmap();
            }
            frame.names.clear();
            self.free.push(frame);
        }
    }

    /// True while some batch's timestamps are still on their way.
    pub(crate) fn waiting(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Each kernel's name and dispatch count, sorted by name.
    pub(crate) fn counts(&self) -> Vec<(String, u64)> {
        let mut rows: Vec<(String, u64)> = self.totals.iter().map(|(name, t)| (name.to_string(), t.count)).collect();
        rows.sort();
        rows
    }

    /// The table: one row per kernel, by total GPU time (by count without timestamps).
    pub(crate) fn table(&self, adapter: &str) -> String {
        let timed = self.stamps != Stamps::None;
        let mut rows: Vec<(&Arc<str>, &Total)> = self.totals.iter().collect();
        if timed {
            rows.sort_by(|a, b| b.1.ns.total_cmp(&a.1.ns).then(b.1.count.cmp(&a.1.count)).then(a.0.cmp(b.0)));
        } else {
            rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        }
        let how = match self.stamps {
            Stamps::InsidePasses => "GPU time from timestamps around each dispatch (inside the shared pass)",
            Stamps::PassPerDispatch => "GPU time from pass timestamps (one compute pass per dispatch)",
            Stamps::None => "counts only: no GPU times (the adapter lacks TIMESTAMP_QUERY, or counts were asked for)",
        };
        let total_ns: f64 = rows.iter().map(|r| r.1.ns).sum();
        let total_count: u64 = rows.iter().map(|r| r.1.count).sum();
        let mut s = format!("kiln profile: {adapter}\n{how}\n");
        let _ = writeln!(s, "{:<60} {:>9} {:>12} {:>11} {:>7}", "kernel", "count", "total ms", "mean µs", "share");
        for (name, t) in &rows {
            if timed {
                let share = if total_ns > 0.0 { 100.0 * t.ns / total_ns } else { 0.0 };
                let mean = t.ns / t.count.max(1) as f64 / 1e3;
                let _ = writeln!(s, "{name:<60} {:>9} {:>12.3} {mean:>11.2} {share:>6.1}%", t.count, t.ns / 1e6);
            } else {
                let _ = writeln!(s, "{name:<60} {:>9} {:>12} {:>11} {:>7}", t.count, "-", "-", "-");
            }
        }
        if timed {
            let _ = writeln!(s, "{:<60} {total_count:>9} {:>12.3}", "total", total_ns / 1e6);
        } else {
            let _ = writeln!(s, "{:<60} {total_count:>9}", "total");
        }
        s
    }
}

fn new_frame(device: &wgpu::Device) -> Frame {
    let bytes = PAIRS as u64 * 16;
    let buffer = |label, usage| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage,
            mapped_at_creation: false,
        })
    };
    Frame {
        set: device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("kiln-profile"),
            ty: wgpu::QueryType::Timestamp,
            count: PAIRS * 2,
        }),
        resolve: buffer("kiln-profile-resolve", wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
        read: buffer("kiln-profile-read", wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
        names: Vec::with_capacity(PAIRS as usize),
        state: Arc::new(AtomicU8::new(0)),
    }
}

/// A kernel's name in the table: its specialisation key, shortened to fit a column (the head
/// names the op, the tail usually tells specialisations apart).
pub(crate) fn short_name(key: &str) -> Arc<str> {
    const MAX: usize = 60;
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= MAX {
        return key.into();
    }
    let head: String = chars[..MAX - 13].iter().collect();
    let tail: String = chars[chars.len() - 12..].iter().collect();
    format!("{head}…{tail}").into()
}

//! Counter cells: where an engine and its driver count ([`netdirect_types::counters`] names
//! them).
//!
//! A [`Stream`](crate::stream::Stream) counts FPDUs and payload octets by opcode, Terminates,
//! CRC errors, IRD/ORD high-water marks and placement into the [`Cells`] it was given
//! ([`Stream::set_counters`](crate::stream::Stream::set_counters)); the driver counts what
//! only it sees (connections, wakeups, inline transmits) into the same cells or its own.
//!
//! Two ways to add, for the two kinds of writer:
//! * [`Cells::bump`], [`Cells::raise`] and the stream's own counting: **one writer at a time**
//!   (the stream is driven through `&mut self`, so its cells have one writer). A relaxed load
//!   and store, no locked instruction: nothing measurable per FPDU. Readers on other threads
//!   see a recent value.
//! * [`Cells::add`]: any thread (a relaxed `fetch_add`), for cells several threads count into.
//!
//! # What counting costs, and turning it off
//!
//! An FPDU costs its stream two counter updates where the stream builds or parses it (FPDUs
//! and octets of its opcode: each a load, an add and a store to a cell of the connection's own
//! [`Cells`], inlined; no locked instruction, no second look at the header); a placement one
//! more; a Read Request a compare for the high-water mark; the driver one per post (inline
//! transmits). Together, for one 8 B RDMA Write through both ends of a connection, 43
//! instructions: 2.6 % of the data path's own instructions (exact, callgrind: the `obs_cost`
//! example built with and without this feature), 0.8 % of what `nd write-bw` executes per
//! message in user space; for 1 MiB (17 FPDUs) 801 instructions, 1.95 % and about 0.5 %.
//! `bench/obs-cost.py` measures it; the README's "Seeing what happens" has the table.
//!
//! The `counters` feature (default) is what counts. Without it ([`COUNTING`] is false) every
//! write to a cell compiles to nothing, so the same source gives a build without the cost;
//! cells, snapshots and every counter built from them read zero.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use netdirect_types::counters::{Counter, Counters, OPCODES, OpcodeCounts, TerminateCount};

/// Whether this build counts (the `counters` feature). Without it every counter reads zero.
pub const COUNTING: bool = cfg!(feature = "counters");

/// One QP's (or one adapter's) counters, as relaxed atomics.
#[derive(Debug)]
pub struct Cells {
    values: [AtomicU64; Counter::COUNT],
    /// Per opcode: FPDUs in, octets in, FPDUs out, octets out.
    opcodes: [[AtomicU64; 4]; OPCODES],
    /// Terminates are rare: a lock is fine (and an empty list is small: a connection's cells
    /// stay under 640 octets).
    terminates: Mutex<Vec<TerminateCount>>,
}

impl Default for Cells {
    fn default() -> Self {
        Cells {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            opcodes: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            terminates: Mutex::new(Vec::new()),
        }
    }
}

#[inline(always)]
fn bump_cell(cell: &AtomicU64, n: u64) {
    if !COUNTING {
        return;
    }
    cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
}

impl Cells {
    /// Adds `n` to `c`; one writer at a time (see the module docs).
    #[inline]
    pub fn bump(&self, c: Counter, n: u64) {
        bump_cell(&self.values[c as usize], n);
    }

    /// Adds `n` to `c` from any thread.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        if !COUNTING {
            return;
        }
        self.values[c as usize].fetch_add(n, Relaxed);
    }

    /// Subtracts `n` from gauge `c` from any thread (saturating at 0).
    pub fn sub(&self, c: Counter, n: u64) {
        if !COUNTING {
            return;
        }
        let _ =
            self.values[c as usize].fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
    }

    /// Raises high-water mark `c` to `v`; one writer at a time.
    #[inline]
    pub fn raise(&self, c: Counter, v: u64) {
        if !COUNTING {
            return;
        }
        let cell = &self.values[c as usize];
        if v > cell.load(Relaxed) {
            cell.store(v, Relaxed);
        }
    }

    /// An FPDU of RDMAP opcode `op` with `octets` of payload was sent; one writer at a time.
    #[inline]
    pub fn frame_out(&self, op: u8, octets: u64) {
        if !COUNTING {
            return;
        }
        if let Some(o) = self.opcodes.get(usize::from(op)) {
            bump_cell(&o[2], 1);
            bump_cell(&o[3], octets);
        }
    }

    /// An FPDU of RDMAP opcode `op` with `octets` of payload was received; one writer at a
    /// time.
    #[inline]
    pub fn frame_in(&self, op: u8, octets: u64) {
        if !COUNTING {
            return;
        }
        if let Some(o) = self.opcodes.get(usize::from(op)) {
            bump_cell(&o[0], 1);
            bump_cell(&o[1], octets);
        }
    }

    /// A Terminate was sent (`sent`) or received, with this layer/type/code.
    pub fn terminate(&self, sent: bool, layer: u8, error_type: u8, error_code: u8) {
        self.add_terminates(sent, layer, error_type, error_code, 1);
    }

    fn add_terminates(&self, sent: bool, layer: u8, error_type: u8, error_code: u8, n: u64) {
        if !COUNTING {
            return;
        }
        let Ok(mut list) = self.terminates.lock() else {
            return;
        };
        let key = (sent, layer, error_type, error_code);
        match list
            .iter_mut()
            .find(|t| (t.sent, t.layer, t.error_type, t.error_code) == key)
        {
            Some(t) => t.count += n,
            None => list.push(TerminateCount {
                sent,
                layer,
                error_type,
                error_code,
                count: n,
            }),
        }
    }

    /// The counters now (with the totals derived from the detail).
    pub fn snapshot(&self) -> Counters {
        let mut c = Counters::default();
        if let Ok(list) = self.terminates.lock() {
            for t in list.iter() {
                c.add_terminate(t.sent, t.layer, t.error_type, t.error_code, t.count);
            }
        }
        for &k in Counter::ALL {
            c.set(k, self.values[k as usize].load(Relaxed));
        }
        for (o, cells) in c.opcodes.iter_mut().zip(self.opcodes.iter()) {
            *o = OpcodeCounts {
                fpdus_in: cells[0].load(Relaxed),
                octets_in: cells[1].load(Relaxed),
                fpdus_out: cells[2].load(Relaxed),
                octets_out: cells[3].load(Relaxed),
            };
        }
        c.derive_totals();
        c
    }

    /// Adds these cells into `sum` (an aggregate over many QPs), as [`Counters::merge`] of
    /// their [`Cells::snapshot`] would, without building a snapshot: counters and
    /// `ActiveConnection` add, high-water marks take the maximum. The totals derived from the
    /// detail are left stale; call [`Counters::derive_totals`] on `sum` once at the end. An
    /// adapter with 10,000 QPs sums them every publication period, so this is a few loads and
    /// adds per cell, no allocation or copy.
    pub fn add_to(&self, sum: &mut Counters) {
        for &k in Counter::ALL {
            let v = self.values[k as usize].load(Relaxed);
            let a = sum.get(k);
            sum.set(
                k,
                match k {
                    Counter::IrdHighWater | Counter::OrdHighWater => a.max(v),
                    _ => a.wrapping_add(v),
                },
            );
        }
        for (o, cells) in sum.opcodes.iter_mut().zip(self.opcodes.iter()) {
            o.fpdus_in += cells[0].load(Relaxed);
            o.octets_in += cells[1].load(Relaxed);
            o.fpdus_out += cells[2].load(Relaxed);
            o.octets_out += cells[3].load(Relaxed);
        }
        if let Ok(list) = self.terminates.lock() {
            for t in list.iter() {
                sum.add_terminate(t.sent, t.layer, t.error_type, t.error_code, t.count);
            }
        }
    }

    /// Adds a snapshot into these cells from any thread (an adapter keeping a closed QP's
    /// counts): counters add, high-water marks take the maximum, `ActiveConnection` is left
    /// alone (a closed QP has none).
    pub fn absorb(&self, s: &Counters) {
        if !COUNTING {
            return;
        }
        for &k in Counter::ALL {
            let cell = &self.values[k as usize];
            match k {
                Counter::IrdHighWater | Counter::OrdHighWater => {
                    cell.fetch_max(s.get(k), Relaxed);
                }
                Counter::ActiveConnection => {}
                _ => {
                    cell.fetch_add(s.get(k), Relaxed);
                }
            }
        }
        for (o, cells) in s.opcodes.iter().zip(self.opcodes.iter()) {
            cells[0].fetch_add(o.fpdus_in, Relaxed);
            cells[1].fetch_add(o.octets_in, Relaxed);
            cells[2].fetch_add(o.fpdus_out, Relaxed);
            cells[3].fetch_add(o.octets_out, Relaxed);
        }
        for x in &s.terminates {
            self.add_terminates(x.sent, x.layer, x.error_type, x.error_code, x.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(feature = "counters"))]
    fn without_the_feature_cells_count_nothing() {
        let a = Cells::default();
        a.frame_out(0, 10);
        a.bump(Counter::CrcErrors, 1);
        a.add(Counter::ActiveConnection, 1);
        a.raise(Counter::OrdHighWater, 3);
        a.terminate(true, 1, 1, 0);
        assert_eq!(a.snapshot(), Counters::default());
    }

    #[test]
    #[cfg(feature = "counters")]
    fn cells_snapshot_absorb_and_stay_small() {
        let a = Cells::default();
        a.frame_out(0, 10);
        a.frame_in(2, 7);
        a.frame_in(99, 1); // not an opcode: ignored
        a.bump(Counter::CrcErrors, 1);
        a.raise(Counter::OrdHighWater, 3);
        a.raise(Counter::OrdHighWater, 2);
        a.add(Counter::ActiveConnection, 1);
        a.terminate(true, 1, 1, 0);
        a.terminate(true, 1, 1, 0);
        let s = a.snapshot();
        assert_eq!(s.get(Counter::RDMAOutOctets), 10);
        assert_eq!(s.get(Counter::RDMAInFrames), 1);
        assert_eq!(s.get(Counter::OrdHighWater), 3);
        assert_eq!(s.get(Counter::TerminatesSent), 2);
        let total = Cells::default();
        total.absorb(&s);
        total.absorb(&s);
        let t = total.snapshot();
        assert_eq!(t.get(Counter::RDMAOutOctets), 20);
        assert_eq!(t.get(Counter::OrdHighWater), 3);
        assert_eq!(t.get(Counter::ActiveConnection), 0);
        assert_eq!(t.terminate(true, 1, 1, 0), 4);
        assert!(std::mem::size_of::<Cells>() < 640);
    }

    #[test]
    fn add_to_sums_as_merging_snapshots_does() {
        let cells: Vec<Cells> = (0..3).map(|_| Cells::default()).collect();
        for (i, c) in cells.iter().enumerate() {
            let i = i as u64;
            c.frame_out(0, 10 + i);
            c.frame_in(2, 7 * i);
            c.bump(Counter::CrcErrors, i);
            c.raise(Counter::IrdHighWater, 5 - i);
            c.add(Counter::ActiveConnection, 1);
            c.terminate(i % 2 == 0, 1, 1, i as u8);
        }
        let mut merged = cells[0].snapshot();
        let mut summed = cells[0].snapshot();
        for c in &cells[1..] {
            merged.merge(&c.snapshot());
            c.add_to(&mut summed);
        }
        merged.derive_totals();
        summed.derive_totals();
        assert_eq!(summed, merged);
        assert_eq!(summed.get(Counter::RDMAOutOctets), 33);
        assert_eq!(summed.get(Counter::IrdHighWater), 5);
        assert_eq!(summed.get(Counter::ActiveConnection), 3);
        assert_eq!(summed.get(Counter::TerminatesSent), 2);
    }
}

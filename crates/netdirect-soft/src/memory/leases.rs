//! Leases: checked ranges of registered memory, and the mappings behind them.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use netdirect::Buffer;

/// An access outside the range a [`Lease`] was checked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("range {to:#x}..+{len} outside the lease {lease:#x?}")]
pub struct LeaseRangeError {
    /// Tagged offset asked for.
    pub to: u64,
    /// Length asked for.
    pub len: u64,
    /// The range the lease covers.
    pub lease: Range<u64>,
}

/// One contiguous piece of a region: `len` bytes of `buffer` from `offset`.
pub(super) struct Span {
    pub(super) buffer: Buffer,
    pub(super) offset: usize,
    pub(super) len: usize,
}

/// The bytes behind a region, in tagged-offset order: spans laid end to end from `base`.
pub(super) struct Mapping {
    pub(super) base: u64,
    pub(super) spans: Vec<Span>,
    /// Offset (from `base`) of each span's first byte.
    pub(super) starts: Vec<u64>,
}

impl Mapping {
    pub(super) fn new(base: u64, spans: Vec<Span>) -> Mapping {
        let mut starts = Vec::with_capacity(spans.len());
        let mut len = 0u64;
        for s in &spans {
            starts.push(len);
            len += s.len as u64;
        }
        Mapping {
            base,
            spans,
            starts,
        }
    }

    /// Appends `len` bytes of `buffer` from `offset`, merging with the last span when the bytes
    /// follow it in the same buffer.
    pub(super) fn push_span(spans: &mut Vec<Span>, buffer: &Buffer, offset: usize, len: usize) {
        if let Some(last) = spans.last_mut() {
            if last.buffer.ptr_eq(buffer) && last.offset + last.len == offset {
                last.len += len;
                return;
            }
        }
        spans.push(Span {
            buffer: buffer.clone(),
            offset,
            len,
        });
    }
}

/// A checked range of registered memory, kept alive while held (see the
/// [module docs](super#leases)).
///
/// Tagged offsets (`to`) are in the region's address space: the SGE's virtual address for a
/// local check, the tagged offset for a remote one. Clones are cheap (an `Arc`).
#[derive(Clone)]
pub struct Lease {
    pub(super) map: Arc<Mapping>,
    pub(super) start: u64,
    pub(super) end: u64,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lease({:#x}..{:#x})", self.start, self.end)
    }
}

impl Lease {
    /// The first tagged offset the lease covers.
    pub fn to(&self) -> u64 {
        self.start
    }

    /// Bytes covered.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the lease covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The tagged-offset range covered.
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }

    pub(super) fn check(&self, to: u64, len: u64) -> Result<(), LeaseRangeError> {
        match to.checked_add(len) {
            Some(end) if to >= self.start && end <= self.end => Ok(()),
            _ => Err(LeaseRangeError {
                to,
                len,
                lease: self.range(),
            }),
        }
    }

    /// A lease on a sub-range of this one.
    pub fn sub(&self, to: u64, len: u64) -> Result<Lease, LeaseRangeError> {
        self.check(to, len)?;
        Ok(Lease {
            map: self.map.clone(),
            start: to,
            end: to + len,
        })
    }

    /// The buffer pieces behind `[to, to + len)`, in order: each a buffer and a byte range of
    /// it. For vectored I/O straight from (or into) registered memory.
    pub fn spans(&self, to: u64, len: u64) -> Result<Spans<'_>, LeaseRangeError> {
        self.check(to, len)?;
        if len == 0 {
            return Ok(Spans {
                map: &self.map,
                index: self.map.spans.len(),
                at: 0,
                remaining: 0,
            });
        }
        // `to` is inside the mapping (the lease was checked against the region, which the
        // mapping covers), so the offset fits.
        let rel = to - self.map.base;
        let index = self.map.starts.partition_point(|&s| s <= rel) - 1;
        Ok(Spans {
            map: &self.map,
            index,
            at: (rel - self.map.starts[index]) as usize,
            remaining: len,
        })
    }

    /// Calls `f` with each contiguous piece of `[to, to + len)`, in order (each under the
    /// buffer's read lock, one at a time).
    pub fn for_each_span(
        &self,
        to: u64,
        len: u64,
        mut f: impl FnMut(&[u8]),
    ) -> Result<(), LeaseRangeError> {
        for (buffer, range) in self.spans(to, len)? {
            buffer.with(|b| f(&b[range]));
        }
        Ok(())
    }

    /// Calls `f` with each contiguous piece of `[to, to + len)` for writing, in order (each
    /// under the buffer's write lock, one at a time).
    pub fn for_each_span_mut(
        &self,
        to: u64,
        len: u64,
        mut f: impl FnMut(&mut [u8]),
    ) -> Result<(), LeaseRangeError> {
        for (buffer, range) in self.spans(to, len)? {
            buffer.with_mut(|b| f(&mut b[range]));
        }
        Ok(())
    }

    /// Copies `out.len()` bytes at tagged offset `to` into `out`.
    pub fn read(&self, to: u64, out: &mut [u8]) -> Result<(), LeaseRangeError> {
        let mut at = 0;
        self.for_each_span(to, out.len() as u64, |piece| {
            out[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        })
    }

    /// Copies `data` to tagged offset `to`.
    pub fn write(&self, to: u64, data: &[u8]) -> Result<(), LeaseRangeError> {
        let mut at = 0;
        self.for_each_span_mut(to, data.len() as u64, |piece| {
            let n = piece.len();
            piece.copy_from_slice(&data[at..at + n]);
            at += n;
        })
    }
}

/// The pieces of a lease range ([`Lease::spans`]): `(buffer, byte range in that buffer)`.
pub struct Spans<'a> {
    pub(super) map: &'a Mapping,
    pub(super) index: usize,
    pub(super) at: usize,
    pub(super) remaining: u64,
}

impl fmt::Debug for Spans<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spans")
            .field("index", &self.index)
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl<'a> Iterator for Spans<'a> {
    type Item = (&'a Buffer, Range<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let span = self.map.spans.get(self.index)?;
        let available = span.len.saturating_sub(self.at);
        let n = available.min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if n == 0 {
            self.remaining = 0;
            return None;
        }
        let start = span.offset + self.at;
        self.remaining -= n as u64;
        self.index += 1;
        self.at = 0;
        Some((&span.buffer, start..start + n))
    }
}

#[cfg(test)]
mod tests {
    use netdirect_types::PAGE_SIZE;

    use super::*;

    #[test]
    fn mapping_merges_adjacent_pages() {
        let b = Buffer::new(3 * PAGE_SIZE);
        let mut spans = Vec::new();
        Mapping::push_span(&mut spans, &b, 0, PAGE_SIZE);
        Mapping::push_span(&mut spans, &b, PAGE_SIZE, PAGE_SIZE);
        Mapping::push_span(&mut spans, &b, 0, 10);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].len, 2 * PAGE_SIZE);
    }

    #[test]
    fn spans_stop_at_the_mapping_end() {
        let b = Buffer::new(10);
        let lease = Lease {
            map: Arc::new(Mapping::new(
                100,
                vec![Span {
                    buffer: b,
                    offset: 0,
                    len: 10,
                }],
            )),
            start: 100,
            end: 110,
        };
        let pieces: Vec<_> = lease.spans(104, 6).unwrap().map(|(_, r)| r).collect();
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0], 4..10);
        assert!(lease.spans(104, 7).is_err());
        assert_eq!(lease.spans(110, 0).unwrap().count(), 0);
    }
}

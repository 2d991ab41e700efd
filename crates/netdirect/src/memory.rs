//! Registered memory: byte buffers that a provider may read and write while the consumer also
//! uses them.
//!
//! A [`Buffer`] is shared (`Arc`) between the consumer and every provider object that uses it: a
//! memory region registered over it, and every in-flight request whose SGEs point into it. The
//! bytes live as long as the last holder, so dropping a handle never frees memory that an RNIC
//! still reads or writes.
//!
//! Access goes through a per-buffer reader-writer lock, taken for one copy at a time (one FPDU's
//! payload, one `read_at`): the consumer and the provider never touch the same bytes
//! concurrently, so there is no data race, and no lock is held across a wait. RDMA's own rule
//! still applies on top: a consumer that reads a buffer while a peer writes it sees some mix of
//! old and new bytes, never anything else.
//!
//! This module holds all the `unsafe` of the crate: allocation, the raw-pointer constructor with
//! its contract, and the slice views under the lock.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::Arc;

use parking_lot::RwLock;

/// Alignment of buffers this crate allocates: a page, so that a buffer registered whole starts
/// at first-byte offset 0 of its first page (the NDK's FBO).
pub const BUFFER_ALIGN: usize = netdirect_types::PAGE_SIZE;

/// A range outside a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutOfRange {
    /// Offset asked for.
    pub offset: usize,
    /// Length asked for.
    pub len: usize,
    /// The buffer's length.
    pub buffer_len: usize,
}

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "range {}..+{} outside a buffer of {} octets",
            self.offset, self.len, self.buffer_len
        )
    }
}

impl std::error::Error for OutOfRange {}

enum Storage {
    /// Allocated here with this layout (size 0: a dangling, aligned pointer).
    Owned(Layout),
    /// Memory owned elsewhere (`Buffer::from_raw_parts`); kept alive by the caller's contract
    /// and, if given, by this guard.
    Foreign(#[allow(dead_code)] Option<Box<dyn Send + Sync>>),
}

struct Inner {
    lock: RwLock<()>,
    ptr: NonNull<u8>,
    len: usize,
    storage: Storage,
}

// SAFETY: the bytes behind `ptr` are only read under `lock.read()` and only written under
// `lock.write()` (see `Buffer::with` and `Buffer::with_mut`), so sharing the pointer between
// threads cannot race; `storage` is Send + Sync itself.
unsafe impl Send for Inner {}
// SAFETY: as above.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Storage::Owned(layout) = self.storage {
            if layout.size() != 0 {
                // SAFETY: `ptr` was returned by `alloc::alloc_zeroed(layout)` in `Buffer::new`
                // and is freed exactly once, here, when the last `Arc` goes.
                unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
            }
        }
    }
}

/// A shared, page-aligned byte buffer for registration.
///
/// Clones share the bytes. Reads and writes copy under a lock; [`Buffer::with`] and
/// [`Buffer::with_mut`] lend the bytes for the duration of a closure.
///
/// ```
/// use netdirect::Buffer;
/// let b = Buffer::new(8192);
/// b.write_at(4096, b"ping").unwrap();
/// let mut out = [0u8; 4];
/// b.read_at(4096, &mut out).unwrap();
/// assert_eq!(&out, b"ping");
/// assert_eq!(b.address() % 4096, 0);
/// assert!(b.read_at(8190, &mut out).is_err());
/// ```
#[derive(Clone)]
pub struct Buffer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("address", &format_args!("{:#x}", self.address()))
            .field("len", &self.inner.len)
            .finish()
    }
}

impl Buffer {
    /// A zeroed buffer of `len` octets, aligned to [`BUFFER_ALIGN`].
    ///
    /// # Panics
    /// If the allocation fails or `len` overflows a layout (as `Vec` does).
    pub fn new(len: usize) -> Buffer {
        let layout = Layout::from_size_align(len, BUFFER_ALIGN).expect("buffer size overflows");
        let ptr = if len == 0 {
            // An aligned, non-null pointer that is never dereferenced for zero octets.
            NonNull::new(BUFFER_ALIGN as *mut u8).expect("non-zero")
        } else {
            // SAFETY: `layout` has a non-zero size.
            let p = unsafe { alloc::alloc_zeroed(layout) };
            NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(layout))
        };
        Buffer {
            inner: Arc::new(Inner {
                lock: RwLock::new(()),
                ptr,
                len,
                storage: Storage::Owned(layout),
            }),
        }
    }

    /// A buffer holding a copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Buffer {
        let b = Buffer::new(bytes.len());
        b.with_mut(|m| m.copy_from_slice(bytes));
        b
    }

    /// A buffer over memory owned elsewhere (a mapping, a C allocation), for zero-copy
    /// registration of memory this crate did not allocate.
    ///
    /// `keep_alive`, if given, is dropped when the last clone of the buffer goes.
    ///
    /// # Safety
    /// * `ptr` is valid for reads and writes of `len` octets, and stays valid until
    ///   `keep_alive` is dropped (or, without it, for as long as any clone of the returned
    ///   buffer or anything registered over it exists);
    /// * nothing else reads or writes those octets while the buffer exists, except through this
    ///   buffer (its locked accessors), so that no data race can occur.
    pub unsafe fn from_raw_parts(
        ptr: NonNull<u8>,
        len: usize,
        keep_alive: Option<Box<dyn Send + Sync>>,
    ) -> Buffer {
        Buffer {
            inner: Arc::new(Inner {
                lock: RwLock::new(()),
                ptr,
                len,
                storage: Storage::Foreign(keep_alive),
            }),
        }
    }

    /// Octets in the buffer.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// Whether the buffer has no octets.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// The buffer's address: the "virtual address" registration uses as the region's base (the
    /// NDK's MDL virtual address), never dereferenced by a provider.
    pub fn address(&self) -> u64 {
        self.inner.ptr.as_ptr() as usize as u64
    }

    /// Whether two handles share the same bytes.
    pub fn ptr_eq(&self, other: &Buffer) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Lends the bytes for reading.
    pub fn with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        let _guard = self.inner.lock.read();
        // SAFETY: `ptr` is valid for `len` octets (constructor contracts); the read lock
        // excludes every writer for the life of the slice, which does not outlive `_guard`.
        let bytes = unsafe { std::slice::from_raw_parts(self.inner.ptr.as_ptr(), self.inner.len) };
        f(bytes)
    }

    /// Lends the bytes for writing.
    pub fn with_mut<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let _guard = self.inner.lock.write();
        // SAFETY: `ptr` is valid for `len` octets; the write lock excludes every other reader
        // and writer for the life of the slice, which does not outlive `_guard`.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(self.inner.ptr.as_ptr(), self.inner.len) };
        f(bytes)
    }

    fn check(&self, offset: usize, len: usize) -> Result<std::ops::Range<usize>, OutOfRange> {
        match offset.checked_add(len) {
            Some(end) if end <= self.inner.len => Ok(offset..end),
            _ => Err(OutOfRange {
                offset,
                len,
                buffer_len: self.inner.len,
            }),
        }
    }

    /// Copies `out.len()` octets at `offset` into `out`.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> Result<(), OutOfRange> {
        let r = self.check(offset, out.len())?;
        self.with(|b| out.copy_from_slice(&b[r]));
        Ok(())
    }

    /// Copies `data` into the buffer at `offset`.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), OutOfRange> {
        let r = self.check(offset, data.len())?;
        self.with_mut(|b| b[r].copy_from_slice(data));
        Ok(())
    }

    /// A copy of the whole buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        self.with(<[u8]>::to_vec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_length_and_alignment() {
        let b = Buffer::new(0);
        assert!(b.is_empty());
        assert_eq!(b.to_vec(), Vec::<u8>::new());
        assert!(b.write_at(0, &[]).is_ok());
        assert!(b.write_at(0, &[1]).is_err());
        let b = Buffer::new(100);
        assert_eq!(b.address() % BUFFER_ALIGN as u64, 0);
        assert_eq!(b.to_vec(), vec![0; 100]);
    }

    #[test]
    fn clones_share_and_outlive() {
        let b = Buffer::from_slice(b"abc");
        let c = b.clone();
        drop(b);
        c.write_at(1, b"X").unwrap();
        assert_eq!(c.to_vec(), b"aXc");
        assert!(c.ptr_eq(&c.clone()));
        assert!(!c.ptr_eq(&Buffer::from_slice(b"aXc")));
    }

    #[test]
    fn ranges_are_checked_without_overflow() {
        let b = Buffer::new(10);
        let mut out = [0u8; 2];
        assert_eq!(
            b.read_at(usize::MAX, &mut out),
            Err(OutOfRange {
                offset: usize::MAX,
                len: 2,
                buffer_len: 10
            })
        );
        assert!(b.read_at(8, &mut out).is_ok());
        assert!(b.read_at(9, &mut out).is_err());
    }

    #[test]
    fn foreign_memory_is_kept_alive() {
        let mut backing = vec![7u8; 16].into_boxed_slice();
        let ptr = NonNull::new(backing.as_mut_ptr()).unwrap();
        // SAFETY: `backing` is moved into the keep-alive guard, so the pointer stays valid for
        // the buffer's life, and nothing else touches it.
        let b = unsafe { Buffer::from_raw_parts(ptr, 16, Some(Box::new(backing))) };
        assert_eq!(b.to_vec(), vec![7; 16]);
        b.write_at(0, &[1]).unwrap();
        assert_eq!(b.to_vec()[0], 1);
    }

    #[test]
    fn concurrent_readers_and_writers() {
        let b = Buffer::new(4096);
        let handles: Vec<_> = (0..4u8)
            .map(|k| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        b.write_at(usize::from(k) * 1024, &[k; 1024]).unwrap();
                        let mut out = [0u8; 1024];
                        b.read_at(usize::from(k) * 1024, &mut out).unwrap();
                        assert_eq!(out, [k; 1024]);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}

//! DMA-able memory and the copy kernels: **the only module with `unsafe` code.**
//!
//! # Safety contract (the whole trust boundary of the crate)
//!
//! A [`DmaBuffer`] owns (or keeps alive) `len` bytes that live in an [`UnsafeCell`]-like raw
//! allocation. Those bytes are touched by exactly two kinds of actors:
//!
//! * the **client**, through [`ReadGuard`] (`&[u8]`) and [`WriteGuard`] (`&mut [u8]`);
//! * **engines**, through the kernels of this module ([`copy`], [`fill`], [`compare`],
//!   [`crc32c`], [`write_bytes`]), which require a [`Lease`] on every buffer they touch and a
//!   `&mut` [`ChannelToken`] whose id equals the leases' channel id.
//!
//! Each buffer carries a small lock-protected [`LeaseState`] that enforces reader/writer
//! exclusion between these actors:
//!
//! * a client write borrow excludes everything else;
//! * a client read borrow excludes engine write leases;
//! * an engine write lease of channel `c` excludes client borrows and any lease of another
//!   channel; an engine read lease of `c` excludes client writers and write leases of other
//!   channels.
//!
//! Within one channel, kernels run one at a time, because they need `&mut ChannelToken` and a
//! token (unique id, not `Clone`) exists once per channel. Therefore any two accesses to the
//! same bytes are either both reads, or ordered (same token ⇒ same thread or handed over through
//! a lock), or excluded by the lease state. Every kernel bounds-checks its ranges against the
//! buffer length before forming a pointer, so no safe caller can reach memory outside a buffer.
//! Lease and borrow release go through the same mutex as acquisition, which provides the
//! happens-before edge between an engine's writes and a client's later read.

#![allow(unsafe_code)]

use crate::status::{Result, Status};
use std::alloc::{self, Layout};
use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Alignment of buffers allocated by [`DmaBuffer::new`] (one cache line).
pub const BUFFER_ALIGN: usize = 64;

/// Who is using a buffer right now.
#[derive(Debug, Default)]
struct LeaseState {
    client_readers: u32,
    client_writer: bool,
    /// (channel id, read leases, write leases); at most a few entries.
    engine: Vec<(u64, u32, u32)>,
}

enum Storage {
    /// Allocated here with `Layout::from_size_align(max(len,1), 64)`.
    Aligned(NonNull<u8>, Layout),
    /// A `Box<[u8]>` taken over by `from_vec`; rebuilt and dropped in `Drop`.
    Boxed(NonNull<u8>, usize),
    /// Memory owned elsewhere and kept alive by the owner object.
    External(NonNull<u8>, #[allow(dead_code)] Box<dyn Send + Sync>),
}

struct Inner {
    storage: Storage,
    len: usize,
    // Marks the bytes as shared-mutable for the compiler; all access goes through raw pointers.
    _cell: UnsafeCell<()>,
    state: Mutex<LeaseState>,
}

// SAFETY: the bytes are only accessed under the lease discipline described in the module
// docs (client borrows and engine leases are mutually excluded through `state`), so sharing
// the handle between threads cannot create a data race. The owner in `External` is Send+Sync.
unsafe impl Send for Inner {}
// SAFETY: see the `Send` impl; `&Inner` exposes no unsynchronised access to the bytes.
unsafe impl Sync for Inner {}

impl Inner {
    fn ptr(&self) -> *mut u8 {
        match &self.storage {
            Storage::Aligned(p, _) | Storage::Boxed(p, _) | Storage::External(p, _) => p.as_ptr(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        match &self.storage {
            Storage::Aligned(p, layout) => {
                // SAFETY: `p` was returned by `alloc_zeroed(layout)` in `DmaBuffer::new` and is
                // freed exactly once, here, when the last handle goes away.
                unsafe { alloc::dealloc(p.as_ptr(), *layout) }
            }
            Storage::Boxed(p, len) => {
                let raw = std::ptr::slice_from_raw_parts_mut(p.as_ptr(), *len);
                // SAFETY: `raw` is exactly the pointer/length `Box::into_raw` produced in
                // `from_vec`; rebuilding the box once returns the allocation to its allocator.
                drop(unsafe { Box::from_raw(raw) });
            }
            Storage::External(..) => {}
        }
    }
}

/// A block of memory that NetDMA engines may read and write: owned, `Arc`-shared, never freed
/// while a channel still uses it.
///
/// Cloning a `DmaBuffer` clones the handle (both refer to the same bytes). The client reads
/// and writes the bytes through [`DmaBuffer::read`] / [`DmaBuffer::write`], which fail with
/// `STATUS_SHARING_VIOLATION` while an in-flight submission holds a conflicting lease on the
/// buffer. Submissions lease every buffer their chain refers to, from admission until the
/// submission retires (completes or is discarded).
#[derive(Clone)]
pub struct DmaBuffer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DmaBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaBuffer")
            .field("ptr", &self.inner.ptr())
            .field("len", &self.inner.len)
            .finish()
    }
}

impl DmaBuffer {
    /// A zero-filled buffer of `len` bytes aligned to [`BUFFER_ALIGN`].
    ///
    /// # Panics
    /// If the allocation fails (as `Vec` does).
    pub fn new(len: usize) -> DmaBuffer {
        let layout = Layout::from_size_align(len.max(1), BUFFER_ALIGN).expect("buffer too large");
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { alloc::alloc_zeroed(layout) };
        let Some(p) = NonNull::new(p) else {
            alloc::handle_alloc_error(layout)
        };
        Self::wrap(Storage::Aligned(p, layout), len)
    }

    /// A 64-byte-aligned buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> DmaBuffer {
        let b = DmaBuffer::new(data.len());
        b.write().expect("fresh buffer").copy_from_slice(data);
        b
    }

    /// Takes over an existing allocation (no copy; alignment is whatever the allocator gave).
    pub fn from_vec(data: Vec<u8>) -> DmaBuffer {
        let len = data.len();
        let raw = Box::into_raw(data.into_boxed_slice());
        let p = NonNull::new(raw.cast::<u8>()).expect("Box pointers are never null");
        Self::wrap(Storage::Boxed(p, len), len)
    }

    /// Wraps memory owned by someone else (for example a registered memory region).
    ///
    /// # Safety
    /// * `ptr` must be valid for reads and writes of `len` bytes for as long as `owner` lives
    ///   (the buffer keeps `owner` alive until the last handle and the last lease are gone);
    /// * during that time nothing may access those bytes except through this `DmaBuffer`
    ///   (its guards and NetDMA channels), or the bytes may be read concurrently only where no
    ///   engine write lease can exist.
    pub unsafe fn from_raw_parts(
        ptr: NonNull<u8>,
        len: usize,
        owner: Box<dyn Send + Sync>,
    ) -> DmaBuffer {
        Self::wrap(Storage::External(ptr, owner), len)
    }

    fn wrap(storage: Storage, len: usize) -> DmaBuffer {
        DmaBuffer {
            inner: Arc::new(Inner {
                storage,
                len,
                _cell: UnsafeCell::new(()),
                state: Mutex::new(LeaseState::default()),
            }),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// True if both handles refer to the same memory.
    #[inline]
    pub fn ptr_eq(&self, other: &DmaBuffer) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Borrows the bytes for reading. Fails with `STATUS_SHARING_VIOLATION` while a channel may
    /// write the buffer or the client holds a [`WriteGuard`].
    pub fn read(&self) -> Result<ReadGuard<'_>> {
        let mut st = self.inner.lock();
        if st.client_writer || st.engine.iter().any(|e| e.2 > 0) {
            return Err(Status::SHARING_VIOLATION);
        }
        st.client_readers += 1;
        Ok(ReadGuard { buf: self })
    }

    /// Borrows the bytes for writing. Fails with `STATUS_SHARING_VIOLATION` while any channel
    /// leases the buffer or the client holds another guard.
    pub fn write(&self) -> Result<WriteGuard<'_>> {
        let mut st = self.inner.lock();
        if st.client_writer || st.client_readers > 0 || !st.engine.is_empty() {
            return Err(Status::SHARING_VIOLATION);
        }
        st.client_writer = true;
        Ok(WriteGuard { buf: self })
    }

    /// A copy of the contents (`read` + `to_vec`).
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        Ok(self.read()?.to_vec())
    }
}

/// Shared borrow of a [`DmaBuffer`]'s bytes.
pub struct ReadGuard<'a> {
    buf: &'a DmaBuffer,
}

impl Deref for ReadGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the pointer is valid for `len` bytes (storage invariant); `client_readers > 0`
        // excludes client writers and engine write leases for the guard's lifetime, so nobody
        // mutates the bytes while this shared slice exists.
        unsafe { std::slice::from_raw_parts(self.buf.inner.ptr(), self.buf.inner.len) }
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        self.buf.inner.lock().client_readers -= 1;
    }
}

/// Exclusive borrow of a [`DmaBuffer`]'s bytes.
pub struct WriteGuard<'a> {
    buf: &'a DmaBuffer,
}

impl Deref for WriteGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `client_writer` excludes every other access for the guard's lifetime; the
        // pointer is valid for `len` bytes.
        unsafe { std::slice::from_raw_parts(self.buf.inner.ptr(), self.buf.inner.len) }
    }
}

impl DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only slice derived from the guard.
        unsafe { std::slice::from_raw_parts_mut(self.buf.inner.ptr(), self.buf.inner.len) }
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.buf.inner.lock().client_writer = false;
    }
}

/// The execution right of one channel: kernels need `&mut ChannelToken`, and exactly one token
/// exists per channel id, so one channel never runs two kernels at once.
#[derive(Debug)]
pub struct ChannelToken {
    id: u64,
}

impl ChannelToken {
    /// A token with a fresh, never reused id.
    pub(crate) fn new() -> ChannelToken {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ChannelToken {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The channel id leases must carry to be used with this token.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// An engine's right to access one buffer on behalf of one channel (read, or read+write),
/// released on drop.
#[derive(Debug)]
pub struct Lease {
    buf: DmaBuffer,
    channel: u64,
    write: bool,
}

impl Lease {
    /// Acquires a lease for channel `channel`; `STATUS_SHARING_VIOLATION` on conflict.
    pub(crate) fn acquire(buf: &DmaBuffer, channel: u64, write: bool) -> Result<Lease> {
        let mut st = buf.inner.lock();
        let others = st.engine.iter().filter(|e| e.0 != channel);
        let conflict = if write {
            st.client_readers > 0 || st.client_writer || others.count() > 0
        } else {
            st.client_writer || others.clone().any(|e| e.2 > 0)
        };
        if conflict {
            return Err(Status::SHARING_VIOLATION);
        }
        match st.engine.iter_mut().find(|e| e.0 == channel) {
            Some(e) => {
                if write {
                    e.2 += 1;
                } else {
                    e.1 += 1;
                }
            }
            None => st
                .engine
                .push((channel, u32::from(!write), u32::from(write))),
        }
        drop(st);
        Ok(Lease {
            buf: buf.clone(),
            channel,
            write,
        })
    }

    /// The leased buffer.
    pub fn buffer(&self) -> &DmaBuffer {
        &self.buf
    }

    /// True for a read+write lease.
    pub fn is_write(&self) -> bool {
        self.write
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut st = self.buf.inner.lock();
        if let Some(i) = st.engine.iter().position(|e| e.0 == self.channel) {
            let e = &mut st.engine[i];
            if self.write {
                e.2 -= 1;
            } else {
                e.1 -= 1;
            }
            if e.1 == 0 && e.2 == 0 {
                st.engine.swap_remove(i);
            }
        }
    }
}

fn range_ok(lease: &Lease, off: u64, len: u64) -> Result<usize> {
    let end = off.checked_add(len).ok_or(Status::ACCESS_VIOLATION)?;
    if end > lease.buf.inner.len as u64 {
        return Err(Status::ACCESS_VIOLATION);
    }
    Ok(off as usize)
}

fn check(token: &ChannelToken, lease: &Lease, write: bool) -> Result<()> {
    if lease.channel != token.id || (write && !lease.write) {
        return Err(Status::INVALID_PARAMETER);
    }
    Ok(())
}

/// A copy kernel. Which one runs for a given size is decided by a
/// [`CopyPlan`](crate::CopyPlan), normally measured on the running machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CopyMethod {
    /// The platform `memcpy` (`ptr::copy_nonoverlapping`).
    Memcpy,
    /// `rep movsb` (x86-64; fast on CPUs with ERMS/FSRM).
    RepMovsb,
    /// 32-byte AVX loads and ordinary (temporal) stores to an aligned destination.
    Vector,
    /// Streaming (non-temporal) stores: the destination bypasses the caches. Copies shorter
    /// than 256 bytes use ordinary stores.
    NonTemporal,
}

impl CopyMethod {
    /// Every method, in declaration order.
    pub const ALL: [CopyMethod; 4] = [
        CopyMethod::Memcpy,
        CopyMethod::RepMovsb,
        CopyMethod::Vector,
        CopyMethod::NonTemporal,
    ];

    /// True if this CPU can run the method.
    pub fn available(self) -> bool {
        match self {
            CopyMethod::Memcpy => true,
            CopyMethod::RepMovsb => cfg!(target_arch = "x86_64"),
            CopyMethod::Vector => vector_available(),
            CopyMethod::NonTemporal => non_temporal_available(),
        }
    }

    /// Short name (`memcpy`, `rep_movsb`, `vector`, `non_temporal`).
    pub fn name(self) -> &'static str {
        match self {
            CopyMethod::Memcpy => "memcpy",
            CopyMethod::RepMovsb => "rep_movsb",
            CopyMethod::Vector => "vector",
            CopyMethod::NonTemporal => "non_temporal",
        }
    }

    /// True for the methods whose stores go through the caches.
    pub fn is_temporal(self) -> bool {
        self != CopyMethod::NonTemporal
    }
}

/// True if this CPU has a non-temporal store path (x86-64 with AVX2 or SSE2).
pub fn non_temporal_available() -> bool {
    nt_kind() != NtKind::None
}

fn vector_available() -> bool {
    static AVX: OnceLock<bool> = OnceLock::new();
    *AVX.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum NtKind {
    None,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Sse2,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
}

fn nt_kind() -> NtKind {
    static KIND: OnceLock<NtKind> = OnceLock::new();
    *KIND.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                return NtKind::Avx2;
            }
            NtKind::Sse2
        }
        #[cfg(not(target_arch = "x86_64"))]
        NtKind::None
    })
}

/// Copies `len` bytes from `src[so..]` to `dst[do_..]` with `method` (or `memcpy` where the
/// method is not available on this CPU). Overlapping ranges (same buffer) behave like
/// `memmove`. Ranges are bounds-checked (`STATUS_ACCESS_VIOLATION`); leases must belong to
/// `token`'s channel and `dst` must be a write lease (`STATUS_INVALID_PARAMETER`).
pub(crate) fn copy(
    token: &mut ChannelToken,
    src: &Lease,
    so: u64,
    dst: &Lease,
    do_: u64,
    len: u64,
    method: CopyMethod,
) -> Result<()> {
    check(token, src, false)?;
    check(token, dst, true)?;
    let so = range_ok(src, so, len)?;
    let do_ = range_ok(dst, do_, len)?;
    let len = len as usize;
    if len == 0 {
        return Ok(());
    }
    // SAFETY: both ranges were checked to lie inside their buffers, whose pointers are valid
    // for their whole length; the leases (checked to belong to this token's channel, the
    // destination one writable) exclude every conflicting access by clients and other channels,
    // and `&mut token` excludes a concurrent kernel of this channel.
    let (s, d) = unsafe { (src.buf.inner.ptr().add(so), dst.buf.inner.ptr().add(do_)) };
    let overlap = src.buf.ptr_eq(&dst.buf) && so < do_ + len && do_ < so + len;
    if overlap {
        // SAFETY: as above; `ptr::copy` permits overlapping ranges.
        unsafe { std::ptr::copy(s, d, len) };
        return Ok(());
    }
    // SAFETY: the ranges are valid, in bounds and disjoint (checked above).
    unsafe { copy_disjoint(s, d, len, method) };
    Ok(())
}

/// A source and a destination lease checked once for a run of copies between them (the
/// executor's fast path for chains of plain copies): [`CopyPair::copy`] then only checks the
/// token's identity and the two ranges. It borrows both leases, so it cannot outlive them.
pub(crate) struct CopyPair<'a> {
    _leases: std::marker::PhantomData<&'a Lease>,
    channel: u64,
    src: *const u8,
    src_len: u64,
    dst: *mut u8,
    dst_len: u64,
    same: bool,
}

impl<'a> CopyPair<'a> {
    /// Checks that both leases belong to `token`'s channel and `dst` is writable
    /// (`STATUS_INVALID_PARAMETER` otherwise).
    pub(crate) fn new(token: &ChannelToken, src: &'a Lease, dst: &'a Lease) -> Result<Self> {
        check(token, src, false)?;
        check(token, dst, true)?;
        Ok(CopyPair {
            _leases: std::marker::PhantomData,
            channel: token.id,
            src: src.buf.inner.ptr(),
            src_len: src.buf.inner.len as u64,
            dst: dst.buf.inner.ptr(),
            dst_len: dst.buf.inner.len as u64,
            same: src.buf.ptr_eq(&dst.buf),
        })
    }

    /// [`copy`] between the pair's buffers, with the leases' checks already done.
    #[inline]
    pub(crate) fn copy(
        &self,
        token: &mut ChannelToken,
        so: u64,
        do_: u64,
        len: u64,
        method: CopyMethod,
    ) -> Result<()> {
        if token.id != self.channel {
            return Err(Status::INVALID_PARAMETER);
        }
        let (Some(se), Some(de)) = (so.checked_add(len), do_.checked_add(len)) else {
            return Err(Status::ACCESS_VIOLATION);
        };
        if se > self.src_len || de > self.dst_len {
            return Err(Status::ACCESS_VIOLATION);
        }
        if len == 0 {
            return Ok(());
        }
        let (so, do_, len) = (so as usize, do_ as usize, len as usize);
        // SAFETY: both ranges were checked to lie inside their buffers, whose pointers stay
        // valid while the leases the pair borrows are alive (they keep the buffers alive);
        // those leases were checked to belong to this token's channel and the destination to
        // be writable, so they exclude every conflicting access by clients and other
        // channels, and `&mut token` excludes a concurrent kernel of this channel.
        let (s, d) = unsafe { (self.src.add(so), self.dst.add(do_)) };
        if self.same && so < do_ + len && do_ < so + len {
            // SAFETY: as above; `ptr::copy` permits overlapping ranges.
            unsafe { std::ptr::copy(s, d, len) };
            return Ok(());
        }
        // SAFETY: ranges valid, in bounds and disjoint (above).
        unsafe { copy_disjoint(s, d, len, method) };
        Ok(())
    }
}

/// Runs the copy kernel `method` (or `memcpy` where it is not available on this CPU).
///
/// # Safety
/// `s` valid for `len` reads, `d` valid for `len` writes, the ranges do not overlap, and
/// nothing else accesses them meanwhile.
#[inline]
unsafe fn copy_disjoint(s: *const u8, d: *mut u8, len: usize, method: CopyMethod) {
    // In every arm the ranges are valid and disjoint (the caller's contract), and the
    // kernel's CPU feature is checked right in the arm's guard.
    match method {
        #[cfg(target_arch = "x86_64")]
        CopyMethod::NonTemporal if len >= 256 && nt_kind() == NtKind::Avx2 => {
            // SAFETY: AVX2 detected (guard); ranges valid and disjoint (contract).
            unsafe { nt_copy_avx2(s, d, len) }
        }
        #[cfg(target_arch = "x86_64")]
        CopyMethod::NonTemporal if len >= 256 && nt_kind() == NtKind::Sse2 => {
            // SAFETY: SSE2 is x86-64 baseline; ranges valid and disjoint (contract).
            unsafe { nt_copy_sse2(s, d, len) }
        }
        #[cfg(target_arch = "x86_64")]
        CopyMethod::RepMovsb => {
            // SAFETY: `rep movsb` exists on every x86-64; ranges valid and disjoint (contract).
            unsafe { rep_movsb(s, d, len) }
        }
        #[cfg(target_arch = "x86_64")]
        CopyMethod::Vector if len >= 64 && vector_available() => {
            // SAFETY: AVX detected (guard); ranges valid and disjoint (contract).
            unsafe { vector_copy_avx(s, d, len) }
        }
        _ => {
            // SAFETY: ranges valid and disjoint (contract).
            unsafe { std::ptr::copy_nonoverlapping(s, d, len) }
        }
    }
}

/// `rep movsb`: the microcoded string move (ERMS/FSRM make it competitive from a few hundred
/// bytes up).
///
/// # Safety
/// `s` valid for `len` reads, `d` valid for `len` writes, no overlap.
#[cfg(target_arch = "x86_64")]
unsafe fn rep_movsb(s: *const u8, d: *mut u8, len: usize) {
    // SAFETY: the caller guarantees both ranges; the direction flag is clear at function
    // boundaries (System V ABI), so the move runs forward over exactly `len` bytes.
    unsafe {
        std::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rsi") s => _,
            inout("rdi") d => _,
            options(nostack, preserves_flags)
        );
    }
}

/// Temporal vector copy: 32-byte unaligned loads, 32-byte aligned stores, four per iteration;
/// the unaligned head and the tail use `memcpy`.
///
/// # Safety
/// AVX must be available; `s` valid for `len` reads, `d` valid for `len` writes, no overlap.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn vector_copy_avx(s: *const u8, d: *mut u8, len: usize) {
    use std::arch::x86_64::*;
    let head = d.align_offset(32).min(len);
    // SAFETY: `head <= len`, ranges valid and disjoint per the function contract.
    unsafe { std::ptr::copy_nonoverlapping(s, d, head) };
    let mut i = head;
    while i + 128 <= len {
        // SAFETY: `i + 128 <= len` keeps every access in range; `d + i` is 32-byte aligned
        // (head aligned it, steps are multiples of 32) as `_mm256_store_si256` requires.
        unsafe {
            let a = _mm256_loadu_si256(s.add(i).cast());
            let b = _mm256_loadu_si256(s.add(i + 32).cast());
            let c = _mm256_loadu_si256(s.add(i + 64).cast());
            let e = _mm256_loadu_si256(s.add(i + 96).cast());
            _mm256_store_si256(d.add(i).cast(), a);
            _mm256_store_si256(d.add(i + 32).cast(), b);
            _mm256_store_si256(d.add(i + 64).cast(), c);
            _mm256_store_si256(d.add(i + 96).cast(), e);
        }
        i += 128;
    }
    while i + 32 <= len {
        // SAFETY: in range and aligned as above.
        unsafe { _mm256_store_si256(d.add(i).cast(), _mm256_loadu_si256(s.add(i).cast())) };
        i += 32;
    }
    // SAFETY: the tail stays in range.
    unsafe { std::ptr::copy_nonoverlapping(s.add(i), d.add(i), len - i) };
}

/// Non-temporal copy with 32-byte streaming stores: head up to 32-byte destination alignment
/// and the tail are copied with ordinary stores; an `sfence` orders the streaming stores before
/// anything the caller publishes afterwards.
///
/// # Safety
/// AVX2 must be available; `s` valid for `len` reads, `d` valid for `len` writes, no overlap.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn nt_copy_avx2(s: *const u8, d: *mut u8, len: usize) {
    use std::arch::x86_64::*;
    let head = d.align_offset(32).min(len);
    // SAFETY: `head <= len`, ranges valid and disjoint per the function contract.
    unsafe { std::ptr::copy_nonoverlapping(s, d, head) };
    let mut i = head;
    while i + 128 <= len {
        // SAFETY: `i + 128 <= len` keeps every access in range; `d + i` is 32-byte aligned
        // (head aligned it and `i - head` is a multiple of 32), as `_mm256_stream_si256`
        // requires; the loads are unaligned loads.
        unsafe {
            let a = _mm256_loadu_si256(s.add(i).cast());
            let b = _mm256_loadu_si256(s.add(i + 32).cast());
            let c = _mm256_loadu_si256(s.add(i + 64).cast());
            let e = _mm256_loadu_si256(s.add(i + 96).cast());
            _mm256_stream_si256(d.add(i).cast(), a);
            _mm256_stream_si256(d.add(i + 32).cast(), b);
            _mm256_stream_si256(d.add(i + 64).cast(), c);
            _mm256_stream_si256(d.add(i + 96).cast(), e);
        }
        i += 128;
    }
    while i + 32 <= len {
        // SAFETY: in range and aligned as above.
        unsafe { _mm256_stream_si256(d.add(i).cast(), _mm256_loadu_si256(s.add(i).cast())) };
        i += 32;
    }
    // SAFETY: `sfence` has no memory-safety preconditions; the tail copy stays in range.
    unsafe {
        _mm_sfence();
        std::ptr::copy_nonoverlapping(s.add(i), d.add(i), len - i);
    }
}

/// SSE2 variant of [`nt_copy_avx2`] (16-byte streaming stores).
///
/// # Safety
/// `s` valid for `len` reads, `d` valid for `len` writes, no overlap.
#[cfg(target_arch = "x86_64")]
unsafe fn nt_copy_sse2(s: *const u8, d: *mut u8, len: usize) {
    use std::arch::x86_64::*;
    let head = d.align_offset(16).min(len);
    // SAFETY: `head <= len`, ranges valid and disjoint per the function contract.
    unsafe { std::ptr::copy_nonoverlapping(s, d, head) };
    let mut i = head;
    while i + 16 <= len {
        // SAFETY: in range; `d + i` is 16-byte aligned as `_mm_stream_si128` requires.
        unsafe { _mm_stream_si128(d.add(i).cast(), _mm_loadu_si128(s.add(i).cast())) };
        i += 16;
    }
    // SAFETY: `sfence` has no preconditions; the tail copy stays in range.
    unsafe {
        _mm_sfence();
        std::ptr::copy_nonoverlapping(s.add(i), d.add(i), len - i);
    }
}

/// Fills `dst[off..off+len]` with the little-endian bytes of `pattern`, repeated
/// (byte `k` of the range = `pattern.to_le_bytes()[k % 8]`).
pub(crate) fn fill(
    token: &mut ChannelToken,
    dst: &Lease,
    off: u64,
    len: u64,
    pattern: u64,
) -> Result<()> {
    check(token, dst, true)?;
    let off = range_ok(dst, off, len)?;
    // SAFETY: range checked; the write lease plus `&mut token` make this the only access to
    // these bytes for the slice's lifetime (module contract).
    let out = unsafe { std::slice::from_raw_parts_mut(dst.buf.inner.ptr().add(off), len as usize) };
    let pat = pattern.to_le_bytes();
    let mut chunks = out.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&pat);
    }
    let rest = chunks.into_remainder();
    let n = rest.len();
    rest.copy_from_slice(&pat[..n]);
    Ok(())
}

/// Writes `bytes` at `dst[off..]` (used for result words of extension operations).
pub(crate) fn write_bytes(
    token: &mut ChannelToken,
    dst: &Lease,
    off: u64,
    bytes: &[u8],
) -> Result<()> {
    check(token, dst, true)?;
    let off = range_ok(dst, off, bytes.len() as u64)?;
    // SAFETY: range checked; write lease + `&mut token` exclude other access (module contract).
    let out = unsafe { std::slice::from_raw_parts_mut(dst.buf.inner.ptr().add(off), bytes.len()) };
    out.copy_from_slice(bytes);
    Ok(())
}

/// Runs `f` over the shared view `buf[off..off+len]`.
fn with_slice<R>(
    token: &ChannelToken,
    l: &Lease,
    off: u64,
    len: u64,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R> {
    check(token, l, false)?;
    let off = range_ok(l, off, len)?;
    // SAFETY: range checked; the lease excludes writers other than this channel, and this
    // channel's kernels are serialized by the token, which the caller holds for the duration of
    // `f` (which cannot reach a kernel: it only sees the slice).
    let s = unsafe { std::slice::from_raw_parts(l.buf.inner.ptr().add(off), len as usize) };
    Ok(f(s))
}

/// Compares `a[ao..ao+len]` with `b[bo..bo+len]`: `None` if equal, else the offset of the
/// first differing byte.
pub(crate) fn compare(
    token: &mut ChannelToken,
    a: &Lease,
    ao: u64,
    b: &Lease,
    bo: u64,
    len: u64,
) -> Result<Option<u64>> {
    let token = &*token;
    with_slice(token, a, ao, len, |x| {
        with_slice(token, b, bo, len, |y| {
            if x == y {
                None
            } else {
                x.iter().zip(y).position(|(p, q)| p != q).map(|p| p as u64)
            }
        })
    })?
}

/// CRC32c of `src[off..off+len]`, continuing from `seed` (0 for a fresh CRC).
pub(crate) fn crc32c(
    token: &mut ChannelToken,
    src: &Lease,
    off: u64,
    len: u64,
    seed: u32,
) -> Result<u32> {
    with_slice(token, src, off, len, |s| ::crc32c::crc32c_append(seed, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_and_leases_exclude() {
        let b = DmaBuffer::new(100);
        assert_eq!(b.inner.ptr() as usize % BUFFER_ALIGN, 0);
        let t1 = ChannelToken::new();
        let t2 = ChannelToken::new();
        let r = b.read().unwrap();
        assert_eq!(
            Lease::acquire(&b, t1.id(), true).unwrap_err(),
            Status::SHARING_VIOLATION
        );
        let l1 = Lease::acquire(&b, t1.id(), false).unwrap();
        drop(r);
        let w1 = Lease::acquire(&b, t1.id(), true).unwrap();
        assert!(Lease::acquire(&b, t2.id(), false).is_err());
        assert!(b.read().is_err());
        assert!(b.write().is_err());
        drop(w1);
        let _l2 = Lease::acquire(&b, t2.id(), false).unwrap();
        assert!(b.read().is_ok());
        assert!(b.write().is_err());
        drop(l1);
    }

    /// A pair checks its leases once (channel, writable destination), then every range
    /// and the token on each copy; overlapping ranges in one buffer behave like `memmove`.
    #[test]
    fn copy_pair_checks_ranges_and_tokens() {
        let mut t = ChannelToken::new();
        let mut other = ChannelToken::new();
        let a = DmaBuffer::from_slice(&(0..64u8).collect::<Vec<_>>());
        let b = DmaBuffer::new(32);
        let la = Lease::acquire(&a, t.id(), false).unwrap();
        let lb = Lease::acquire(&b, t.id(), true).unwrap();
        assert_eq!(
            CopyPair::new(&t, &lb, &la).err(),
            Some(Status::INVALID_PARAMETER),
            "read-only destination"
        );
        let p = CopyPair::new(&t, &la, &lb).unwrap();
        assert_eq!(
            p.copy(&mut other, 0, 0, 8, CopyMethod::Memcpy),
            Err(Status::INVALID_PARAMETER)
        );
        for (so, do_, len) in [(60, 0, 8), (0, 30, 8), (u64::MAX, 0, 2), (0, u64::MAX, 2)] {
            assert_eq!(
                p.copy(&mut t, so, do_, len, CopyMethod::Memcpy),
                Err(Status::ACCESS_VIOLATION)
            );
        }
        for m in CopyMethod::ALL {
            p.copy(&mut t, 32, 0, 32, m).unwrap();
        }
        drop((la, lb));
        assert_eq!(b.to_vec().unwrap(), (32..64u8).collect::<Vec<_>>());
        let lw = Lease::acquire(&a, t.id(), true).unwrap();
        let same = CopyPair::new(&t, &lw, &lw).unwrap();
        same.copy(&mut t, 0, 8, 16, CopyMethod::Vector).unwrap();
        drop(lw);
        let v = a.to_vec().unwrap();
        assert_eq!(&v[8..24], &(0..16u8).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn kernels_check_bounds_and_tokens() {
        let mut t = ChannelToken::new();
        let mut other = ChannelToken::new();
        let a = DmaBuffer::from_slice(&(0..=255u8).collect::<Vec<_>>());
        let b = DmaBuffer::new(256);
        {
            let la = Lease::acquire(&a, t.id(), false).unwrap();
            let lb = Lease::acquire(&b, t.id(), true).unwrap();
            assert_eq!(
                copy(&mut t, &la, 200, &lb, 0, 57, CopyMethod::Memcpy),
                Err(Status::ACCESS_VIOLATION)
            );
            assert_eq!(
                copy(&mut other, &la, 0, &lb, 0, 1, CopyMethod::Memcpy),
                Err(Status::INVALID_PARAMETER)
            );
            assert_eq!(
                copy(&mut t, &lb, 0, &la, 0, 1, CopyMethod::Memcpy),
                Err(Status::INVALID_PARAMETER)
            );
            copy(&mut t, &la, 0, &lb, 0, 256, CopyMethod::NonTemporal).unwrap();
            assert_eq!(compare(&mut t, &la, 0, &lb, 0, 256), Ok(None));
            fill(&mut t, &lb, 3, 10, 0x0807_0605_0403_0201).unwrap();
            assert_eq!(compare(&mut t, &la, 0, &lb, 0, 256), Ok(Some(3)));
            assert_eq!(
                crc32c(&mut t, &la, 0, 9, 0),
                Ok(::crc32c::crc32c(&a.read().unwrap()[..9]))
            );
            // overlapping move inside one buffer
            copy(&mut t, &lb, 0, &lb, 1, 100, CopyMethod::NonTemporal).unwrap();
        }
        let v = b.to_vec().unwrap();
        assert_eq!(&v[1..4], &[0, 1, 2]);
        assert_eq!(&v[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn every_method_all_lengths_and_offsets() {
        let mut t = ChannelToken::new();
        let src: Vec<u8> = (0..2048u32).map(|i| (i * 7 + 3) as u8).collect();
        let a = DmaBuffer::from_slice(&src);
        let b = DmaBuffer::new(2048);
        let la = Lease::acquire(&a, t.id(), false).unwrap();
        let lb = Lease::acquire(&b, t.id(), true).unwrap();
        for (method, len) in CopyMethod::ALL
            .iter()
            .flat_map(|m| [0u64, 1, 31, 63, 64, 127, 255, 256, 257, 1000, 1500].map(|l| (*m, l)))
        {
            for so in [0u64, 1, 17, 33] {
                for d in [0u64, 5, 32, 63] {
                    fill(&mut t, &lb, 0, 2048, 0xAAAA_AAAA_AAAA_AAAA).unwrap();
                    copy(&mut t, &la, so, &lb, d, len, method).unwrap();
                    assert_eq!(compare(&mut t, &la, so, &lb, d, len), Ok(None));
                    if d > 0 {
                        assert_eq!(compare(&mut t, &lb, d - 1, &lb, 2047, 1), Ok(None));
                    }
                }
            }
        }
    }
}

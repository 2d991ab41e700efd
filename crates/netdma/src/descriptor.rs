//! Descriptors, chains and the completion write-back (spec §3.1, §3.2).

use crate::copy::DmaBuffer;
use crate::flags::{ControlFlags, OpType};
use core::fmt;

/// A "physical address" in a [`Chain`]'s address space: buffer slot (bits 48–63) and byte
/// offset in that buffer (bits 0–47).
///
/// NetDMA descriptors carry physical addresses; here every chain carries its own table of
/// [`DmaBuffer`]s (its "memory map") and addresses name (slot, offset) in it. Addresses are
/// resolved and bounds-checked by the engine when it executes the descriptor: a bad one halts
/// the channel with `STATUS_ACCESS_VIOLATION`, never touches memory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct Pa(pub u64);

impl Pa {
    /// Address 0.
    pub const NULL: Pa = Pa(0);
    /// Largest offset an address can carry.
    pub const MAX_OFFSET: u64 = (1 << 48) - 1;

    /// The address of byte `offset` of the buffer in `slot`.
    ///
    /// # Panics
    /// If `offset > Pa::MAX_OFFSET`.
    pub const fn new(slot: BufferSlot, offset: u64) -> Pa {
        assert!(offset <= Self::MAX_OFFSET, "offset too large for a Pa");
        Pa(((slot.0 as u64) << 48) | offset)
    }

    /// The buffer slot part.
    pub const fn slot(self) -> BufferSlot {
        BufferSlot((self.0 >> 48) as u16)
    }

    /// The byte offset part.
    pub const fn offset(self) -> u64 {
        self.0 & Self::MAX_OFFSET
    }

    /// This address plus `n` bytes (same slot).
    pub const fn add(self, n: u64) -> Pa {
        Pa::new(self.slot(), self.offset() + n)
    }
}

impl fmt::Debug for Pa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pa({}:{:#x})", self.slot().0, self.offset())
    }
}

/// Index of a buffer in a [`Chain`]'s buffer table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufferSlot(pub u16);

/// `NextDescriptor`: link to another descriptor of the same [`Chain`].
///
/// `Link::NULL` (0) ends a NetDMA 1.x chain; `Link::to(i)` (stored as `i + 1`) names the
/// descriptor at index `i` of the chain's descriptor array.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct Link(pub u64);

impl Link {
    /// End of list.
    pub const NULL: Link = Link(0);

    /// Link to descriptor `index` of the chain.
    pub const fn to(index: usize) -> Link {
        Link(index as u64 + 1)
    }

    /// The linked index, or `None` for [`Link::NULL`].
    pub const fn index(self) -> Option<usize> {
        if self.0 == 0 {
            None
        } else {
            Some((self.0 - 1) as usize)
        }
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index() {
            None => f.write_str("Link::NULL"),
            Some(i) => write!(f, "Link::to({i})"),
        }
    }
}

/// `NET_DMA_DESCRIPTOR`: 64 bytes, 64-byte aligned, field for field as in `netdma.h`
/// (offsets 0, 4, 8, 16, 24, 32, 40, 48, 56).
///
/// The 2.0 DCA-context union over `TransferSize` is read with
/// [`Descriptor::dca_context`]; `next_source` / `next_destination` are the 2.0 page-break
/// addresses (the 1.x `Reserved1/2`), reused as operands by the extension operations (see
/// [`OpType`]). `user_context1/2` belong to the client and are never interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C, align(64))]
#[doc(alias = "NET_DMA_DESCRIPTOR")]
pub struct Descriptor {
    /// `TransferSize`: bytes to move.
    pub transfer_size: u32,
    /// `ControlFlags`, including the op type in bits 24–31.
    pub control_flags: ControlFlags,
    /// `SourceAddress`.
    pub source: Pa,
    /// `DestinationAddress`.
    pub destination: Pa,
    /// `NextDescriptor`.
    pub next: Link,
    /// `NextSourceAddress` (2.0 source page break) / `Reserved1`.
    pub next_source: Pa,
    /// `NextDestinationAddress` (2.0 destination page break) / `Reserved2`.
    pub next_destination: Pa,
    /// `UserContext1`: client bookkeeping.
    pub user_context1: u64,
    /// `UserContext2`: client bookkeeping.
    pub user_context2: u64,
}

const _: () = assert!(core::mem::size_of::<Descriptor>() == 64);
const _: () = assert!(core::mem::align_of::<Descriptor>() == 64);
const _: () = assert!(core::mem::offset_of!(Descriptor, next) == 24);
const _: () = assert!(core::mem::offset_of!(Descriptor, user_context2) == 56);

impl Descriptor {
    /// A copy descriptor.
    pub fn copy(source: Pa, destination: Pa, transfer_size: u32, flags: ControlFlags) -> Self {
        Descriptor {
            transfer_size,
            control_flags: flags,
            source,
            destination,
            ..Self::default()
        }
    }

    /// A NULL-transfer descriptor (completion marker) with `flags` added.
    pub fn null(flags: ControlFlags) -> Self {
        Descriptor {
            control_flags: flags | ControlFlags::NULL_TRANSFER,
            ..Self::default()
        }
    }

    /// The 8-bit DCA context (APIC id) of a context-change descriptor (`DCAContext8`).
    pub const fn dca_context(&self) -> u8 {
        (self.transfer_size & 0xFF) as u8
    }

    /// The operation type.
    pub const fn op_type(&self) -> OpType {
        self.control_flags.op_type()
    }
}

/// How the engine walks a [`Chain`] (spec §1, §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainStyle {
    /// NetDMA 1.x: start at descriptor 0 and follow `next` until [`Link::NULL`].
    NullTerminated,
    /// NetDMA 2.0: start at descriptor 0 and follow `next` for exactly this many descriptors
    /// (the `DescriptorCount` of Start/Append). The tail's `next` is not followed: in 2.0 it
    /// points at the slot the next Append will fill, which here is that Append's first
    /// descriptor.
    Counted(u32),
}

/// A descriptor list plus the buffers its addresses refer to — what a client hands to
/// [`Channel::start`](crate::Channel::start) / [`Channel::append`](crate::Channel::append).
///
/// The builder methods ([`Chain::copy`], [`Chain::null`], …) append a descriptor and link the
/// previously built one to it, giving a NULL-terminated (1.x) chain; [`Chain::counted`] turns it
/// into a 2.0 descriptor-count chain. [`Chain::push`] and [`Chain::descriptors_mut`] give raw
/// access for hand-made links.
#[derive(Clone, Debug, Default)]
pub struct Chain {
    pub(crate) descriptors: Vec<Descriptor>,
    pub(crate) buffers: Vec<DmaBuffer>,
    pub(crate) style: Option<u32>,
    last_built: Option<usize>,
}

std::thread_local! {
    /// Descriptor arrays of chains this thread submitted, kept for its next chains: a
    /// 64-byte-aligned allocation costs the allocator several hundred instructions, as much as
    /// validating a few descriptors.
    static SPARE: std::cell::RefCell<Vec<Vec<Descriptor>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Spare arrays kept per thread, and the largest one kept (in descriptors).
const SPARES: usize = 4;
const SPARE_MAX: usize = 4096;

/// An empty descriptor array with room for `n`, reusing a spare one if this thread has one.
fn descriptor_vec(n: usize) -> Vec<Descriptor> {
    let spare = SPARE
        .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
        .ok()
        .flatten();
    match spare {
        Some(mut v) => {
            v.reserve(n);
            v
        }
        None => Vec::with_capacity(n),
    }
}

/// Keeps `v`'s allocation for this thread's next chain (see [`descriptor_vec`]).
pub(crate) fn recycle_descriptors(mut v: Vec<Descriptor>) {
    if v.capacity() == 0 || v.capacity() > SPARE_MAX {
        return;
    }
    v.clear();
    let _ = SPARE.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if s.len() < SPARES {
                s.push(v);
            }
        }
    });
}

impl Chain {
    /// An empty chain (NULL-terminated style).
    pub fn new() -> Chain {
        Chain::with_capacity(0)
    }

    /// An empty chain with room for `n` descriptors.
    pub fn with_capacity(n: usize) -> Chain {
        Chain {
            descriptors: descriptor_vec(n),
            ..Chain::default()
        }
    }

    /// Adds `buf` to the buffer table (once; later calls return the same slot).
    ///
    /// # Panics
    /// With more than 65 536 distinct buffers.
    #[inline]
    pub fn buffer(&mut self, buf: &DmaBuffer) -> BufferSlot {
        if let Some(i) = self.buffers.iter().position(|b| b.ptr_eq(buf)) {
            return BufferSlot(i as u16);
        }
        self.add_buffer(buf)
    }

    #[cold]
    fn add_buffer(&mut self, buf: &DmaBuffer) -> BufferSlot {
        assert!(
            self.buffers.len() < 1 << 16,
            "too many buffers in one chain"
        );
        self.buffers.push(buf.clone());
        BufferSlot((self.buffers.len() - 1) as u16)
    }

    /// Address of `offset` in `buf` (adds the buffer to the table).
    #[inline]
    pub fn addr(&mut self, buf: &DmaBuffer, offset: u64) -> Pa {
        let s = self.buffer(buf);
        Pa::new(s, offset)
    }

    /// Appends `d` as is (no linking) and returns its index.
    #[inline]
    pub fn push(&mut self, d: Descriptor) -> usize {
        self.descriptors.push(d);
        self.descriptors.len() - 1
    }

    /// Appends `d`, links the previously built descriptor to it and terminates it with
    /// [`Link::NULL`]; returns its index.
    #[inline]
    pub fn link(&mut self, mut d: Descriptor) -> usize {
        d.next = Link::NULL;
        let i = self.push(d);
        if let Some(p) = self.last_built {
            self.descriptors[p].next = Link::to(i);
        }
        self.last_built = Some(i);
        i
    }

    /// Builds a copy of `len` bytes from `src[src_off..]` to `dst[dst_off..]`.
    #[inline]
    pub fn copy(
        &mut self,
        src: &DmaBuffer,
        src_off: u64,
        dst: &DmaBuffer,
        dst_off: u64,
        len: u32,
        flags: ControlFlags,
    ) -> usize {
        let s = self.addr(src, src_off);
        let d = self.addr(dst, dst_off);
        self.link(Descriptor::copy(s, d, len, flags))
    }

    /// Builds a NULL transfer (completion marker).
    pub fn null(&mut self, flags: ControlFlags) -> usize {
        self.link(Descriptor::null(flags))
    }

    /// Builds a fill (extension [`OpType::FILL`]).
    pub fn fill(
        &mut self,
        dst: &DmaBuffer,
        off: u64,
        len: u32,
        pattern: u64,
        flags: ControlFlags,
    ) -> usize {
        let d = self.addr(dst, off);
        self.link(Descriptor {
            transfer_size: len,
            control_flags: flags.with_op_type(OpType::FILL),
            source: Pa(pattern),
            destination: d,
            ..Descriptor::default()
        })
    }

    /// Builds a compare of `a[a_off..]` and `b[b_off..]` writing the u64 result at
    /// `result[result_off..]` (extension [`OpType::COMPARE`]).
    #[allow(clippy::too_many_arguments)]
    pub fn compare(
        &mut self,
        a: &DmaBuffer,
        a_off: u64,
        b: &DmaBuffer,
        b_off: u64,
        len: u32,
        result: &DmaBuffer,
        result_off: u64,
        flags: ControlFlags,
    ) -> usize {
        let (s, d, r) = (
            self.addr(a, a_off),
            self.addr(b, b_off),
            self.addr(result, result_off),
        );
        self.link(Descriptor {
            transfer_size: len,
            control_flags: flags.with_op_type(OpType::COMPARE),
            source: s,
            destination: d,
            next_destination: r,
            ..Descriptor::default()
        })
    }

    /// Builds a CRC32c of `src[off..off+len]` continuing from `seed`, written as u32 LE at
    /// `result[result_off..]` (extension [`OpType::CRC32C`]).
    #[allow(clippy::too_many_arguments)]
    pub fn crc32c(
        &mut self,
        src: &DmaBuffer,
        off: u64,
        len: u32,
        seed: u32,
        result: &DmaBuffer,
        result_off: u64,
        flags: ControlFlags,
    ) -> usize {
        let (s, r) = (self.addr(src, off), self.addr(result, result_off));
        self.link(Descriptor {
            transfer_size: len,
            control_flags: flags.with_op_type(OpType::CRC32C),
            source: s,
            destination: r,
            next_source: Pa(u64::from(seed)),
            ..Descriptor::default()
        })
    }

    /// Builds a copy that also computes the CRC32c of the copied bytes (extension
    /// [`OpType::COPY_CRC32C`]).
    #[allow(clippy::too_many_arguments)]
    pub fn copy_crc32c(
        &mut self,
        src: &DmaBuffer,
        src_off: u64,
        dst: &DmaBuffer,
        dst_off: u64,
        len: u32,
        seed: u32,
        result: &DmaBuffer,
        result_off: u64,
        flags: ControlFlags,
    ) -> usize {
        let (s, d) = (self.addr(src, src_off), self.addr(dst, dst_off));
        let r = self.addr(result, result_off);
        self.link(Descriptor {
            transfer_size: len,
            control_flags: flags.with_op_type(OpType::COPY_CRC32C),
            source: s,
            destination: d,
            next_source: Pa(u64::from(seed)),
            next_destination: r,
            ..Descriptor::default()
        })
    }

    /// Switches to the NetDMA 2.0 style with `DescriptorCount` = number of descriptors.
    pub fn counted(mut self) -> Chain {
        self.style = Some(self.descriptors.len() as u32);
        self
    }

    /// Sets the chain style explicitly.
    pub fn set_style(&mut self, style: ChainStyle) {
        self.style = match style {
            ChainStyle::NullTerminated => None,
            ChainStyle::Counted(n) => Some(n),
        };
    }

    /// The chain style.
    pub fn style(&self) -> ChainStyle {
        match self.style {
            None => ChainStyle::NullTerminated,
            Some(n) => ChainStyle::Counted(n),
        }
    }

    /// The descriptors, in array order.
    pub fn descriptors(&self) -> &[Descriptor] {
        &self.descriptors
    }

    /// Mutable access to the descriptors (for hand-made links and flags).
    pub fn descriptors_mut(&mut self) -> &mut [Descriptor] {
        &mut self.descriptors
    }

    /// The buffer table.
    pub fn buffers(&self) -> &[DmaBuffer] {
        &self.buffers
    }

    /// Number of descriptors in the array.
    pub fn len(&self) -> usize {
        self.descriptors.len()
    }

    /// True if the array is empty.
    pub fn is_empty(&self) -> bool {
        self.descriptors.is_empty()
    }
}

/// The address a channel gave a submitted descriptor: 64-byte aligned (so that the low six bits
/// of the completion value are free), increasing by 64 per descriptor in execution order and
/// never reused by the channel. 0 means "none".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DescriptorAddress(pub u64);

impl DescriptorAddress {
    /// Address of the descriptor with channel sequence number `seq` (≥ 1).
    pub const fn from_seq(seq: u64) -> Self {
        DescriptorAddress(seq << 6)
    }

    /// The channel sequence number (address / 64).
    pub const fn seq(self) -> u64 {
        self.0 >> 6
    }
}

/// Status part of the completion value (`NetDmaTransferStatus*`, low 3 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TransferStatus {
    /// `NetDmaTransferStatusActive` (0): completed OK, more pending.
    Active = 0,
    /// `NetDmaTransferStatusIdle` (1): completed OK, nothing pending.
    Idle = 1,
    /// `NetDmaTransferStatusSuspend` (2): completed OK, channel suspended.
    Suspend = 2,
    /// `NetDmaTransferStatusHalted` (3): stopped by error, abort or reset.
    Halted = 3,
    /// `NetDmaTransferStatusArmed` (4): first descriptor not complete; address invalid.
    Armed = 4,
}

/// The 64-bit completion value a channel writes back (spec §3.2): address of the last processed
/// descriptor OR'ed with a [`TransferStatus`] in bits 0–2 (bits 3–5 are reserved and zero).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CompletionStatus(pub u64);

impl CompletionStatus {
    /// `NET_DMA_TRANSFER_STATUS_MASK`.
    #[doc(alias = "NET_DMA_TRANSFER_STATUS_MASK")]
    pub const STATUS_MASK: u64 = 0x7;

    /// Builds a value.
    pub const fn new(last: Option<DescriptorAddress>, status: TransferStatus) -> Self {
        let a = match last {
            Some(a) => a.0,
            None => 0,
        };
        CompletionStatus(a | status as u64)
    }

    /// The status part.
    pub const fn status(self) -> TransferStatus {
        match self.0 & Self::STATUS_MASK {
            0 => TransferStatus::Active,
            1 => TransferStatus::Idle,
            2 => TransferStatus::Suspend,
            3 => TransferStatus::Halted,
            _ => TransferStatus::Armed,
        }
    }

    /// The last processed descriptor; `None` when nothing was processed or the status is
    /// `Armed` (address not valid).
    pub const fn last_completed(self) -> Option<DescriptorAddress> {
        let a = self.0 & !0x3F;
        if a == 0 || matches!(self.status(), TransferStatus::Armed) {
            None
        } else {
            Some(DescriptorAddress(a))
        }
    }
}

impl fmt::Debug for CompletionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CompletionStatus({:?}, {:?})",
            self.last_completed(),
            self.status()
        )
    }
}

/// What a successful Start/Append returns: the addresses given to the chain's descriptors.
///
/// The `k`-th descriptor in traversal order got `first + 64·k`. The submission is complete
/// when the channel has completed `last`; use [`Channel::poll`](crate::Channel::poll) /
/// [`Channel::wait`](crate::Channel::wait).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Submission {
    /// Address of the first descriptor executed.
    pub first: DescriptorAddress,
    /// Address of the last descriptor executed.
    pub last: DescriptorAddress,
}

impl Submission {
    /// Number of descriptors in the submission.
    pub fn count(&self) -> u64 {
        self.last.seq() - self.first.seq() + 1
    }

    /// Address of the `k`-th descriptor in traversal order.
    pub fn address_of(&self, k: u64) -> DescriptorAddress {
        DescriptorAddress::from_seq(self.first.seq() + k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_links() {
        assert_eq!(core::mem::offset_of!(Descriptor, control_flags), 4);
        assert_eq!(core::mem::offset_of!(Descriptor, source), 8);
        assert_eq!(core::mem::offset_of!(Descriptor, destination), 16);
        assert_eq!(core::mem::offset_of!(Descriptor, next_source), 32);
        assert_eq!(core::mem::offset_of!(Descriptor, next_destination), 40);
        assert_eq!(core::mem::offset_of!(Descriptor, user_context1), 48);
        assert_eq!(Link::to(0).index(), Some(0));
        assert_eq!(Link::NULL.index(), None);
        let p = Pa::new(BufferSlot(3), 77);
        assert_eq!((p.slot(), p.offset()), (BufferSlot(3), 77));
        let a = DmaBuffer::new(8);
        let mut c = Chain::new();
        c.null(ControlFlags::empty());
        c.copy(&a, 0, &a, 4, 4, ControlFlags::empty());
        assert_eq!(c.descriptors()[0].next, Link::to(1));
        assert_eq!(c.descriptors()[1].next, Link::NULL);
        assert_eq!(c.buffers().len(), 1);
        let cs = CompletionStatus::new(Some(DescriptorAddress::from_seq(5)), TransferStatus::Idle);
        assert_eq!(cs.0, 5 * 64 + 1);
        assert_eq!(cs.last_completed(), Some(DescriptorAddress(320)));
        assert_eq!(
            CompletionStatus::new(None, TransferStatus::Armed).last_completed(),
            None
        );
    }
}

//! Flag words with the exact `netdma.h` values (spec §4), plus this crate's extension bits.

use bitflags::bitflags;

bitflags! {
    /// `NET_DMA_DESCRIPTOR.ControlFlags` (spec §4.1). Bits 24–31 hold the operation type,
    /// see [`OpType`] and [`ControlFlags::op_type`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ControlFlags: u32 {
        /// `NET_DMA_INTERRUPT_ON_COMPLETION`: signal the channel's completion callback after
        /// this descriptor.
        #[doc(alias = "NET_DMA_INTERRUPT_ON_COMPLETION")]
        const INTERRUPT_ON_COMPLETION = 0x0000_0001;
        /// `NET_DMA_SOURCE_NO_SNOOP`: accepted; a CPU engine always reads coherently.
        #[doc(alias = "NET_DMA_SOURCE_NO_SNOOP")]
        const SOURCE_NO_SNOOP = 0x0000_0002;
        /// `NET_DMA_DESTINATION_NO_SNOOP`: the destination need not be cache-coherent; the CPU
        /// engine takes this as "use non-temporal stores" for this descriptor.
        #[doc(alias = "NET_DMA_DESTINATION_NO_SNOOP")]
        const DESTINATION_NO_SNOOP = 0x0000_0004;
        /// `NET_DMA_STATUS_UPDATE_ON_COMPLETION`: write the completion slot after this
        /// descriptor.
        #[doc(alias = "NET_DMA_STATUS_UPDATE_ON_COMPLETION")]
        const STATUS_UPDATE_ON_COMPLETION = 0x0000_0008;
        /// `NET_DMA_SERIALIZE_TRANSFER`: fence; the software engines always serialize.
        #[doc(alias = "NET_DMA_SERIALIZE_TRANSFER")]
        const SERIALIZE_TRANSFER = 0x0000_0010;
        /// `NET_DMA_NULL_TRANSFER`: move no data, but complete (status, callback) as usual.
        #[doc(alias = "NET_DMA_NULL_TRANSFER")]
        const NULL_TRANSFER = 0x0000_0020;
        /// `NET_DMA_SOURCE_PAGE_BREAK` (2.0): after the end of the source's 4 KiB page continue
        /// at `next_source`.
        #[doc(alias = "NET_DMA_SOURCE_PAGE_BREAK")]
        const SOURCE_PAGE_BREAK = 0x0000_0040;
        /// `NET_DMA_DESTINATION_PAGE_BREAK` (2.0): same for the destination and
        /// `next_destination`.
        #[doc(alias = "NET_DMA_DESTINATION_PAGE_BREAK")]
        const DESTINATION_PAGE_BREAK = 0x0000_0080;
        /// `NET_DMA_DESTINATION_DCA_ENABLE` (2.0): the consumer wants the data in its cache;
        /// the CPU engine then never uses non-temporal stores for this descriptor.
        #[doc(alias = "NET_DMA_DESTINATION_DCA_ENABLE")]
        const DESTINATION_DCA_ENABLE = 0x0000_0200;
        /// `NET_DMA_OP_TYPE_CONTEXT_CHANGE` (2.0): op-type field value of a DCA
        /// context-change descriptor.
        #[doc(alias = "NET_DMA_OP_TYPE_CONTEXT_CHANGE")]
        const OP_TYPE_CONTEXT_CHANGE = 0xFF00_0000;
    }
}

impl ControlFlags {
    /// `NET_DMA_DCA_CONTEXT_CHANGE` (2.0): same bit as the interrupt flag, meaningful only in a
    /// context-change descriptor.
    #[doc(alias = "NET_DMA_DCA_CONTEXT_CHANGE")]
    pub const DCA_CONTEXT_CHANGE: ControlFlags = ControlFlags::from_bits_retain(0x0000_0001);
    /// `NET_DMA_OP_TYPE_STANDARD_DMA`: op-type field value of a normal copy (0).
    #[doc(alias = "NET_DMA_OP_TYPE_STANDARD_DMA")]
    pub const OP_TYPE_STANDARD_DMA: ControlFlags = ControlFlags::empty();
    /// `NET_DMA_OP_TYPE_MASK` — unconfirmed in the headers; inferred `0xFF000000` (spec §4.1).
    #[doc(alias = "NET_DMA_OP_TYPE_MASK")]
    pub const OP_TYPE_MASK: u32 = 0xFF00_0000;
    /// `NET_DMA_RESERVED_MASK` — unconfirmed in the headers; inferred `0x00FFFD00`
    /// (bits 8 and 10–23). A descriptor with any of these bits set is rejected with
    /// `STATUS_INVALID_PARAMETER`.
    #[doc(alias = "NET_DMA_RESERVED_MASK")]
    pub const RESERVED_MASK: u32 = 0x00FF_FD00;

    /// The operation type (bits 24–31).
    pub const fn op_type(self) -> OpType {
        OpType((self.bits() >> 24) as u8)
    }

    /// These flags with the operation-type field replaced by `op`.
    pub const fn with_op_type(self, op: OpType) -> ControlFlags {
        ControlFlags::from_bits_retain((self.bits() & !Self::OP_TYPE_MASK) | ((op.0 as u32) << 24))
    }

    /// True if any bit of [`ControlFlags::RESERVED_MASK`] is set.
    pub const fn has_reserved_bits(self) -> bool {
        self.bits() & Self::RESERVED_MASK != 0
    }
}

/// The operation-type field of [`ControlFlags`] (bits 24–31).
///
/// NetDMA defines only [`OpType::STANDARD_DMA`] (0x00) and [`OpType::CONTEXT_CHANGE`] (0xFF).
/// The other values are **extensions of this crate**, numbered like the Intel DSA opcodes they
/// mirror; a provider accepts them only if it advertises the matching [`Extensions`] bit.
/// Operand use of the extension operations (the 64-byte layout is unchanged):
///
/// | op | `source` | `destination` | `next_source` | `next_destination` |
/// |---|---|---|---|---|
/// | `FILL` | 8-byte pattern (raw value, not an address) | target | — | — |
/// | `COMPARE` | first operand | second operand | — | result: u64 LE, `u64::MAX` if equal, else offset of the first difference |
/// | `CRC32C` | data | result: u32 LE CRC32c | seed (low 32 bits) | — |
/// | `COPY_CRC32C` | data | copy target | seed (low 32 bits) | result: u32 LE CRC32c of the data |
///
/// The seed is the CRC32c value to continue from (0 for a fresh CRC), so a CRC over several
/// descriptors can be chained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpType(pub u8);

impl OpType {
    /// `NET_DMA_OP_TYPE_STANDARD_DMA`: copy (or NULL transfer).
    pub const STANDARD_DMA: OpType = OpType(0x00);
    /// Extension: fill the destination with an 8-byte pattern (DSA `MEMFILL`).
    pub const FILL: OpType = OpType(0x04);
    /// Extension: compare two ranges (DSA `COMPARE`).
    pub const COMPARE: OpType = OpType(0x05);
    /// Extension: CRC32c of the source (DSA `CRCGEN`).
    pub const CRC32C: OpType = OpType(0x10);
    /// Extension: copy and CRC32c of the source (DSA `COPY_CRC`).
    pub const COPY_CRC32C: OpType = OpType(0x11);
    /// `NET_DMA_OP_TYPE_CONTEXT_CHANGE` (0xFF): DCA context change (DCA providers only).
    pub const CONTEXT_CHANGE: OpType = OpType(0xFF);
}

bitflags! {
    /// `NET_DMA_PROVIDER_CHARACTERISTICS.Flags` (spec §4.2). Must be empty for 1.0/1.1
    /// providers.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ProviderFlags: u32 {
        /// `NET_DMA_PROVIDER_CHARACTERISTICS_DCA_SUPPORTED` (2.0).
        #[doc(alias = "NET_DMA_PROVIDER_CHARACTERISTICS_DCA_SUPPORTED")]
        #[doc(alias = "NET_DMA_PROVIDER_ATTRIBUTES_DCA_SUPPORTED")]
        const DCA_SUPPORTED = 0x0000_0001;
        /// `NET_DMA_PROVIDER_SUPPORTS_PROC_GROUPS` (Windows 7).
        #[doc(alias = "NET_DMA_PROVIDER_SUPPORTS_PROC_GROUPS")]
        const SUPPORTS_PROC_GROUPS = 0x0000_0002;
    }
}

bitflags! {
    /// Extensions beyond NetDMA that a provider advertises (this crate's own bits; modelled on
    /// Intel DSA and Linux dmaengine). An operation whose bit is not advertised is rejected
    /// with `STATUS_NOT_SUPPORTED` at submission.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Extensions: u32 {
        /// [`OpType::FILL`] descriptors.
        const FILL = 0x0000_0001;
        /// [`OpType::COMPARE`] descriptors.
        const COMPARE = 0x0000_0002;
        /// [`OpType::CRC32C`] descriptors.
        const CRC32C = 0x0000_0004;
        /// [`OpType::COPY_CRC32C`] descriptors.
        const COPY_CRC32C = 0x0000_0008;
        /// `Channel::append_batch`: several chains admitted all-or-nothing with one doorbell.
        const BATCH = 0x0000_0010;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values() {
        assert_eq!(ControlFlags::INTERRUPT_ON_COMPLETION.bits(), 0x1);
        assert_eq!(ControlFlags::STATUS_UPDATE_ON_COMPLETION.bits(), 0x8);
        assert_eq!(ControlFlags::NULL_TRANSFER.bits(), 0x20);
        assert_eq!(ControlFlags::DESTINATION_DCA_ENABLE.bits(), 0x200);
        assert_eq!(
            ControlFlags::OP_TYPE_CONTEXT_CHANGE.op_type(),
            OpType::CONTEXT_CHANGE
        );
        let f = ControlFlags::NULL_TRANSFER.with_op_type(OpType::FILL);
        assert_eq!(f.bits(), 0x0400_0020);
        assert_eq!(f.op_type(), OpType::FILL);
        assert!(ControlFlags::from_bits_retain(0x100).has_reserved_bits());
        assert!(!ControlFlags::all().has_reserved_bits());
        assert_eq!(ProviderFlags::SUPPORTS_PROC_GROUPS.bits(), 2);
    }
}

//! Bit sets: work-request flags, memory-registration flags, adapter capability flags.

bitflags::bitflags! {
    /// `NDK_OP_FLAG_*`: flags on initiator work requests (spec §6.1).
    ///
    /// Multi-bit values are kept as the NDK defines them: [`OpFlags::ALLOW_REMOTE_WRITE`] is 0x30,
    /// so it contains [`OpFlags::ALLOW_LOCAL_WRITE`] (0x10).
    ///
    /// [`OpFlags::RDMA_READ_LOCAL_INVALIDATE`] is **0x100**, the header value. The `NdkRead` doc page
    /// prints 0x200, which would collide with [`OpFlags::DEFER`] (spec §9.1).
    ///
    /// The kernel values differ from the user-mode NDSPI `ND_OP_FLAG_*` set from 0x10 upward.
    ///
    /// ```
    /// use netdirect_types::OpFlags;
    /// let f = OpFlags::ALLOW_REMOTE_WRITE;
    /// assert_eq!(f.bits(), 0x30);
    /// assert!(f.contains(OpFlags::ALLOW_LOCAL_WRITE));
    /// assert!(OpFlags::READ_VALID.contains(OpFlags::RDMA_READ_LOCAL_INVALIDATE));
    /// assert!(!OpFlags::SEND_VALID.contains(OpFlags::RDMA_READ_LOCAL_INVALIDATE));
    /// ```
    #[doc(alias = "NDK_OP_FLAG")]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct OpFlags: u32 {
        /// No CQ entry if the request succeeds; a failed request still produces one.
        #[doc(alias = "NDK_OP_FLAG_SILENT_SUCCESS")]
        const SILENT_SUCCESS = 0x0000_0001;
        /// Do not start this request until every earlier RDMA read on the QP has completed.
        #[doc(alias = "NDK_OP_FLAG_READ_FENCE")]
        const READ_FENCE = 0x0000_0002;
        /// The peer's matching receive completion counts as solicited (send, send-and-invalidate).
        #[doc(alias = "NDK_OP_FLAG_SEND_AND_SOLICIT_EVENT")]
        const SEND_AND_SOLICIT_EVENT = 0x0000_0004;
        /// Grant remote read (fast-register, bind).
        #[doc(alias = "NDK_OP_FLAG_ALLOW_REMOTE_READ")]
        const ALLOW_REMOTE_READ = 0x0000_0008;
        /// Grant local write: the adapter may write into the region (fast-register).
        #[doc(alias = "NDK_OP_FLAG_ALLOW_LOCAL_WRITE")]
        const ALLOW_LOCAL_WRITE = 0x0000_0010;
        /// Grant remote write (fast-register, bind). 0x30: embeds `ALLOW_LOCAL_WRITE` plus bit 0x20.
        #[doc(alias = "NDK_OP_FLAG_ALLOW_REMOTE_WRITE")]
        const ALLOW_REMOTE_WRITE = 0x0000_0030;
        /// Copy the data at post time; SGE tokens are ignored; total size ≤ the QP inline size.
        #[doc(alias = "NDK_OP_FLAG_INLINE")]
        const INLINE = 0x0000_0040;
        /// The region may be the destination of an RDMA read (fast-register).
        #[doc(alias = "NDK_OP_FLAG_RDMA_READ_SINK")]
        const RDMA_READ_SINK = 0x0000_0080;
        /// [1.2] Read: invalidate the first SGE's token on successful completion. 0x100, not the
        /// 0x200 printed on the `NdkRead` page (spec §9.1).
        #[doc(alias = "NDK_OP_FLAG_RDMA_READ_LOCAL_INVALIDATE")]
        const RDMA_READ_LOCAL_INVALIDATE = 0x0000_0100;
        /// [1.2] The provider may delay handing the request to the hardware (spec §7.1).
        #[doc(alias = "NDK_OP_FLAG_DEFER")]
        const DEFER = 0x0000_0200;
    }
}

impl OpFlags {
    /// Flags `NdkSend` and `NdkSendAndInvalidate` accept.
    pub const SEND_VALID: Self = Self::SILENT_SUCCESS
        .union(Self::READ_FENCE)
        .union(Self::SEND_AND_SOLICIT_EVENT)
        .union(Self::INLINE)
        .union(Self::DEFER);
    /// Flags `NdkRead` accepts.
    pub const READ_VALID: Self = Self::SILENT_SUCCESS
        .union(Self::READ_FENCE)
        .union(Self::RDMA_READ_LOCAL_INVALIDATE)
        .union(Self::DEFER);
    /// Flags `NdkWrite` accepts. Includes `INLINE`: the write page omits it, but inline sizes are
    /// defined for "send or write" (spec §3.7, our decision).
    pub const WRITE_VALID: Self = Self::SILENT_SUCCESS
        .union(Self::READ_FENCE)
        .union(Self::INLINE)
        .union(Self::DEFER);
    /// Flags `NdkBind` accepts.
    pub const BIND_VALID: Self = Self::SILENT_SUCCESS
        .union(Self::READ_FENCE)
        .union(Self::ALLOW_REMOTE_READ)
        .union(Self::ALLOW_REMOTE_WRITE)
        .union(Self::DEFER);
    /// Flags `NdkFastRegister` accepts.
    pub const FAST_REGISTER_VALID: Self = Self::SILENT_SUCCESS
        .union(Self::READ_FENCE)
        .union(Self::ALLOW_REMOTE_READ)
        .union(Self::ALLOW_LOCAL_WRITE)
        .union(Self::ALLOW_REMOTE_WRITE)
        .union(Self::RDMA_READ_SINK)
        .union(Self::DEFER);
    /// Flags `NdkInvalidate` accepts.
    pub const INVALIDATE_VALID: Self = Self::SILENT_SUCCESS
        .union(Self::READ_FENCE)
        .union(Self::DEFER);

    /// Local write is granted: bit 0x10 or 0x20 set (remote write implies local write, as for
    /// [`MrFlags::grants_local_write`]).
    #[inline]
    pub const fn grants_local_write(self) -> bool {
        self.bits() & 0x30 != 0
    }

    /// Remote write is granted: bit 0x20 set (the bit `ALLOW_REMOTE_WRITE` adds to local write).
    #[inline]
    pub const fn grants_remote_write(self) -> bool {
        self.bits() & 0x20 != 0
    }

    /// Remote read is granted.
    #[inline]
    pub const fn grants_remote_read(self) -> bool {
        self.contains(Self::ALLOW_REMOTE_READ)
    }
}

bitflags::bitflags! {
    /// `NDK_MR_FLAG_*`: access rights passed to `NdkRegisterMr` (spec §6.3).
    ///
    /// `NDK_MR_FLAG_ALLOW_LOCAL_READ` is 0: local read is always granted. It is the associated
    /// constant [`MrFlags::ALLOW_LOCAL_READ`] (= [`MrFlags::empty`]) rather than a flag, because a
    /// zero-valued flag is "contained" in every set and would confuse iteration and printing.
    ///
    /// [`MrFlags::ALLOW_REMOTE_WRITE`] is 0x5: it embeds [`MrFlags::ALLOW_LOCAL_WRITE`] (0x1) plus
    /// bit 0x4. Test rights with [`MrFlags::grants_local_write`] and
    /// [`MrFlags::grants_remote_write`], which follow the spec's hint (bit 0x4 means remote write and
    /// also grants local write).
    ///
    /// ```
    /// use netdirect_types::MrFlags;
    /// let f = MrFlags::ALLOW_REMOTE_WRITE | MrFlags::ALLOW_REMOTE_READ;
    /// assert!(f.grants_remote_write() && f.grants_local_write() && f.grants_remote_read());
    /// assert!(!MrFlags::ALLOW_LOCAL_READ.grants_local_write());
    /// // A lone 0x4 still means remote (and so local) write.
    /// assert!(MrFlags::from_bits_retain(0x4).grants_local_write());
    /// ```
    #[doc(alias = "NDK_MR_FLAG")]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct MrFlags: u32 {
        /// The adapter may write into the region (receive buffers, read sinks).
        #[doc(alias = "NDK_MR_FLAG_ALLOW_LOCAL_WRITE")]
        const ALLOW_LOCAL_WRITE = 0x0000_0001;
        /// Peers holding the remote token may RDMA-read the region.
        #[doc(alias = "NDK_MR_FLAG_ALLOW_REMOTE_READ")]
        const ALLOW_REMOTE_READ = 0x0000_0002;
        /// Peers may RDMA-write the region. 0x5: embeds `ALLOW_LOCAL_WRITE` plus bit 0x4.
        #[doc(alias = "NDK_MR_FLAG_ALLOW_REMOTE_WRITE")]
        const ALLOW_REMOTE_WRITE = 0x0000_0005;
        /// The region may receive RDMA-read data. Required unless the adapter advertises
        /// [`AdapterFlags::RDMA_READ_SINK_NOT_REQUIRED`]; then it is accepted and may be ignored.
        #[doc(alias = "NDK_MR_FLAG_RDMA_READ_SINK")]
        const RDMA_READ_SINK = 0x0000_0008;
    }
}

impl MrFlags {
    /// `NDK_MR_FLAG_ALLOW_LOCAL_READ` (0): implicit, always granted. Equal to [`MrFlags::empty`].
    #[doc(alias = "NDK_MR_FLAG_ALLOW_LOCAL_READ")]
    pub const ALLOW_LOCAL_READ: Self = Self::empty();

    /// Local write is granted: bit 0x1 or bit 0x4 (remote write implies local write).
    #[inline]
    pub const fn grants_local_write(self) -> bool {
        self.bits() & 0x5 != 0
    }

    /// Remote write is granted: bit 0x4, per the spec's implementation hint.
    #[inline]
    pub const fn grants_remote_write(self) -> bool {
        self.bits() & 0x4 != 0
    }

    /// Remote read is granted.
    #[inline]
    pub const fn grants_remote_read(self) -> bool {
        self.contains(Self::ALLOW_REMOTE_READ)
    }

    /// Any remote right (read or write) is granted, i.e. the region needs a remote token.
    #[inline]
    pub const fn grants_remote_access(self) -> bool {
        self.grants_remote_read() || self.grants_remote_write()
    }

    /// The region was registered as an RDMA-read sink.
    #[inline]
    pub const fn is_rdma_read_sink(self) -> bool {
        self.contains(Self::RDMA_READ_SINK)
    }
}

bitflags::bitflags! {
    /// `NDK_ADAPTER_FLAG_*`: capabilities in [`AdapterInfo::adapter_flags`](crate::AdapterInfo)
    /// (spec §5.1). Optional features are gated by these flags, not only by the version.
    ///
    /// ```
    /// use netdirect_types::AdapterFlags;
    /// let f = AdapterFlags::CQ_RESIZE_SUPPORTED | AdapterFlags::LOOPBACK_CONNECTIONS_SUPPORTED;
    /// assert_eq!(f.bits(), 0x0001_0100);
    /// ```
    #[doc(alias = "NDK_ADAPTER_FLAG")]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct AdapterFlags: u32 {
        /// Incoming data lands in buffer order (the last byte is never written before earlier ones).
        #[doc(alias = "NDK_ADAPTER_FLAG_IN_ORDER_DMA_SUPPORTED")]
        const IN_ORDER_DMA_SUPPORTED = 0x0000_0001;
        /// Read-sink buffers need no special rights; privileged-token logical addresses may be
        /// read sinks.
        #[doc(alias = "NDK_ADAPTER_FLAG_RDMA_READ_SINK_NOT_REQUIRED")]
        const RDMA_READ_SINK_NOT_REQUIRED = 0x0000_0002;
        /// `NdkControlCqInterruptModeration` works.
        #[doc(alias = "NDK_ADAPTER_FLAG_CQ_INTERRUPT_MODERATION_SUPPORTED")]
        const CQ_INTERRUPT_MODERATION_SUPPORTED = 0x0000_0004;
        /// Several connections can be processed in parallel by multiple engines.
        #[doc(alias = "NDK_ADAPTER_FLAG_MULTI_ENGINE_SUPPORTED")]
        const MULTI_ENGINE_SUPPORTED = 0x0000_0008;
        /// [1.2] [`OpFlags::RDMA_READ_LOCAL_INVALIDATE`] is honoured.
        #[doc(alias = "NDK_ADAPTER_FLAG_RDMA_READ_LOCAL_INVALIDATE_SUPPORTED")]
        const RDMA_READ_LOCAL_INVALIDATE_SUPPORTED = 0x0000_0010;
        /// `NdkResizeCq` is allowed.
        #[doc(alias = "NDK_ADAPTER_FLAG_CQ_RESIZE_SUPPORTED")]
        const CQ_RESIZE_SUPPORTED = 0x0000_0100;
        /// Connections from a local address of this adapter to the same address work.
        #[doc(alias = "NDK_ADAPTER_FLAG_LOOPBACK_CONNECTIONS_SUPPORTED")]
        const LOOPBACK_CONNECTIONS_SUPPORTED = 0x0001_0000;
    }
}

// `READ_FENCE | DEFER`; unnamed bits as `0x..`; empty prints nothing (bitflags' text format).
macro_rules! display_flags {
    ($($ty:ty),*) => {$(
        /// Flag names joined by ` | ` (the `bitflags` text format); unnamed bits print as hex.
        impl core::fmt::Display for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                bitflags::parser::to_writer(self, f)
            }
        }
    )*};
}

display_flags!(OpFlags, MrFlags, AdapterFlags);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mr_rights_follow_bit_rules() {
        let none = MrFlags::ALLOW_LOCAL_READ;
        assert_eq!(none.bits(), 0);
        assert!(!none.grants_local_write() && !none.grants_remote_write());
        assert!(!none.grants_remote_access());

        let lw = MrFlags::ALLOW_LOCAL_WRITE;
        assert!(lw.grants_local_write() && !lw.grants_remote_write());

        let rw = MrFlags::ALLOW_REMOTE_WRITE;
        assert!(rw.grants_local_write() && rw.grants_remote_write() && !rw.grants_remote_read());
        assert!(rw.contains(MrFlags::ALLOW_LOCAL_WRITE));

        // Bit 0x4 without 0x1: still remote write, and so local write.
        let bit4 = MrFlags::from_bits_retain(0x4);
        assert!(bit4.grants_remote_write() && bit4.grants_local_write());

        let rr = MrFlags::ALLOW_REMOTE_READ;
        assert!(rr.grants_remote_read() && !rr.grants_local_write() && rr.grants_remote_access());

        assert!(MrFlags::RDMA_READ_SINK.is_rdma_read_sink());
        assert!(!MrFlags::RDMA_READ_SINK.grants_local_write());
    }

    #[test]
    fn op_rights_follow_bit_rules() {
        assert!(OpFlags::ALLOW_LOCAL_WRITE.grants_local_write());
        assert!(!OpFlags::ALLOW_LOCAL_WRITE.grants_remote_write());
        assert!(OpFlags::ALLOW_REMOTE_WRITE.grants_remote_write());
        assert!(OpFlags::ALLOW_REMOTE_WRITE.grants_local_write());
        assert!(OpFlags::from_bits_retain(0x20).grants_local_write());
        assert!(OpFlags::ALLOW_REMOTE_READ.grants_remote_read());
        assert!(!OpFlags::INLINE.grants_local_write());
    }

    #[test]
    fn per_request_masks() {
        assert_eq!(OpFlags::SEND_VALID.bits(), 0x1 | 0x2 | 0x4 | 0x40 | 0x200);
        assert_eq!(OpFlags::READ_VALID.bits(), 0x1 | 0x2 | 0x100 | 0x200);
        assert_eq!(OpFlags::WRITE_VALID.bits(), 0x1 | 0x2 | 0x40 | 0x200);
        assert_eq!(OpFlags::BIND_VALID.bits(), 0x1 | 0x2 | 0x8 | 0x30 | 0x200);
        assert_eq!(
            OpFlags::FAST_REGISTER_VALID.bits(),
            0x1 | 0x2 | 0x8 | 0x10 | 0x30 | 0x80 | 0x200
        );
        assert_eq!(OpFlags::INVALIDATE_VALID.bits(), 0x1 | 0x2 | 0x200);
    }

    #[test]
    fn display_names_flags() {
        assert_eq!(
            (OpFlags::READ_FENCE | OpFlags::DEFER).to_string(),
            "READ_FENCE | DEFER"
        );
        assert_eq!(MrFlags::ALLOW_LOCAL_READ.to_string(), "");
        assert_eq!(
            AdapterFlags::from_bits_retain(0x2_0000).to_string(),
            "0x20000"
        );
        // 0x30 is spelled with both names that cover it; it parses back to the same bits.
        let rw = OpFlags::ALLOW_REMOTE_WRITE.to_string();
        assert_eq!(
            bitflags::parser::from_str::<OpFlags>(&rw).ok(),
            Some(OpFlags::ALLOW_REMOTE_WRITE)
        );
    }
}

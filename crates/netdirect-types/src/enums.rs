//! Value enumerations: CQ notify type, object type, operation type, RDMA technology.

use core::fmt;

// One line per variant gives the Rust name, the NDK name and the value, and generates
// `ALL`, `from_u32`, `as_u32`, `ndk_name`, `From<_> for u32` and `Display` (the NDK name).
macro_rules! ndk_enum {
    (
        $(#[$meta:meta])*
        pub enum $ty:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, $ndk:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum $ty {
            $(
                $(#[$vmeta])*
                #[doc = concat!("\n\n`", $ndk, "` = `", stringify!($value), "`.")]
                #[doc(alias = $ndk)]
                $variant = $value,
            )*
        }

        impl $ty {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            /// The variant with this numeric value, or `None` for a value the NDK does not define.
            pub const fn from_u32(value: u32) -> Option<Self> {
                match value {
                    $( $value => Some($ty::$variant), )*
                    _ => None,
                }
            }

            /// The numeric NDK value.
            #[inline]
            pub const fn as_u32(self) -> u32 {
                self as u32
            }

            /// The NDK spelling of this value.
            pub const fn ndk_name(self) -> &'static str {
                match self {
                    $( $ty::$variant => $ndk, )*
                }
            }
        }

        impl From<$ty> for u32 {
            #[inline]
            fn from(v: $ty) -> u32 {
                v as u32
            }
        }

        /// Prints the NDK name.
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.ndk_name())
            }
        }
    };
}

ndk_enum! {
    /// `NDK_CQ_NOTIFY_*`: what an `NdkArmCq` waits for (spec §6.2, §7.4). A value, not a bit set.
    ///
    /// ```
    /// use netdirect_types::CqNotifyType;
    /// assert_eq!(CqNotifyType::from_u32(2), Some(CqNotifyType::Solicited));
    /// assert_eq!(CqNotifyType::from_u32(3), None);
    /// ```
    pub enum CqNotifyType {
        /// CQ errors only (overrun, catastrophic failure).
        Errors = 0, "NDK_CQ_NOTIFY_ERRORS";
        /// The next completion. Any new completion satisfies it, error completions included
        /// (spec §6.2 decision).
        Any = 1, "NDK_CQ_NOTIFY_ANY";
        /// The next receive completion of a send that carried
        /// [`OpFlags::SEND_AND_SOLICIT_EVENT`](crate::OpFlags::SEND_AND_SOLICIT_EVENT), or any
        /// completion with an error status.
        Solicited = 2, "NDK_CQ_NOTIFY_SOLICITED";
    }
}

ndk_enum! {
    /// `NDK_OBJECT_TYPE`: the kind of an NDK object, stamped in its header (spec §2.1).
    ///
    /// A provider never creates an object of type [`ObjectType::Undefined`].
    ///
    /// ```
    /// use netdirect_types::ObjectType;
    /// assert_eq!(ObjectType::Srq.as_u32(), 10);
    /// assert_eq!(ObjectType::from_u32(ObjectType::MAX), None);
    /// assert_eq!(ObjectType::Qp.to_string(), "NdkObjectTypeQp");
    /// ```
    pub enum ObjectType {
        /// Not a valid object type.
        Undefined = 0, "NdkObjectTypeUndefined";
        /// Adapter.
        Adapter = 1, "NdkObjectTypeAdapter";
        /// Queue pair.
        Qp = 2, "NdkObjectTypeQp";
        /// Completion queue.
        Cq = 3, "NdkObjectTypeCq";
        /// Memory region.
        Mr = 4, "NdkObjectTypeMr";
        /// Memory window.
        Mw = 5, "NdkObjectTypeMw";
        /// Protection domain.
        Pd = 6, "NdkObjectTypePd";
        /// Shared endpoint.
        SharedEndpoint = 7, "NdkObjectTypeSharedEndpoint";
        /// Connector.
        Connector = 8, "NdkObjectTypeConnector";
        /// Listener.
        Listener = 9, "NdkObjectTypeListener";
        /// Shared receive queue.
        Srq = 10, "NdkObjectTypeSrq";
    }
}

impl ObjectType {
    /// `NdkObjectTypeMax` (11): one past the last defined type; the reference says it may grow.
    #[doc(alias = "NdkObjectTypeMax")]
    pub const MAX: u32 = 11;
}

ndk_enum! {
    /// `NDK_OPERATION_TYPE`: the kind of request a [`Completion`](crate::Completion) reports
    /// (spec §5.2).
    ///
    /// [`OperationType::ReceiveAndInvalidate`] is 0x8001, so it has the receive bit (0x1) set:
    /// [`OperationType::is_receive`] is true for both receive kinds. (Some PDB dumps show
    /// 0xffff8001, a sign-extension artefact.)
    ///
    /// ```
    /// use netdirect_types::OperationType;
    /// assert!(OperationType::ReceiveAndInvalidate.is_receive());
    /// assert!(!OperationType::Send.is_receive());
    /// assert_eq!(OperationType::from_u32(0x8001), Some(OperationType::ReceiveAndInvalidate));
    /// ```
    pub enum OperationType {
        /// A receive.
        Receive = 0x0001, "NdkOperationTypeReceive";
        /// [1.2] A receive whose send also invalidated one of our tokens (spec §7.11).
        ReceiveAndInvalidate = 0x8001, "NdkOperationTypeReceiveAndInvalidate";
        /// A send; also used for send-and-invalidate on the sender.
        Send = 0x0002, "NdkOperationTypeSend";
        /// A fast-register work request.
        FastRegister = 0x0004, "NdkOperationTypeFastRegister";
        /// A memory-window bind.
        Bind = 0x0008, "NdkOperationTypeBind";
        /// An invalidate of an MR or MW.
        Invalidate = 0x0010, "NdkOperationTypeInvalidate";
        /// An RDMA read.
        Read = 0x0020, "NdkOperationTypeRead";
        /// An RDMA write.
        Write = 0x0040, "NdkOperationTypeWrite";
    }
}

impl OperationType {
    /// The receive bit (`Type & NdkOperationTypeReceive`) is set: true for `Receive` and
    /// `ReceiveAndInvalidate`.
    #[inline]
    pub const fn is_receive(self) -> bool {
        self as u32 & OperationType::Receive as u32 != 0
    }
}

ndk_enum! {
    /// `NDK_RDMA_TECHNOLOGY`: the transport an adapter uses (spec §5.1).
    ///
    /// ```
    /// use netdirect_types::RdmaTechnology;
    /// assert_eq!(RdmaTechnology::IWarp.as_u32(), 1);
    /// assert_eq!(RdmaTechnology::from_u32(RdmaTechnology::MAX), None);
    /// ```
    pub enum RdmaTechnology {
        /// Unspecified.
        Undefined = 0, "NdkUndefined";
        /// iWARP (what the software RNIC speaks).
        IWarp = 1, "NdkiWarp";
        /// InfiniBand.
        InfiniBand = 2, "NdkInfiniBand";
        /// RoCE (v1).
        RoCE = 3, "NdkRoCE";
        /// RoCE v2.
        RoCEv2 = 4, "NdkRoCEv2";
    }
}

impl RdmaTechnology {
    /// `NdkMaxTechnology` (5): one past the last defined technology.
    #[doc(alias = "NdkMaxTechnology")]
    pub const MAX: u32 = 5;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_receive_is_the_low_bit() {
        for op in OperationType::ALL {
            assert_eq!(op.is_receive(), op.as_u32() & 1 == 1, "{op}");
        }
        let receives: Vec<_> = OperationType::ALL
            .iter()
            .filter(|o| o.is_receive())
            .collect();
        assert_eq!(
            receives,
            [
                &OperationType::Receive,
                &OperationType::ReceiveAndInvalidate
            ]
        );
    }

    #[test]
    fn from_u32_round_trips_and_rejects_gaps() {
        for op in OperationType::ALL {
            assert_eq!(OperationType::from_u32(op.as_u32()), Some(*op));
        }
        for v in [0, 3, 0x80, 0x8000, 0xFFFF_8001] {
            assert_eq!(OperationType::from_u32(v), None, "{v:#x}");
        }
        for v in 0..ObjectType::MAX {
            assert_eq!(ObjectType::from_u32(v).map(u32::from), Some(v));
        }
        assert_eq!(ObjectType::ALL.len() as u32, ObjectType::MAX);
        assert_eq!(RdmaTechnology::ALL.len() as u32, RdmaTechnology::MAX);
    }
}

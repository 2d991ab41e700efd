//! The NDK (Network Direct Kernel, NDKPI) vocabulary: status codes, flags, enumerations, adapter
//! info, completions, SGEs and tokens.
//!
//! This is the lowest crate of netdirect. It does no I/O, has no `unsafe` and holds no state:
//! only the values the NDK defines, with their exact numbers, so that every crate above it
//! (the wire codec, the iWARP engine, the object model, the software RNIC, the tools) speaks the
//! same words. Section numbers (§) refer to the project's NDKPI digest, `docs/spec/ndkpi.md`.
//!
//! | NDK | here |
//! |---|---|
//! | `NTSTATUS`, `NDIS_STATUS` (§8) | [`Status`], [`Severity`], [`Result`] |
//! | `NDK_OP_FLAG_*` (§6.1) | [`OpFlags`] |
//! | `NDK_CQ_NOTIFY_*` (§6.2) | [`CqNotifyType`] |
//! | `NDK_MR_FLAG_*` (§6.3) | [`MrFlags`] |
//! | `NDK_ADAPTER_FLAG_*` (§5.1) | [`AdapterFlags`] |
//! | `NDK_RDMA_TECHNOLOGY` (§5.1) | [`RdmaTechnology`] |
//! | `NDK_OBJECT_TYPE` (§2.1) | [`ObjectType`] |
//! | `NDK_OPERATION_TYPE` (§5.2) | [`OperationType`] |
//! | `NDK_VERSION` (§1) | [`Version`] |
//! | `NDK_ADAPTER_INFO` (§5.1) | [`AdapterInfo`], [`FRMR_PAGE_COUNT_MIN`] |
//! | `NDIS_NDK_PERFORMANCE_COUNTERS` | [`counters::Counter`], [`counters::Counters`] |
//! | `NDK_RESULT_EX`, `NDK_RESULT` (§5.2) | [`Completion`], [`BasicCompletion`] |
//! | `NDK_SGE` (§5.3) | [`Sge`], [`LocalToken`], [`RemoteToken`] |
//! | `NDK_LOGICAL_ADDRESS(_MAPPING)` (§5.4) | [`LogicalAddress`], [`LogicalAddressMapping`] |
//! | `PAGE_SIZE`, `MAXULONG`, ephemeral ports (§6.4) | [`PAGE_SIZE`], [`MAXULONG`], [`EPHEMERAL_PORTS`] |
//!
//! Every item carries `#[doc(alias = "...")]` with its NDK spelling, so searching the docs for
//! `NDK_OP_FLAG_READ_FENCE` or `STATUS_CONNECTION_INVALID` finds it.
//!
//! # Decisions
//!
//! | question | decision |
//! |---|---|
//! | status constant names | Windows name without `STATUS_` (`Status::CONNECTION_INVALID`); NDIS codes as `Status::NDIS_BAD_VERSION`; NT spelling as doc alias, in [`Status::name`] and in `Display` |
//! | status names and values | one table, [`Status::TABLE`], generated with the constants |
//! | names shared by two codes | `NDIS_STATUS_SUCCESS` = `STATUS_SUCCESS`, `NDIS_STATUS_RESOURCES` = `STATUS_INSUFFICIENT_RESOURCES`: [`Status::name`] returns the `STATUS_` name |
//! | success test | `NT_SUCCESS`: `(value as i32) >= 0`; `PENDING` succeeds, `0x8xxxxxxx` warnings fail |
//! | `NDK_OP_FLAG_RDMA_READ_LOCAL_INVALIDATE` | 0x100 (header), not 0x200 (`NdkRead` page; §9.1) |
//! | `NDK_MR_FLAG_ALLOW_LOCAL_READ` (0) | an associated constant equal to `MrFlags::empty()`, not a flag |
//! | MR / op rights | remote write is bit 0x4 (MR) / 0x20 (op) and implies local write (§6.3 hint) |
//! | `INLINE` on writes | allowed ([`OpFlags::WRITE_VALID`]; §3.7) |
//! | `SIZE_T` fields and contexts | `u64`, independent of the host pointer width |
//! | token layout (§10 item 17) | opaque `u32` newtypes; layout left to the provider |
//! | `PAGE_SIZE` (§10 item 19) | 4096 |
#![forbid(unsafe_code)]

mod adapter;
mod completion;
pub mod counters;
mod enums;
mod flags;
mod memory;
mod status;
mod version;

pub use adapter::{AdapterInfo, FRMR_PAGE_COUNT_MIN};
pub use completion::{BasicCompletion, Completion};
pub use enums::{CqNotifyType, ObjectType, OperationType, RdmaTechnology};
pub use flags::{AdapterFlags, MrFlags, OpFlags};
pub use memory::{
    EPHEMERAL_PORTS, LocalToken, LogicalAddress, LogicalAddressMapping, MAXULONG, PAGE_SIZE,
    RemoteToken, Sge,
};
pub use status::{ParseStatusError, Result, Severity, Status};
pub use version::Version;

//! Pins every numeric value of the crate to the spec tables (`docs/spec/ndkpi.md`).
//!
//! The literal tables below were copied by hand from the spec; a typo in the crate (or here)
//! fails a test. `spec_file_agrees` additionally parses the spec itself when it is present.

use std::collections::{BTreeMap, BTreeSet};

use bitflags::Flags as _;

use netdirect_types::{
    AdapterFlags, CqNotifyType, MrFlags, ObjectType, OpFlags, OperationType, RdmaTechnology,
    Severity, Status,
};

/// ndkpi.md §8.1, §8.2, §8.3, in the spec's row order.
const STATUS_CODES: &[(&str, u32)] = &[
    // §8.1
    ("STATUS_SUCCESS", 0x00000000),
    ("STATUS_PENDING", 0x00000103),
    ("STATUS_BUFFER_OVERFLOW", 0x80000005),
    ("STATUS_ACCESS_VIOLATION", 0xC0000005),
    ("STATUS_INVALID_PARAMETER", 0xC000000D),
    ("STATUS_BUFFER_TOO_SMALL", 0xC0000023),
    ("STATUS_INVALID_PARAMETER_MIX", 0xC0000030),
    ("STATUS_SHARING_VIOLATION", 0xC0000043),
    ("STATUS_INSUFFICIENT_RESOURCES", 0xC000009A),
    ("STATUS_IO_TIMEOUT", 0xC00000B5),
    ("STATUS_NOT_SUPPORTED", 0xC00000BB),
    ("STATUS_INTERNAL_ERROR", 0xC00000E5),
    ("STATUS_CANCELLED", 0xC0000120),
    ("STATUS_REMOTE_RESOURCES", 0xC000013D),
    ("STATUS_INVALID_ADDRESS", 0xC0000141),
    ("STATUS_TOO_MANY_ADDRESSES", 0xC0000209),
    ("STATUS_ADDRESS_ALREADY_EXISTS", 0xC000020A),
    ("STATUS_CONNECTION_REFUSED", 0xC0000236),
    ("STATUS_CONNECTION_INVALID", 0xC000023A),
    ("STATUS_NETWORK_UNREACHABLE", 0xC000023C),
    ("STATUS_HOST_UNREACHABLE", 0xC000023D),
    ("STATUS_CONNECTION_ABORTED", 0xC0000241),
    ("STATUS_IMPLEMENTATION_LIMIT", 0xC000042B),
    ("NDIS_STATUS_SUCCESS", 0x00000000),
    ("NDIS_STATUS_BAD_VERSION", 0xC0010004),
    ("NDIS_STATUS_ADAPTER_NOT_READY", 0xC0010011),
    ("NDIS_STATUS_RESOURCES", 0xC000009A),
    // §8.2
    ("STATUS_ACCESS_DENIED", 0xC0000022),
    ("STATUS_DATA_ERROR", 0xC000003E),
    ("STATUS_REQUEST_NOT_ACCEPTED", 0xC00000D0),
    ("STATUS_INVALID_DEVICE_STATE", 0xC0000184),
    ("STATUS_INVALID_BUFFER_SIZE", 0xC0000206),
    ("STATUS_CONNECTION_DISCONNECTED", 0xC000020C),
    ("STATUS_CONNECTION_RESET", 0xC000020D),
    // §8.3
    ("STATUS_TIMEOUT", 0x00000102),
    ("STATUS_DEVICE_BUSY", 0x80000011),
    ("STATUS_NO_MORE_ENTRIES", 0x8000001A),
    ("STATUS_UNSUCCESSFUL", 0xC0000001),
    ("STATUS_INVALID_HANDLE", 0xC0000008),
    ("STATUS_INVALID_DEVICE_REQUEST", 0xC0000010),
    ("STATUS_NO_MEMORY", 0xC0000017),
    ("STATUS_DATA_OVERRUN", 0xC000003C),
    ("STATUS_DEVICE_NOT_READY", 0xC00000A3),
    ("STATUS_CONNECTION_ACTIVE", 0xC000023B),
    ("STATUS_DEVICE_REMOVED", 0xC00002B6),
    ("STATUS_LOCAL_DISCONNECT", 0xC000013B),
    ("STATUS_REMOTE_DISCONNECT", 0xC000013C),
    ("STATUS_INVALID_CONNECTION", 0xC0000140),
];

/// Codes the NetDMA interface returns that NDKPI §8 does not list (`docs/spec/netdma.md` §10
/// leaves them to the implementation; values from `ntstatus.h`). `netdma` uses this crate's
/// `Status`, so they live here too.
const NETDMA_CODES: &[(&str, u32)] = &[
    ("STATUS_REVISION_MISMATCH", 0xC0000059),
    ("STATUS_NOT_FOUND", 0xC0000225),
];

/// Codes a decision of the soft provider returns (its §10 table) that neither NDKPI §8 nor
/// NetDMA lists; values from `ntstatus.h`.
const PROVIDER_CODES: &[(&str, u32)] = &[("STATUS_POSSIBLE_DEADLOCK", 0xC0000194)];

/// NDIS names whose value also has a `STATUS_` name, which `name()` prefers.
const ALIASES: &[(&str, &str)] = &[
    ("NDIS_STATUS_SUCCESS", "STATUS_SUCCESS"),
    ("NDIS_STATUS_RESOURCES", "STATUS_INSUFFICIENT_RESOURCES"),
];

/// The Rust constants, by hand, against the spec names (catches a constant bound to the wrong
/// row of the table).
fn status_consts() -> Vec<(&'static str, Status)> {
    vec![
        ("STATUS_SUCCESS", Status::SUCCESS),
        ("STATUS_PENDING", Status::PENDING),
        ("STATUS_BUFFER_OVERFLOW", Status::BUFFER_OVERFLOW),
        ("STATUS_ACCESS_VIOLATION", Status::ACCESS_VIOLATION),
        ("STATUS_INVALID_PARAMETER", Status::INVALID_PARAMETER),
        ("STATUS_BUFFER_TOO_SMALL", Status::BUFFER_TOO_SMALL),
        (
            "STATUS_INVALID_PARAMETER_MIX",
            Status::INVALID_PARAMETER_MIX,
        ),
        ("STATUS_SHARING_VIOLATION", Status::SHARING_VIOLATION),
        (
            "STATUS_INSUFFICIENT_RESOURCES",
            Status::INSUFFICIENT_RESOURCES,
        ),
        ("STATUS_IO_TIMEOUT", Status::IO_TIMEOUT),
        ("STATUS_NOT_SUPPORTED", Status::NOT_SUPPORTED),
        ("STATUS_INTERNAL_ERROR", Status::INTERNAL_ERROR),
        ("STATUS_CANCELLED", Status::CANCELLED),
        ("STATUS_REMOTE_RESOURCES", Status::REMOTE_RESOURCES),
        ("STATUS_INVALID_ADDRESS", Status::INVALID_ADDRESS),
        ("STATUS_TOO_MANY_ADDRESSES", Status::TOO_MANY_ADDRESSES),
        (
            "STATUS_ADDRESS_ALREADY_EXISTS",
            Status::ADDRESS_ALREADY_EXISTS,
        ),
        ("STATUS_CONNECTION_REFUSED", Status::CONNECTION_REFUSED),
        ("STATUS_CONNECTION_INVALID", Status::CONNECTION_INVALID),
        ("STATUS_NETWORK_UNREACHABLE", Status::NETWORK_UNREACHABLE),
        ("STATUS_HOST_UNREACHABLE", Status::HOST_UNREACHABLE),
        ("STATUS_CONNECTION_ABORTED", Status::CONNECTION_ABORTED),
        ("STATUS_IMPLEMENTATION_LIMIT", Status::IMPLEMENTATION_LIMIT),
        ("NDIS_STATUS_SUCCESS", Status::NDIS_SUCCESS),
        ("NDIS_STATUS_BAD_VERSION", Status::NDIS_BAD_VERSION),
        (
            "NDIS_STATUS_ADAPTER_NOT_READY",
            Status::NDIS_ADAPTER_NOT_READY,
        ),
        ("NDIS_STATUS_RESOURCES", Status::NDIS_RESOURCES),
        ("STATUS_ACCESS_DENIED", Status::ACCESS_DENIED),
        ("STATUS_DATA_ERROR", Status::DATA_ERROR),
        ("STATUS_REQUEST_NOT_ACCEPTED", Status::REQUEST_NOT_ACCEPTED),
        ("STATUS_INVALID_DEVICE_STATE", Status::INVALID_DEVICE_STATE),
        ("STATUS_INVALID_BUFFER_SIZE", Status::INVALID_BUFFER_SIZE),
        (
            "STATUS_CONNECTION_DISCONNECTED",
            Status::CONNECTION_DISCONNECTED,
        ),
        ("STATUS_CONNECTION_RESET", Status::CONNECTION_RESET),
        ("STATUS_TIMEOUT", Status::TIMEOUT),
        ("STATUS_DEVICE_BUSY", Status::DEVICE_BUSY),
        ("STATUS_NO_MORE_ENTRIES", Status::NO_MORE_ENTRIES),
        ("STATUS_UNSUCCESSFUL", Status::UNSUCCESSFUL),
        ("STATUS_INVALID_HANDLE", Status::INVALID_HANDLE),
        (
            "STATUS_INVALID_DEVICE_REQUEST",
            Status::INVALID_DEVICE_REQUEST,
        ),
        ("STATUS_NO_MEMORY", Status::NO_MEMORY),
        ("STATUS_DATA_OVERRUN", Status::DATA_OVERRUN),
        ("STATUS_DEVICE_NOT_READY", Status::DEVICE_NOT_READY),
        ("STATUS_CONNECTION_ACTIVE", Status::CONNECTION_ACTIVE),
        ("STATUS_DEVICE_REMOVED", Status::DEVICE_REMOVED),
        ("STATUS_LOCAL_DISCONNECT", Status::LOCAL_DISCONNECT),
        ("STATUS_REMOTE_DISCONNECT", Status::REMOTE_DISCONNECT),
        ("STATUS_INVALID_CONNECTION", Status::INVALID_CONNECTION),
    ]
}

fn canonical_name(name: &'static str) -> &'static str {
    ALIASES
        .iter()
        .find(|(a, _)| *a == name)
        .map_or(name, |(_, c)| c)
}

#[test]
fn every_status_code_matches_the_spec() {
    for &(name, value) in STATUS_CODES {
        let s = Status(value);
        assert_eq!(Status::from_name(name), Some(s), "from_name({name})");
        let canonical = canonical_name(name);
        assert_eq!(s.name(), Some(canonical), "{value:#010X}.name()");
        assert_eq!(s.to_string(), format!("{canonical} (0x{value:08X})"));
        assert_eq!(s.to_string().parse::<Status>(), Ok(s));
        assert_eq!(name.parse::<Status>(), Ok(s));
    }
}

#[test]
fn status_table_is_exactly_the_spec() {
    let spec: BTreeSet<(&str, u32)> = STATUS_CODES
        .iter()
        .chain(NETDMA_CODES)
        .chain(PROVIDER_CODES)
        .copied()
        .collect();
    let crate_table: BTreeSet<(&str, u32)> = Status::TABLE.iter().map(|(s, n)| (*n, s.0)).collect();
    assert_eq!(
        spec.len(),
        STATUS_CODES.len() + NETDMA_CODES.len() + PROVIDER_CODES.len(),
        "duplicate row in the test table"
    );
    assert_eq!(
        crate_table.len(),
        Status::TABLE.len(),
        "duplicate row in Status::TABLE"
    );
    assert_eq!(crate_table, spec);
}

#[test]
fn status_constants_match_the_spec() {
    let consts = status_consts();
    assert_eq!(consts.len(), STATUS_CODES.len());
    let spec: BTreeMap<&str, u32> = STATUS_CODES.iter().copied().collect();
    for (name, s) in consts {
        assert_eq!(Some(&s.0), spec.get(name), "{name}");
    }
}

#[test]
fn nt_success_classification() {
    // PENDING and TIMEOUT are success codes.
    for s in [Status::SUCCESS, Status::PENDING, Status::TIMEOUT] {
        assert!(s.is_success() && !s.is_error() && !s.is_warning(), "{s}");
        assert_eq!(s.severity(), Severity::Success);
    }
    assert!(Status::PENDING.is_pending());
    assert!(!Status::SUCCESS.is_pending() && !Status::TIMEOUT.is_pending());

    // 0x8xxxxxxx warnings are failures, but not errors.
    for s in [
        Status::BUFFER_OVERFLOW,
        Status::DEVICE_BUSY,
        Status::NO_MORE_ENTRIES,
    ] {
        assert!(!s.is_success() && s.is_warning() && !s.is_error(), "{s}");
        assert_eq!(s.severity(), Severity::Warning);
        assert_eq!(s.into_result(), Err(s));
    }

    for &(_, v) in STATUS_CODES {
        let s = Status(v);
        assert_eq!(s.is_success(), (v as i32) >= 0, "{s}");
        assert_eq!(s.is_error(), v >= 0xC000_0000, "{s}");
    }

    // Informational is success.
    let info = Status(0x4000_0000);
    assert!(info.is_success() && info.is_informational());
    assert_eq!(info.severity(), Severity::Informational);

    // Boundaries of NT_SUCCESS.
    assert!(Status(0x7FFF_FFFF).is_success());
    assert!(!Status(0x8000_0000).is_success());
    assert_eq!(Status(0xFFFF_FFFF).severity(), Severity::Error);
}

#[test]
fn unknown_values_round_trip() {
    for v in [
        0x1234_5678u32,
        0x0000_0001,
        0xC000_FFFF,
        0x8000_0000,
        0xFFFF_FFFF,
    ] {
        let s = Status::from(v);
        assert_eq!(u32::from(s), v);
        assert_eq!(s.name(), None);
        let shown = s.to_string();
        assert_eq!(shown, format!("NTSTATUS 0x{v:08X}"));
        assert_eq!(shown.parse::<Status>(), Ok(s));
        assert_eq!(Status::from_name(&shown), None);
    }
    assert_eq!(Status::from_name("STATUS_NOT_A_CODE"), None);
    assert_eq!(Status::from_name("status_pending"), None);
}

#[test]
fn status_is_an_error_type() {
    fn takes_error(_: &dyn std::error::Error) {}
    takes_error(&Status::CANCELLED);
    let boxed: Box<dyn std::error::Error> = Box::new(Status::CANCELLED);
    assert_eq!(boxed.to_string(), "STATUS_CANCELLED (0xC0000120)");
}

/// §6.1, by hand.
const OP_FLAGS: &[(&str, u32)] = &[
    ("NDK_OP_FLAG_SILENT_SUCCESS", 0x00000001),
    ("NDK_OP_FLAG_READ_FENCE", 0x00000002),
    ("NDK_OP_FLAG_SEND_AND_SOLICIT_EVENT", 0x00000004),
    ("NDK_OP_FLAG_ALLOW_REMOTE_READ", 0x00000008),
    ("NDK_OP_FLAG_ALLOW_LOCAL_WRITE", 0x00000010),
    ("NDK_OP_FLAG_ALLOW_REMOTE_WRITE", 0x00000030),
    ("NDK_OP_FLAG_INLINE", 0x00000040),
    ("NDK_OP_FLAG_RDMA_READ_SINK", 0x00000080),
    ("NDK_OP_FLAG_RDMA_READ_LOCAL_INVALIDATE", 0x00000100),
    ("NDK_OP_FLAG_DEFER", 0x00000200),
];

/// §6.3, by hand.
const MR_FLAGS: &[(&str, u32)] = &[
    ("NDK_MR_FLAG_ALLOW_LOCAL_READ", 0x00000000),
    ("NDK_MR_FLAG_ALLOW_LOCAL_WRITE", 0x00000001),
    ("NDK_MR_FLAG_ALLOW_REMOTE_READ", 0x00000002),
    ("NDK_MR_FLAG_ALLOW_REMOTE_WRITE", 0x00000005),
    ("NDK_MR_FLAG_RDMA_READ_SINK", 0x00000008),
];

/// §5.1, by hand.
const ADAPTER_FLAGS: &[(&str, u32)] = &[
    ("NDK_ADAPTER_FLAG_IN_ORDER_DMA_SUPPORTED", 0x00000001),
    ("NDK_ADAPTER_FLAG_RDMA_READ_SINK_NOT_REQUIRED", 0x00000002),
    (
        "NDK_ADAPTER_FLAG_CQ_INTERRUPT_MODERATION_SUPPORTED",
        0x00000004,
    ),
    ("NDK_ADAPTER_FLAG_MULTI_ENGINE_SUPPORTED", 0x00000008),
    (
        "NDK_ADAPTER_FLAG_RDMA_READ_LOCAL_INVALIDATE_SUPPORTED",
        0x00000010,
    ),
    ("NDK_ADAPTER_FLAG_CQ_RESIZE_SUPPORTED", 0x00000100),
    (
        "NDK_ADAPTER_FLAG_LOOPBACK_CONNECTIONS_SUPPORTED",
        0x00010000,
    ),
];

/// The crate's value for an NDK flag name, or `None` if the crate has no such flag.
fn crate_flag(ndk_name: &str) -> Option<u32> {
    if let Some(rest) = ndk_name.strip_prefix("NDK_OP_FLAG_") {
        OpFlags::from_name(rest).map(|f| f.bits())
    } else if ndk_name == "NDK_MR_FLAG_ALLOW_LOCAL_READ" {
        // Zero-valued: an associated constant, not a named flag.
        Some(MrFlags::ALLOW_LOCAL_READ.bits())
    } else if let Some(rest) = ndk_name.strip_prefix("NDK_MR_FLAG_") {
        MrFlags::from_name(rest).map(|f| f.bits())
    } else if let Some(rest) = ndk_name.strip_prefix("NDK_ADAPTER_FLAG_") {
        AdapterFlags::from_name(rest).map(|f| f.bits())
    } else {
        None
    }
}

#[test]
fn every_flag_matches_the_spec() {
    for &(name, value) in OP_FLAGS.iter().chain(MR_FLAGS).chain(ADAPTER_FLAGS) {
        assert_eq!(crate_flag(name), Some(value), "{name}");
    }
    // No extra flags in the crate: the named flags are exactly the spec rows.
    let n = |t: &[(&str, u32)], p: &str| {
        t.iter()
            .filter(|(name, v)| name.starts_with(p) && *v != 0)
            .count()
    };
    assert_eq!(OpFlags::FLAGS.len(), n(OP_FLAGS, "NDK_OP_FLAG_"));
    assert_eq!(MrFlags::FLAGS.len(), n(MR_FLAGS, "NDK_MR_FLAG_"));
    assert_eq!(
        AdapterFlags::FLAGS.len(),
        n(ADAPTER_FLAGS, "NDK_ADAPTER_FLAG_")
    );
}

#[test]
fn flag_constants_match_the_spec() {
    // Spelled out so a flag bound to the wrong name is caught too.
    let op = [
        (OpFlags::SILENT_SUCCESS, 0x1),
        (OpFlags::READ_FENCE, 0x2),
        (OpFlags::SEND_AND_SOLICIT_EVENT, 0x4),
        (OpFlags::ALLOW_REMOTE_READ, 0x8),
        (OpFlags::ALLOW_LOCAL_WRITE, 0x10),
        (OpFlags::ALLOW_REMOTE_WRITE, 0x30),
        (OpFlags::INLINE, 0x40),
        (OpFlags::RDMA_READ_SINK, 0x80),
        (OpFlags::RDMA_READ_LOCAL_INVALIDATE, 0x100),
        (OpFlags::DEFER, 0x200),
    ];
    for (f, v) in op {
        assert_eq!(f.bits(), v, "{f:?}");
    }
    let mr = [
        (MrFlags::ALLOW_LOCAL_READ, 0x0),
        (MrFlags::ALLOW_LOCAL_WRITE, 0x1),
        (MrFlags::ALLOW_REMOTE_READ, 0x2),
        (MrFlags::ALLOW_REMOTE_WRITE, 0x5),
        (MrFlags::RDMA_READ_SINK, 0x8),
    ];
    for (f, v) in mr {
        assert_eq!(f.bits(), v, "{f:?}");
    }
    let ad = [
        (AdapterFlags::IN_ORDER_DMA_SUPPORTED, 0x1),
        (AdapterFlags::RDMA_READ_SINK_NOT_REQUIRED, 0x2),
        (AdapterFlags::CQ_INTERRUPT_MODERATION_SUPPORTED, 0x4),
        (AdapterFlags::MULTI_ENGINE_SUPPORTED, 0x8),
        (AdapterFlags::RDMA_READ_LOCAL_INVALIDATE_SUPPORTED, 0x10),
        (AdapterFlags::CQ_RESIZE_SUPPORTED, 0x100),
        (AdapterFlags::LOOPBACK_CONNECTIONS_SUPPORTED, 0x10000),
    ];
    for (f, v) in ad {
        assert_eq!(f.bits(), v, "{f:?}");
    }
}

/// Checks an enum against a hand table: names, values, and no extra variants.
fn check_enum<T: Copy + PartialEq + std::fmt::Debug>(
    table: &[(&str, u32)],
    all: &[T],
    from_u32: fn(u32) -> Option<T>,
    as_u32: fn(T) -> u32,
    ndk_name: fn(T) -> &'static str,
) {
    assert_eq!(all.len(), table.len());
    for &(name, value) in table {
        let v = from_u32(value).unwrap_or_else(|| panic!("{name} = {value:#x} missing"));
        assert_eq!(ndk_name(v), name);
        assert_eq!(as_u32(v), value);
    }
}

#[test]
fn every_enum_value_matches_the_spec() {
    check_enum(
        &[
            ("NDK_CQ_NOTIFY_ERRORS", 0),
            ("NDK_CQ_NOTIFY_ANY", 1),
            ("NDK_CQ_NOTIFY_SOLICITED", 2),
        ],
        CqNotifyType::ALL,
        CqNotifyType::from_u32,
        CqNotifyType::as_u32,
        CqNotifyType::ndk_name,
    );
    assert_eq!(CqNotifyType::Errors as u32, 0);
    assert_eq!(CqNotifyType::Any as u32, 1);
    assert_eq!(CqNotifyType::Solicited as u32, 2);

    check_enum(
        &[
            ("NdkObjectTypeUndefined", 0),
            ("NdkObjectTypeAdapter", 1),
            ("NdkObjectTypeQp", 2),
            ("NdkObjectTypeCq", 3),
            ("NdkObjectTypeMr", 4),
            ("NdkObjectTypeMw", 5),
            ("NdkObjectTypePd", 6),
            ("NdkObjectTypeSharedEndpoint", 7),
            ("NdkObjectTypeConnector", 8),
            ("NdkObjectTypeListener", 9),
            ("NdkObjectTypeSrq", 10),
        ],
        ObjectType::ALL,
        ObjectType::from_u32,
        ObjectType::as_u32,
        ObjectType::ndk_name,
    );
    assert_eq!(ObjectType::MAX, 11);
    assert_eq!(ObjectType::Qp as u32, 2);
    assert_eq!(ObjectType::Srq as u32, 10);
    assert_eq!(ObjectType::SharedEndpoint as u32, 7);

    check_enum(
        &[
            ("NdkOperationTypeReceive", 1),
            ("NdkOperationTypeReceiveAndInvalidate", 32769),
            ("NdkOperationTypeSend", 2),
            ("NdkOperationTypeFastRegister", 4),
            ("NdkOperationTypeBind", 8),
            ("NdkOperationTypeInvalidate", 16),
            ("NdkOperationTypeRead", 32),
            ("NdkOperationTypeWrite", 64),
        ],
        OperationType::ALL,
        OperationType::from_u32,
        OperationType::as_u32,
        OperationType::ndk_name,
    );
    assert_eq!(OperationType::ReceiveAndInvalidate as u32, 0x8001);
    assert_eq!(OperationType::Read as u32, 0x20);
    assert_eq!(OperationType::Write as u32, 0x40);

    check_enum(
        &[
            ("NdkUndefined", 0),
            ("NdkiWarp", 1),
            ("NdkInfiniBand", 2),
            ("NdkRoCE", 3),
            ("NdkRoCEv2", 4),
        ],
        RdmaTechnology::ALL,
        RdmaTechnology::from_u32,
        RdmaTechnology::as_u32,
        RdmaTechnology::ndk_name,
    );
    assert_eq!(RdmaTechnology::MAX, 5);
    assert_eq!(RdmaTechnology::IWarp as u32, 1);
    assert_eq!(RdmaTechnology::RoCEv2 as u32, 4);
}

#[test]
fn frmr_minimum_and_page_size() {
    assert_eq!(netdirect_types::FRMR_PAGE_COUNT_MIN, 16);
    assert_eq!(netdirect_types::PAGE_SIZE, 4096);
}

// ---------------------------------------------------------------------------------------------
// The spec file itself.

const SPEC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/spec/ndkpi.md");

/// `| NAME | 0x... |` rows: the first two cells of a table row, when the second is hex.
fn hex_rows(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter_map(|line| {
            let mut cells = line.trim().strip_prefix('|')?.split('|').map(str::trim);
            let name = cells.next()?;
            let value = cells.next()?.strip_prefix("0x")?;
            let value = u32::from_str_radix(value, 16).ok()?;
            Some((name.trim_matches('`').to_string(), value))
        })
        .collect()
}

/// The text from the heading starting with `start` up to the next heading at that level.
fn section<'a>(text: &'a str, start: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("spec lacks {start:?}"));
    let level = start.split(' ').next().unwrap();
    let rest = &text[from + start.len()..];
    let end = rest
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| {
            let line = &rest[i..];
            line.starts_with('#')
                && line
                    .split(' ')
                    .next()
                    .is_some_and(|h| h.len() <= level.len())
        })
        .unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn spec_file_agrees() {
    let Ok(text) = std::fs::read_to_string(SPEC_PATH) else {
        println!("note: {SPEC_PATH} not found; skipping the spec-file cross-check");
        return;
    };

    // §8: every status row.
    let status_rows: Vec<_> = hex_rows(section(&text, "## 8. Status codes"))
        .into_iter()
        .filter(|(n, _)| n.starts_with("STATUS_") || n.starts_with("NDIS_STATUS_"))
        .collect();
    assert!(
        status_rows.len() >= 40,
        "parsed only {} status rows",
        status_rows.len()
    );
    for (name, value) in &status_rows {
        assert_eq!(Status::from_name(name), Some(Status(*value)), "{name}");
        assert_eq!(
            Status(*value).name(),
            Some(canonical_name_owned(name)),
            "{name}"
        );
    }
    // And the crate has nothing the spec lacks.
    let spec_names: BTreeSet<&str> = status_rows.iter().map(|(n, _)| n.as_str()).collect();
    for (_, name) in Status::TABLE {
        let netdma = NETDMA_CODES.iter().any(|(n, _)| n == name);
        let provider = PROVIDER_CODES.iter().any(|(n, _)| n == name);
        assert!(
            spec_names.contains(name) || netdma || provider,
            "{name} is not in §8"
        );
    }
    // The hand table agrees with the file too.
    let file: BTreeSet<(&str, u32)> = status_rows.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let hand: BTreeSet<(&str, u32)> = STATUS_CODES.iter().copied().collect();
    assert_eq!(file, hand);

    // Flags: every NDK_*_FLAG_* row anywhere in the file.
    let flag_rows: Vec<_> = hex_rows(&text)
        .into_iter()
        .filter(|(n, _)| {
            n.starts_with("NDK_OP_FLAG_")
                || n.starts_with("NDK_MR_FLAG_")
                || n.starts_with("NDK_ADAPTER_FLAG_")
        })
        .collect();
    let expected = OP_FLAGS.len() + MR_FLAGS.len() + ADAPTER_FLAGS.len();
    assert_eq!(flag_rows.len(), expected, "flag rows parsed: {flag_rows:?}");
    for (name, value) in &flag_rows {
        assert_eq!(crate_flag(name), Some(*value), "{name}");
    }

    // §2.1 object types: `| NdkObjectTypeX | n |` rows.
    let objects = section(&text, "### 2.1");
    for line in objects.lines() {
        let cells: Vec<_> = line.split('|').map(str::trim).collect();
        if cells.len() >= 3 && cells[1].starts_with("NdkObjectType") {
            let value: u32 = cells[2].split(' ').next().unwrap().parse().unwrap();
            if cells[1] == "NdkObjectTypeMax" {
                assert_eq!(ObjectType::MAX, value);
            } else {
                assert_eq!(
                    ObjectType::from_u32(value).map(ObjectType::ndk_name),
                    Some(cells[1])
                );
            }
        }
    }

    // §5.2 operation types: `| NdkOperationTypeX | n ... |` rows.
    let mut ops = 0;
    for line in section(&text, "### 5.2").lines() {
        let cells: Vec<_> = line.split('|').map(str::trim).collect();
        if cells.len() >= 3 && cells[1].starts_with("NdkOperationType") {
            let value: u32 = cells[2].split(' ').next().unwrap().parse().unwrap();
            assert_eq!(
                OperationType::from_u32(value).map(OperationType::ndk_name),
                Some(cells[1]),
                "{line}"
            );
            ops += 1;
        }
    }
    assert_eq!(ops, OperationType::ALL.len());
}

fn canonical_name_owned(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(a, _)| *a == name)
        .map_or(name, |(_, c)| c)
}

//! The memory table's rules: registration, fast registration (every §7.9 rule), windows, LAMs,
//! the privileged token, local and remote checks, and leases.

use netdirect::Buffer;
use netdirect_proto::stream::{Access, TaggedError};
use netdirect_soft::memory::{
    LocalAccess, MAX_LAM_PAGES, MemoryConfig, MemoryTable, MrId, MwId, PdId,
};
use netdirect_types::{
    AdapterFlags, LocalToken, LogicalAddress, MrFlags, OpFlags, PAGE_SIZE, RemoteToken, Sge, Status,
};
use proptest::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const PAGE: u64 = PAGE_SIZE as u64;

fn table() -> MemoryTable {
    MemoryTable::new(MemoryConfig::default())
}

fn sink_free_table() -> MemoryTable {
    MemoryTable::new(MemoryConfig::for_adapter(
        256,
        AdapterFlags::RDMA_READ_SINK_NOT_REQUIRED,
    ))
}

/// A regular MR over all of `buf`.
fn regular(t: &MemoryTable, pd: PdId, buf: &Buffer, flags: MrFlags) -> (MrId, u32) {
    let mr = t.create_mr(pd, false).unwrap();
    t.register_mr(mr, buf, 0, buf.len(), flags).unwrap();
    (mr, t.local_token(mr).unwrap().0)
}

/// A fast-register MR initialized for `pages` pages.
fn frmr(t: &MemoryTable, pd: PdId, pages: u32, remote: bool) -> MrId {
    let mr = t.create_mr(pd, true).unwrap();
    t.initialize_fast_register(mr, pages, remote).unwrap();
    mr
}

fn pages_of(t: &MemoryTable, buf: &Buffer) -> (netdirect::Lam, Vec<LogicalAddress>) {
    let lam = t.build_lam(buf, 0, buf.len()).unwrap();
    let pages = lam.mapping.adapter_page_array.clone();
    (lam, pages)
}

const RW: OpFlags = OpFlags::ALLOW_REMOTE_WRITE.union(OpFlags::ALLOW_REMOTE_READ);

fn sge(address: u64, length: u32, token: u32) -> Sge {
    Sge::new(address, length, LocalToken(token))
}

// ---- regular regions ---------------------------------------------------------------------

#[test]
fn regular_mr_tokens_rights_and_base() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(2 * PAGE_SIZE);
    let mr = t.create_mr(pd, false).unwrap();
    t.register_mr(mr, &buf, 100, 1000, MrFlags::ALLOW_REMOTE_READ)
        .unwrap();
    let local = t.local_token(mr).unwrap();
    let remote = t.remote_token(mr).unwrap();
    assert_eq!(local.0, remote.0, "local and remote token are one value");
    assert!(local.0 >> 8 != 0, "index 0 is never used");
    let base = buf.address() + 100;
    // Read: always; write: not granted.
    assert!(
        t.check_local(pd, &sge(base, 1000, local.0), LocalAccess::Read)
            .is_ok()
    );
    assert_eq!(
        t.check_local(pd, &sge(base, 10, local.0), LocalAccess::Write)
            .unwrap_err(),
        Status::ACCESS_VIOLATION
    );
    assert!(
        t.check_remote(pd, remote.0, base, 1000, Access::RemoteRead)
            .is_ok()
    );
    assert_eq!(
        t.check_remote(pd, remote.0, base, 1, Access::RemoteWrite)
            .unwrap_err(),
        TaggedError::AccessRights
    );
    // Base is address + offset: one byte before it is out.
    assert_eq!(
        t.check_remote(pd, remote.0, base - 1, 1, Access::RemoteRead)
            .unwrap_err(),
        TaggedError::BaseBounds
    );
    assert_eq!(
        t.check_local(pd, &sge(base + 1, 1000, local.0), LocalAccess::Read)
            .unwrap_err(),
        Status::ACCESS_VIOLATION
    );
}

#[test]
fn register_parameters_and_states() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(100);
    let mr = t.create_mr(pd, false).unwrap();
    let bad = |off, len, flags| t.register_mr(mr, &buf, off, len, flags).unwrap_err();
    assert_eq!(bad(0, 0, MrFlags::empty()), Status::INVALID_PARAMETER);
    assert_eq!(bad(1, 100, MrFlags::empty()), Status::INVALID_PARAMETER);
    assert_eq!(
        bad(usize::MAX, 2, MrFlags::empty()),
        Status::INVALID_PARAMETER
    );
    assert_eq!(
        bad(0, 10, MrFlags::from_bits_retain(0x100)),
        Status::INVALID_PARAMETER
    );
    t.register_mr(mr, &buf, 0, 100, MrFlags::empty()).unwrap();
    assert_eq!(bad(0, 10, MrFlags::empty()), Status::INVALID_DEVICE_REQUEST);
    // Regular MRs are not invalidated and not fast-registered or initialized.
    assert_eq!(
        t.invalidate(mr).unwrap_err(),
        Status::INVALID_DEVICE_REQUEST
    );
    assert_eq!(
        t.initialize_fast_register(mr, 1, false).unwrap_err(),
        Status::INVALID_DEVICE_REQUEST
    );
    let (_lam, pages) = pages_of(&t, &buf);
    assert_eq!(
        t.fast_register(mr, &pages, 0, 10, 0, OpFlags::empty())
            .unwrap_err(),
        Status::INVALID_DEVICE_REQUEST
    );
    t.deregister_mr(mr).unwrap();
    assert_eq!(
        t.deregister_mr(mr).unwrap_err(),
        Status::INVALID_DEVICE_REQUEST
    );
    // A fast-register MR cannot be registered or deregistered.
    let fr = frmr(&t, pd, 1, false);
    assert_eq!(
        t.register_mr(fr, &buf, 0, 10, MrFlags::empty())
            .unwrap_err(),
        Status::INVALID_DEVICE_REQUEST
    );
    assert_eq!(
        t.deregister_mr(fr).unwrap_err(),
        Status::INVALID_DEVICE_REQUEST
    );
}

#[test]
fn reregistration_rotates_the_token() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(64);
    let (mr, old) = regular(&t, pd, &buf, MrFlags::ALLOW_REMOTE_WRITE);
    t.deregister_mr(mr).unwrap();
    assert_eq!(
        t.check_remote(pd, old, buf.address(), 1, Access::RemoteWrite)
            .unwrap_err(),
        TaggedError::InvalidStag
    );
    t.register_mr(mr, &buf, 0, 64, MrFlags::ALLOW_REMOTE_WRITE)
        .unwrap();
    let new = t.remote_token(mr).unwrap().0;
    assert_ne!(new, old);
    assert_eq!(new >> 8, old >> 8, "same slot, new key");
    assert!(
        t.check_remote(pd, new, buf.address(), 1, Access::RemoteWrite)
            .is_ok()
    );
    assert_eq!(
        t.check_remote(pd, old, buf.address(), 1, Access::RemoteWrite)
            .unwrap_err(),
        TaggedError::InvalidStag
    );
}

#[test]
fn local_write_and_read_sink_rights() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(64);
    let a = buf.address();
    let (_, ro) = regular(&t, pd, &buf, MrFlags::empty());
    let (_, lw) = regular(&t, pd, &buf, MrFlags::ALLOW_LOCAL_WRITE);
    let (_, sink) = regular(
        &t,
        pd,
        &buf,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
    );
    let (_, rw) = regular(&t, pd, &buf, MrFlags::ALLOW_REMOTE_WRITE);
    let check = |tok, acc| t.check_local(pd, &sge(a, 8, tok), acc).map(|_| ());
    let av = Err(Status::ACCESS_VIOLATION);
    assert_eq!(check(ro, LocalAccess::Read), Ok(()));
    assert_eq!(check(ro, LocalAccess::Write), av);
    assert_eq!(check(ro, LocalAccess::ReadSink), av);
    assert_eq!(check(lw, LocalAccess::Write), Ok(()));
    assert_eq!(check(lw, LocalAccess::ReadSink), av, "sink right required");
    assert_eq!(check(sink, LocalAccess::ReadSink), Ok(()));
    assert_eq!(
        check(rw, LocalAccess::Write),
        Ok(()),
        "remote write implies local"
    );
    // The engine's view of a sink (inbound Read Response) agrees.
    assert_eq!(
        t.check_remote(pd, lw, a, 8, Access::ReadSink).unwrap_err(),
        TaggedError::AccessRights
    );
    assert!(t.check_remote(pd, sink, a, 8, Access::ReadSink).is_ok());
    // A sink-only region without local write is no sink.
    let (_, sink_only) = regular(&t, pd, &buf, MrFlags::RDMA_READ_SINK);
    assert_eq!(check(sink_only, LocalAccess::ReadSink), av);

    // With RDMA_READ_SINK_NOT_REQUIRED, local write is enough.
    let t = sink_free_table();
    let pd = t.create_pd().unwrap();
    let (_, lw) = regular(&t, pd, &buf, MrFlags::ALLOW_LOCAL_WRITE);
    let (_, ro) = regular(&t, pd, &buf, MrFlags::RDMA_READ_SINK);
    assert!(
        t.check_local(pd, &sge(a, 8, lw), LocalAccess::ReadSink)
            .is_ok()
    );
    assert!(t.check_remote(pd, lw, a, 8, Access::ReadSink).is_ok());
    assert_eq!(
        t.check_local(pd, &sge(a, 8, ro), LocalAccess::ReadSink)
            .unwrap_err(),
        Status::ACCESS_VIOLATION
    );
}

#[test]
fn unknown_and_stale_tokens() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(64);
    let (mr, tok) = regular(&t, pd, &buf, MrFlags::ALLOW_REMOTE_READ);
    for bogus in [0, 1, 0xFF, tok ^ 1, tok + 0x100, u32::MAX] {
        assert_eq!(
            t.check_local(pd, &sge(buf.address(), 1, bogus), LocalAccess::Read)
                .unwrap_err(),
            Status::ACCESS_VIOLATION,
            "{bogus:#x}"
        );
        assert_eq!(
            t.check_remote(pd, bogus, buf.address(), 1, Access::RemoteRead)
                .unwrap_err(),
            TaggedError::InvalidStag,
            "{bogus:#x}"
        );
    }
    t.close_mr(mr, || {}).unwrap();
    assert_eq!(
        t.check_remote(pd, tok, buf.address(), 1, Access::RemoteRead)
            .unwrap_err(),
        TaggedError::InvalidStag
    );
    assert_eq!(t.local_token(mr).unwrap_err(), Status::INVALID_HANDLE);
    assert_eq!(t.close_mr(mr, || {}).unwrap_err(), Status::INVALID_HANDLE);
    // The slot is reused by the next MR with another key.
    let (_, tok2) = regular(&t, pd, &buf, MrFlags::ALLOW_REMOTE_READ);
    assert_eq!(tok2 >> 8, tok >> 8);
    assert_ne!(tok2, tok);
}

#[test]
fn pd_mismatch_is_not_associated() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let other = t.create_pd().unwrap();
    let buf = Buffer::new(64);
    let a = buf.address();
    let (_, tok) = regular(&t, pd, &buf, MrFlags::ALLOW_REMOTE_WRITE);
    assert_eq!(
        t.check_local(other, &sge(a, 1, tok), LocalAccess::Read)
            .unwrap_err(),
        Status::ACCESS_VIOLATION
    );
    assert_eq!(
        t.check_remote(other, tok, a, 1, Access::RemoteWrite)
            .unwrap_err(),
        TaggedError::NotAssociated
    );
    // PD is checked before rights and bounds.
    assert_eq!(
        t.check_remote(other, tok, 0, 1, Access::RemoteRead)
            .unwrap_err(),
        TaggedError::NotAssociated
    );
    let fr = frmr(&t, pd, 1, true);
    let (_lam, pages) = pages_of(&t, &buf);
    let frt = t.fast_register(fr, &pages, 0, 64, 0, RW).unwrap();
    assert_eq!(
        t.invalidate_remote(other, frt.0).unwrap_err(),
        TaggedError::NotAssociated
    );
    assert!(t.check_remote(pd, frt.0, 0, 64, Access::RemoteRead).is_ok());
    // Windows: bound in one PD, used from another.
    let (mr, _) = regular(&t, pd, &buf, MrFlags::ALLOW_LOCAL_WRITE);
    let mw = t.create_mw(pd).unwrap();
    let wt = t.bind(mw, mr, a, 8, RW).unwrap();
    assert_eq!(
        t.check_remote(other, wt.0, a, 1, Access::RemoteRead)
            .unwrap_err(),
        TaggedError::NotAssociated
    );
    // A window of another PD cannot be bound to the MR.
    let mw2 = t.create_mw(other).unwrap();
    assert_eq!(
        t.bind(mw2, mr, a, 8, RW).unwrap_err(),
        Status::INVALID_PARAMETER
    );
}

#[test]
fn check_order_rights_then_wrap_then_bounds() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(64);
    let (_, tok) = regular(&t, pd, &buf, MrFlags::ALLOW_REMOTE_READ);
    assert_eq!(
        t.check_remote(pd, tok, u64::MAX, 2, Access::RemoteWrite)
            .unwrap_err(),
        TaggedError::AccessRights
    );
    assert_eq!(
        t.check_remote(pd, tok, u64::MAX, 2, Access::RemoteRead)
            .unwrap_err(),
        TaggedError::ToWrap
    );
    assert_eq!(
        t.check_remote(pd, tok, 0, 2, Access::RemoteRead)
            .unwrap_err(),
        TaggedError::BaseBounds
    );
}

#[test]
fn bounds_and_overflow_near_u64_max() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(2 * PAGE_SIZE);
    let (_lam, pages) = pages_of(&t, &buf);
    let mr = frmr(&t, pd, 2, true);
    // The highest region that fits: its end, base + length, is u64::MAX.
    let base = u64::MAX - 2 * PAGE + 1;
    assert_eq!(
        t.fast_register(mr, &pages, 0, 2 * PAGE, base, RW)
            .unwrap_err(),
        Status::INVALID_PARAMETER,
        "base {base:#x} is not n·PAGE_SIZE"
    );
    let base = !(PAGE - 1) - 2 * PAGE; // page-aligned
    let last = base + 2 * PAGE - 1;
    let tok = t
        .fast_register(mr, &pages, 0, 2 * PAGE, base, RW)
        .unwrap()
        .0;
    let check = |to, len| {
        t.check_remote(pd, tok, to, len, Access::RemoteWrite)
            .map(|_| ())
    };
    assert_eq!(check(base, 2 * PAGE), Ok(()));
    assert_eq!(check(last, 1), Ok(()));
    assert_eq!(check(last, 2), Err(TaggedError::BaseBounds));
    assert_eq!(check(last + 1, 0), Ok(()), "zero length at the end");
    assert_eq!(check(last + 2, 0), Err(TaggedError::BaseBounds));
    assert_eq!(check(u64::MAX, 1), Err(TaggedError::ToWrap));
    assert_eq!(
        check(u64::MAX - 1, 2),
        Err(TaggedError::ToWrap),
        "end 2^64 does not fit"
    );
    assert_eq!(check(u64::MAX - 1, 1), Err(TaggedError::BaseBounds));
    assert_eq!(check(u64::MAX, 0), Err(TaggedError::BaseBounds));
    assert_eq!(check(base, u64::MAX), Err(TaggedError::ToWrap));
    assert_eq!(check(1, u64::MAX), Err(TaggedError::ToWrap));
    assert_eq!(check(0, u64::MAX), Err(TaggedError::BaseBounds));
    // Local SGEs near the top.
    let local = |address, len| {
        t.check_local(pd, &sge(address, len, tok), LocalAccess::Read)
            .map(|_| ())
    };
    assert_eq!(local(last, 1), Ok(()));
    assert_eq!(local(u64::MAX, u32::MAX), Err(Status::ACCESS_VIOLATION));
    assert_eq!(local(u64::MAX - 10, 20), Err(Status::ACCESS_VIOLATION));
    // The lease there reads and writes the right bytes.
    let lease = t
        .check_remote(pd, tok, last - 3, 4, Access::RemoteWrite)
        .unwrap();
    lease.write(last - 3, b"tail").unwrap();
    assert_eq!(&buf.to_vec()[2 * PAGE_SIZE - 4..], b"tail");
    assert!(lease.write(last - 3, b"tail!").is_err());
    assert!(lease.read(u64::MAX, &mut [0u8; 1]).is_err());
    // A region whose end would be 2^64 is refused.
    t.invalidate(mr).unwrap();
    let top = !(PAGE - 1);
    assert_eq!(
        t.fast_register(mr, &pages[..1], 0, PAGE, top, RW)
            .unwrap_err(),
        Status::INVALID_PARAMETER
    );
}

// ---- fast registration: one test per §7.9 rule ------------------------------------------

#[test]
fn initialize_limits() {
    let t = MemoryTable::new(MemoryConfig {
        frmr_max_pages: 16,
        ..MemoryConfig::default()
    });
    let pd = t.create_pd().unwrap();
    let mr = t.create_mr(pd, true).unwrap();
    assert_eq!(
        t.initialize_fast_register(mr, 17, false).unwrap_err(),
        Status::IMPLEMENTATION_LIMIT
    );
    assert_eq!(
        t.initialize_fast_register(mr, 0, false).unwrap_err(),
        Status::INVALID_PARAMETER
    );
    let buf = Buffer::new(PAGE_SIZE);
    let (_lam, pages) = pages_of(&t, &buf);
    assert_eq!(
        t.fast_register(mr, &pages, 0, 1, 0, OpFlags::empty())
            .unwrap_err(),
        Status::INVALID_DEVICE_REQUEST,
        "not initialized"
    );
    t.initialize_fast_register(mr, 16, false).unwrap();
    t.initialize_fast_register(mr, 1, false).unwrap();
    t.fast_register(mr, &pages, 0, 1, 0, OpFlags::empty())
        .unwrap();
    assert_eq!(
        t.initialize_fast_register(mr, 1, true).unwrap_err(),
        Status::INVALID_DEVICE_REQUEST,
        "registered"
    );
}

#[test]
fn fr_page_count_above_initialized_count() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(3 * PAGE_SIZE);
    let (_lam, pages) = pages_of(&t, &buf);
    let mr = frmr(&t, pd, 2, false);
    assert_eq!(
        t.fast_register(mr, &pages, 0, PAGE, 0, OpFlags::empty())
            .unwrap_err(),
        Status::INVALID_PARAMETER
    );
    assert_eq!(
        t.fast_register(mr, &[], 0, 0, 0, OpFlags::empty())
            .unwrap_err(),
        Status::INVALID_PARAMETER
    );
    t.fast_register(mr, &pages[..2], 0, PAGE, 0, OpFlags::empty())
        .unwrap();
}

#[test]
fn fr_length_above_pages_minus_fbo() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(2 * PAGE_SIZE);
    let (_lam, pages) = pages_of(&t, &buf);
    let mr = frmr(&t, pd, 2, false);
    let fbo = 100u32;
    let max = 2 * PAGE - u64::from(fbo);
    let base = 7 * PAGE + u64::from(fbo);
    assert_eq!(
        t.fast_register(mr, &pages, fbo, max + 1, base, OpFlags::empty())
            .unwrap_err(),
        Status::INVALID_PARAMETER
    );
    assert_eq!(
        t.fast_register(mr, &pages, fbo, 0, base, OpFlags::empty())
            .unwrap_err(),
        Status::INVALID_PARAMETER,
        "zero length"
    );
    assert_eq!(
        t.fast_register(mr, &pages, PAGE_SIZE as u32, 1, base, OpFlags::empty())
            .unwrap_err(),
        Status::INVALID_PARAMETER,
        "FBO beyond the first page"
    );
    let tok = t
        .fast_register(mr, &pages, fbo, max, base, OpFlags::empty())
        .unwrap();
    assert!(
        t.check_local(pd, &sge(base, max as u32, tok.0), LocalAccess::Read)
            .is_ok()
    );
}

#[test]
fn fr_base_must_be_page_multiple_plus_fbo() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(PAGE_SIZE);
    let (_lam, pages) = pages_of(&t, &buf);
    let mr = frmr(&t, pd, 1, false);
    for base in [3 * PAGE, 3 * PAGE + 11, 3 * PAGE + 9, 9] {
        assert_eq!(
            t.fast_register(mr, &pages, 10, 100, base, OpFlags::empty())
                .unwrap_err(),
            Status::INVALID_PARAMETER,
            "{base:#x}"
        );
    }
    t.fast_register(mr, &pages, 10, 100, 3 * PAGE + 10, OpFlags::empty())
        .unwrap();
}

#[test]
fn fr_zero_base_only_with_zero_fbo() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(PAGE_SIZE);
    let (_lam, pages) = pages_of(&t, &buf);
    let mr = frmr(&t, pd, 1, false);
    assert_eq!(
        t.fast_register(mr, &pages, 1, 100, 0, OpFlags::empty())
            .unwrap_err(),
        Status::INVALID_PARAMETER
    );
    let tok = t
        .fast_register(mr, &pages, 0, 100, 0, OpFlags::ALLOW_LOCAL_WRITE)
        .unwrap();
    assert!(
        t.check_local(pd, &sge(0, 100, tok.0), LocalAccess::Write)
            .is_ok()
    );
}

#[test]
fn fr_remote_rights_need_remote_initialization() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(PAGE_SIZE);
    let (_lam, pages) = pages_of(&t, &buf);
    let mr = frmr(&t, pd, 1, false);
    for flags in [
        OpFlags::ALLOW_REMOTE_READ,
        OpFlags::ALLOW_REMOTE_WRITE,
        OpFlags::from_bits_retain(0x20),
        RW | OpFlags::RDMA_READ_SINK,
    ] {
        assert_eq!(
            t.fast_register(mr, &pages, 0, 64, 0, flags).unwrap_err(),
            Status::ACCESS_VIOLATION,
            "{flags:?}"
        );
    }
    // Local rights are fine; the same request succeeds on a remote-capable MR.
    t.fast_register(mr, &pages, 0, 64, 0, OpFlags::ALLOW_LOCAL_WRITE)
        .unwrap();
    let remote = frmr(&t, pd, 1, true);
    let tok = t.fast_register(remote, &pages, 0, 64, 0, RW).unwrap();
    assert!(
        t.check_remote(pd, tok.0, 0, 64, Access::RemoteWrite)
            .is_ok()
    );
    // Unknown flag bits are a parameter error.
    let other = frmr(&t, pd, 1, true);
    assert_eq!(
        t.fast_register(other, &pages, 0, 64, 0, OpFlags::INLINE)
            .unwrap_err(),
        Status::INVALID_PARAMETER
    );
}

#[test]
fn fr_read_sink_when_required() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(PAGE_SIZE);
    let (_lam, pages) = pages_of(&t, &buf);
    let plain = frmr(&t, pd, 1, false);
    let sink = frmr(&t, pd, 1, false);
    let p = t
        .fast_register(plain, &pages, 0, 64, 0, OpFlags::ALLOW_LOCAL_WRITE)
        .unwrap();
    let s = t
        .fast_register(
            sink,
            &pages,
            0,
            64,
            0,
            OpFlags::ALLOW_LOCAL_WRITE | OpFlags::RDMA_READ_SINK,
        )
        .unwrap();
    assert_eq!(
        t.check_local(pd, &sge(0, 64, p.0), LocalAccess::ReadSink)
            .unwrap_err(),
        Status::ACCESS_VIOLATION
    );
    assert_eq!(
        t.check_remote(pd, p.0, 0, 64, Access::ReadSink)
            .unwrap_err(),
        TaggedError::AccessRights
    );
    assert!(
        t.check_local(pd, &sge(0, 64, s.0), LocalAccess::ReadSink)
            .is_ok()
    );
    assert!(t.check_remote(pd, s.0, 0, 64, Access::ReadSink).is_ok());
}

#[test]
fn fr_read_sink_when_not_required() {
    let t = sink_free_table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(PAGE_SIZE);
    let (_lam, pages) = pages_of(&t, &buf);
    let plain = frmr(&t, pd, 1, false);
    let flagged = frmr(&t, pd, 1, false);
    let p = t
        .fast_register(plain, &pages, 0, 64, 0, OpFlags::ALLOW_LOCAL_WRITE)
        .unwrap();
    // The flag is still accepted.
    let f = t
        .fast_register(
            flagged,
            &pages,
            0,
            64,
            0,
            OpFlags::ALLOW_LOCAL_WRITE | OpFlags::RDMA_READ_SINK,
        )
        .unwrap();
    for tok in [p.0, f.0] {
        assert!(
            t.check_local(pd, &sge(0, 64, tok), LocalAccess::ReadSink)
                .is_ok()
        );
        assert!(t.check_remote(pd, tok, 0, 64, Access::ReadSink).is_ok());
    }
}

#[test]
fn fr_on_registered_mr_is_refused() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(PAGE_SIZE);
    let (_lam, pages) = pages_of(&t, &buf);
    let mr = frmr(&t, pd, 1, true);
    let tok = t.fast_register(mr, &pages, 0, 64, 0, RW).unwrap();
    assert_eq!(
        t.fast_register(mr, &pages, 0, 32, PAGE, RW).unwrap_err(),
        Status::INVALID_DEVICE_REQUEST
    );
    // Nothing changed: the first registration still works, with the same token.
    assert_eq!(t.remote_token(mr).unwrap(), tok);
    assert!(t.check_remote(pd, tok.0, 0, 64, Access::RemoteRead).is_ok());
}

#[test]
fn fr_token_usable_remotely_right_after() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(PAGE_SIZE);
    let (_lam, pages) = pages_of(&t, &buf);
    let mr = frmr(&t, pd, 1, true);
    let before = t.remote_token(mr).unwrap();
    let tok = t.fast_register(mr, &pages, 0, 64, 0x5000, RW).unwrap();
    assert_ne!(tok, before, "key rotated");
    assert_eq!(t.remote_token(mr).unwrap(), tok);
    assert_eq!(t.local_token(mr).unwrap().0, tok.0);
    let lease = t
        .check_remote(pd, tok.0, 0x5000, 64, Access::RemoteWrite)
        .unwrap();
    lease.write(0x5010, b"hello").unwrap();
    assert_eq!(&buf.to_vec()[0x10..0x15], b"hello");
    assert_eq!(
        t.check_remote(pd, before.0, 0x5000, 1, Access::RemoteRead)
            .unwrap_err(),
        TaggedError::InvalidStag
    );
}

#[test]
fn fr_stale_token_after_invalidate_and_reregister() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(PAGE_SIZE);
    let (_lam, pages) = pages_of(&t, &buf);
    let mr = frmr(&t, pd, 1, true);
    let first = t.fast_register(mr, &pages, 0, 64, 0, RW).unwrap();
    t.invalidate(mr).unwrap();
    assert_eq!(
        t.check_remote(pd, first.0, 0, 1, Access::RemoteRead)
            .unwrap_err(),
        TaggedError::InvalidStag
    );
    assert_eq!(
        t.check_local(pd, &sge(0, 1, first.0), LocalAccess::Read)
            .unwrap_err(),
        Status::ACCESS_VIOLATION
    );
    assert_eq!(
        t.invalidate(mr).unwrap_err(),
        Status::INVALID_DEVICE_REQUEST
    );
    let second = t.fast_register(mr, &pages, 0, 64, 0, RW).unwrap();
    assert_ne!(first, second);
    assert_eq!(
        t.check_remote(pd, first.0, 0, 1, Access::RemoteRead)
            .unwrap_err(),
        TaggedError::InvalidStag
    );
    assert!(
        t.check_remote(pd, second.0, 0, 1, Access::RemoteRead)
            .is_ok()
    );
    // Remote invalidation (Send with Invalidate) works the same way.
    t.invalidate_remote(pd, second.0).unwrap();
    assert_eq!(
        t.invalidate_remote(pd, second.0).unwrap_err(),
        TaggedError::InvalidStag
    );
    assert!(!t.is_registered(mr).unwrap());
    let third = t.fast_register(mr, &pages, 0, 64, 0, RW).unwrap();
    assert!(![first, second].contains(&third));
}

#[test]
fn fr_pages_must_be_live_logical_addresses() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(2 * PAGE_SIZE);
    let (lam, pages) = pages_of(&t, &buf);
    let mr = frmr(&t, pd, 2, false);
    let fr =
        |pages: &[LogicalAddress], len| t.fast_register(mr, pages, 0, len, 0, OpFlags::empty());
    let av = Err(Status::ACCESS_VIOLATION);
    assert_eq!(fr(&[LogicalAddress(0)], 1).map(|_| ()), av);
    assert_eq!(fr(&[LogicalAddress(PAGE)], 1).map(|_| ()), av);
    assert_eq!(
        fr(&[LogicalAddress(pages[0].0 + 8)], 1).map(|_| ()),
        av,
        "unaligned"
    );
    assert_eq!(
        fr(&[LogicalAddress(pages[1].0 + PAGE)], 1).map(|_| ()),
        av,
        "past the LAM's last page"
    );
    // A trailing page that carries no bytes must still be a live page.
    assert_eq!(fr(&[pages[0], LogicalAddress(0)], 1).map(|_| ()), av);
    t.release_lam(&lam).unwrap();
    assert_eq!(fr(&pages, 1).map(|_| ()), av, "released");
    assert_eq!(t.release_lam(&lam).unwrap_err(), Status::INVALID_PARAMETER);
}

#[test]
fn fr_bytes_outside_the_lam_range_are_refused() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(PAGE_SIZE);
    // A LAM over bytes 100..150: one page, FBO 100.
    let lam = t.build_lam(&buf, 100, 50).unwrap();
    assert_eq!(lam.fbo, 100);
    assert_eq!(lam.mapping.adapter_page_count(), 1);
    let pages = &lam.mapping.adapter_page_array;
    let mr = frmr(&t, pd, 1, false);
    let fr = |fbo, len| {
        t.fast_register(
            mr,
            pages,
            fbo,
            len,
            u64::from(fbo),
            OpFlags::ALLOW_LOCAL_WRITE,
        )
        .map(|_| ())
    };
    assert_eq!(fr(0, 150), Err(Status::ACCESS_VIOLATION));
    assert_eq!(fr(100, 51), Err(Status::ACCESS_VIOLATION));
    assert_eq!(fr(99, 2), Err(Status::ACCESS_VIOLATION));
    fr(100, 50).unwrap();
    let tok = t.local_token(mr).unwrap().0;
    t.check_local(pd, &sge(100, 50, tok), LocalAccess::Write)
        .unwrap()
        .write(100, &[7; 50])
        .unwrap();
    let bytes = buf.to_vec();
    assert!(bytes[..100].iter().all(|&b| b == 0));
    assert!(bytes[100..150].iter().all(|&b| b == 7));
    assert!(bytes[150..].iter().all(|&b| b == 0));
}

#[test]
fn page_list_regions_with_non_contiguous_pages() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let a = Buffer::new(4 * PAGE_SIZE);
    let b = Buffer::new(2 * PAGE_SIZE);
    let (_la, pa) = pages_of(&t, &a);
    let (_lb, pb) = pages_of(&t, &b);
    // Region pages: a[2], b[1], a[0], a[1] (the last two are contiguous).
    let pages = [pa[2], pb[1], pa[0], pa[1]];
    let mr = frmr(&t, pd, 4, true);
    let fbo = 1000u32;
    let len = 4 * PAGE - u64::from(fbo) - 500;
    let base = 16 * PAGE + u64::from(fbo);
    let tok = t.fast_register(mr, &pages, fbo, len, base, RW).unwrap();
    let lease = t
        .check_remote(pd, tok.0, base, len, Access::RemoteWrite)
        .unwrap();
    // Where region byte r lives.
    let place = |r: u64| -> (&Buffer, usize) {
        let page = (r + u64::from(fbo)) / PAGE;
        let within = ((r + u64::from(fbo)) % PAGE) as usize;
        match page {
            0 => (&a, 2 * PAGE_SIZE + within),
            1 => (&b, PAGE_SIZE + within),
            2 => (&a, within),
            _ => (&a, PAGE_SIZE + within),
        }
    };
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
    lease.write(base, &data).unwrap();
    let (av, bv) = (a.to_vec(), b.to_vec());
    for r in
        (0..len)
            .step_by(97)
            .chain([0, len - 1, PAGE - u64::from(fbo) - 1, PAGE - u64::from(fbo)])
    {
        let (buf, off) = place(r);
        let v = if buf.ptr_eq(&a) { av[off] } else { bv[off] };
        assert_eq!(v, data[r as usize], "region byte {r}");
    }
    // Bytes outside the region are untouched.
    assert!(
        av[2 * PAGE_SIZE..2 * PAGE_SIZE + fbo as usize]
            .iter()
            .all(|&x| x == 0)
    );
    assert!(bv[..PAGE_SIZE].iter().all(|&x| x == 0));
    assert!(
        av[2 * PAGE_SIZE - 500..2 * PAGE_SIZE]
            .iter()
            .all(|&x| x == 0)
    );
    // Reading back across every page boundary gives the data.
    let mut back = vec![0u8; len as usize];
    lease.read(base, &mut back).unwrap();
    assert_eq!(back, data);
    // Spans: the first page, b's page, then a[0..2] merged into one.
    let spans: Vec<usize> = lease
        .spans(base, len)
        .unwrap()
        .map(|(_, r)| r.len())
        .collect();
    assert_eq!(
        spans,
        [PAGE_SIZE - fbo as usize, PAGE_SIZE, 2 * PAGE_SIZE - 500]
    );
    let mut gathered = Vec::new();
    lease
        .for_each_span(base + 10, PAGE + 20, |s| gathered.extend_from_slice(s))
        .unwrap();
    assert_eq!(gathered, data[10..10 + PAGE_SIZE + 20]);
    // A write in the middle that straddles b's page lands in both buffers.
    let mid = base + PAGE - u64::from(fbo) - 2;
    lease.write(mid, b"WXYZ").unwrap();
    assert_eq!(&a.to_vec()[3 * PAGE_SIZE - 2..3 * PAGE_SIZE], b"WX");
    assert_eq!(&b.to_vec()[PAGE_SIZE..PAGE_SIZE + 2], b"YZ");
}

// ---- memory windows ----------------------------------------------------------------------

struct Win {
    t: MemoryTable,
    pd: PdId,
    buf: Buffer,
    mr: MrId,
    mw: MwId,
}

fn window_setup(flags: MrFlags) -> Win {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(PAGE_SIZE);
    let (mr, _) = regular(&t, pd, &buf, flags);
    let mw = t.create_mw(pd).unwrap();
    Win { t, pd, buf, mr, mw }
}

#[test]
fn bind_invalidate_rebind() {
    let Win { t, pd, buf, mr, mw } = window_setup(MrFlags::ALLOW_LOCAL_WRITE);
    let a = buf.address();
    let tok = t
        .bind(mw, mr, a + 100, 50, OpFlags::ALLOW_REMOTE_READ)
        .unwrap();
    assert_eq!(t.mw_remote_token(mw).unwrap(), tok);
    assert!(t.is_bound(mw).unwrap());
    let check =
        |tok: RemoteToken, to, len, acc| t.check_remote(pd, tok.0, to, len, acc).map(|_| ());
    assert_eq!(check(tok, a + 100, 50, Access::RemoteRead), Ok(()));
    assert_eq!(
        check(tok, a + 100, 50, Access::RemoteWrite),
        Err(TaggedError::AccessRights)
    );
    assert_eq!(
        check(tok, a + 99, 1, Access::RemoteRead),
        Err(TaggedError::BaseBounds)
    );
    assert_eq!(
        check(tok, a + 149, 2, Access::RemoteRead),
        Err(TaggedError::BaseBounds)
    );
    assert_eq!(
        check(tok, a + 100, 1, Access::ReadSink),
        Err(TaggedError::AccessRights)
    );
    // Window tokens are not local tokens.
    assert_eq!(
        t.check_local(pd, &sge(a + 100, 1, tok.0), LocalAccess::Read)
            .unwrap_err(),
        Status::ACCESS_VIOLATION
    );
    // The MR's own token has no remote rights.
    let mrt = t.remote_token(mr).unwrap();
    assert_eq!(
        check(mrt, a + 100, 1, Access::RemoteRead),
        Err(TaggedError::AccessRights)
    );
    // Bound twice: refused.
    assert_eq!(
        t.bind(mw, mr, a, 10, OpFlags::ALLOW_REMOTE_READ)
            .unwrap_err(),
        Status::INVALID_DEVICE_REQUEST
    );
    t.invalidate(mw).unwrap();
    assert_eq!(
        check(tok, a + 100, 1, Access::RemoteRead),
        Err(TaggedError::InvalidStag)
    );
    assert_eq!(
        t.invalidate(mw).unwrap_err(),
        Status::INVALID_DEVICE_REQUEST
    );
    let again = t.bind(mw, mr, a, 10, OpFlags::ALLOW_REMOTE_WRITE).unwrap();
    assert_ne!(again, tok);
    assert_eq!(check(again, a, 10, Access::RemoteWrite), Ok(()));
    assert_eq!(
        check(tok, a + 100, 1, Access::RemoteRead),
        Err(TaggedError::InvalidStag)
    );
}

#[test]
fn bind_rules() {
    let Win { t, pd, buf, mr, mw } = window_setup(MrFlags::ALLOW_REMOTE_READ);
    let a = buf.address();
    // Remote write on the window needs local write on the MR.
    assert_eq!(
        t.bind(mw, mr, a, 10, OpFlags::ALLOW_REMOTE_WRITE)
            .unwrap_err(),
        Status::ACCESS_VIOLATION
    );
    assert_eq!(
        t.bind(mw, mr, a, 10, OpFlags::from_bits_retain(0x20))
            .unwrap_err(),
        Status::ACCESS_VIOLATION
    );
    // No remote right, unknown flags, empty or outside ranges.
    let rr = OpFlags::ALLOW_REMOTE_READ;
    assert_eq!(
        t.bind(mw, mr, a, 10, OpFlags::empty()).unwrap_err(),
        Status::INVALID_PARAMETER
    );
    assert_eq!(
        t.bind(mw, mr, a, 10, rr | OpFlags::INLINE).unwrap_err(),
        Status::INVALID_PARAMETER
    );
    assert_eq!(
        t.bind(mw, mr, a, 0, rr).unwrap_err(),
        Status::INVALID_PARAMETER
    );
    assert_eq!(
        t.bind(mw, mr, a - 1, 10, rr).unwrap_err(),
        Status::INVALID_PARAMETER
    );
    assert_eq!(
        t.bind(mw, mr, a + PAGE - 9, 10, rr).unwrap_err(),
        Status::INVALID_PARAMETER
    );
    assert_eq!(
        t.bind(mw, mr, u64::MAX, 2, rr).unwrap_err(),
        Status::INVALID_PARAMETER
    );
    t.bind(mw, mr, a, PAGE, rr).unwrap();
    // Not over a fast-register MR, nor an unregistered one.
    let mw2 = t.create_mw(pd).unwrap();
    let fr = frmr(&t, pd, 1, true);
    assert_eq!(
        t.bind(mw2, fr, 0, 10, rr).unwrap_err(),
        Status::ACCESS_VIOLATION
    );
    let (_lam, pages) = pages_of(&t, &buf);
    t.fast_register(fr, &pages, 0, 64, 0, RW).unwrap();
    assert_eq!(
        t.bind(mw2, fr, 0, 10, rr).unwrap_err(),
        Status::ACCESS_VIOLATION
    );
    let unreg = t.create_mr(pd, false).unwrap();
    assert_eq!(
        t.bind(mw2, unreg, a, 10, rr).unwrap_err(),
        Status::INVALID_DEVICE_REQUEST
    );
}

#[test]
fn windows_keep_their_mr_registered() {
    let Win { t, pd, buf, mr, mw } = window_setup(MrFlags::ALLOW_LOCAL_WRITE);
    let a = buf.address();
    let tok = t.bind(mw, mr, a, 10, OpFlags::ALLOW_REMOTE_WRITE).unwrap();
    assert_eq!(t.deregister_mr(mr).unwrap_err(), Status::DEVICE_BUSY);
    assert!(
        t.check_remote(pd, tok.0, a, 10, Access::RemoteWrite)
            .is_ok()
    );
    // Remote invalidation of the window releases the MR.
    t.invalidate_remote(pd, tok.0).unwrap();
    assert_eq!(
        t.check_remote(pd, tok.0, a, 10, Access::RemoteWrite)
            .unwrap_err(),
        TaggedError::InvalidStag
    );
    t.deregister_mr(mr).unwrap();
    t.register_mr(mr, &buf, 0, 64, MrFlags::ALLOW_LOCAL_WRITE)
        .unwrap();
    // Closing a bound window unbinds it.
    t.bind(mw, mr, a, 10, OpFlags::ALLOW_REMOTE_WRITE).unwrap();
    assert_eq!(t.close_pd(pd).unwrap_err(), Status::DEVICE_BUSY);
    t.close_mw(mw).unwrap();
    assert_eq!(t.is_bound(mw).unwrap_err(), Status::INVALID_HANDLE);
    t.close_mr(mr, || {}).unwrap();
    t.close_pd(pd).unwrap();
    assert_eq!(t.close_pd(pd).unwrap_err(), Status::INVALID_HANDLE);
    assert_eq!(t.create_mr(pd, false).unwrap_err(), Status::INVALID_HANDLE);
}

/// NDK §2.5, §2.6: closing an MR with windows bound never fails; its token dies at once; the
/// windows keep their bindings; the close completes when the last of them is unbound.
#[test]
fn closing_an_mr_with_windows_kills_its_token_and_waits_for_them() {
    let Win { t, pd, buf, mr, mw } =
        window_setup(MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_READ);
    let a = buf.address();
    let mr_token = t.remote_token(mr).unwrap();
    let mw2 = t.create_mw(pd).unwrap();
    let w1 = t.bind(mw, mr, a, 10, OpFlags::ALLOW_REMOTE_READ).unwrap();
    let w2 = t.bind(mw2, mr, a, 20, OpFlags::ALLOW_REMOTE_READ).unwrap();
    let released = Arc::new(AtomicBool::new(false));
    let flag = released.clone();
    t.close_mr(mr, move || flag.store(true, Ordering::SeqCst))
        .unwrap();
    assert!(!released.load(Ordering::SeqCst), "windows still bound");
    assert_eq!(
        t.check_remote(pd, mr_token.0, a, 10, Access::RemoteRead)
            .unwrap_err(),
        TaggedError::InvalidStag
    );
    assert_eq!(
        t.check_local(pd, &sge(a, 10, mr_token.0), LocalAccess::Read)
            .unwrap_err(),
        Status::ACCESS_VIOLATION
    );
    // The handle is dead, the windows are not.
    assert_eq!(t.deregister_mr(mr).unwrap_err(), Status::INVALID_HANDLE);
    assert_eq!(t.close_mr(mr, || {}).unwrap_err(), Status::INVALID_HANDLE);
    let mw3 = t.create_mw(pd).unwrap();
    assert_eq!(
        t.bind(mw3, mr, a, 10, OpFlags::ALLOW_REMOTE_READ)
            .unwrap_err(),
        Status::INVALID_HANDLE
    );
    assert!(t.check_remote(pd, w1.0, a, 10, Access::RemoteRead).is_ok());
    assert_eq!(t.usage().mrs, 1);
    assert_eq!(t.usage().regions, 0);
    // The last unbind (an invalidation or a close) frees the slot and completes the close.
    t.invalidate_remote(pd, w1.0).unwrap();
    assert!(!released.load(Ordering::SeqCst));
    t.close_mw(mw2).unwrap();
    assert!(released.load(Ordering::SeqCst));
    assert_eq!(
        t.check_remote(pd, w2.0, a, 10, Access::RemoteRead)
            .unwrap_err(),
        TaggedError::InvalidStag
    );
    assert_eq!(t.usage().mrs, 0);
    // Without windows, the close is done before it returns.
    let (mr, _) = regular(&t, pd, &buf, MrFlags::ALLOW_REMOTE_READ);
    let released = Arc::new(AtomicBool::new(false));
    let flag = released.clone();
    t.close_mr(mr, move || flag.store(true, Ordering::SeqCst))
        .unwrap();
    assert!(released.load(Ordering::SeqCst));
    t.close_mw(mw3).unwrap();
    t.close_mw(mw).unwrap();
    t.close_pd(pd).unwrap();
    assert_eq!(t.usage(), netdirect_soft::memory::MemoryUsage::default());
}

/// Posts check under the read lock and commit under the write lock: a commit carries out only
/// what is still true when it runs.
#[test]
fn plans_commit_only_what_is_still_true() {
    let Win { t, pd, buf, mr, mw } = window_setup(MrFlags::ALLOW_LOCAL_WRITE);
    let a = buf.address();
    // The window got bound between the check and the commit.
    let plan = t
        .check_bind(mw, mr, a, 10, OpFlags::ALLOW_REMOTE_READ)
        .unwrap();
    let tok = t.bind(mw, mr, a, 20, OpFlags::ALLOW_REMOTE_READ).unwrap();
    assert_eq!(
        t.commit_bind(plan).unwrap_err(),
        Status::INVALID_DEVICE_REQUEST
    );
    assert!(t.check_remote(pd, tok.0, a, 20, Access::RemoteRead).is_ok());
    t.invalidate(mw).unwrap();
    // The MR was registered again (another buffer) between the check and the commit: the
    // plan's registration is gone.
    let plan = t
        .check_bind(mw, mr, a, 10, OpFlags::ALLOW_REMOTE_READ)
        .unwrap();
    t.deregister_mr(mr).unwrap();
    let other = Buffer::new(PAGE_SIZE);
    t.register_mr(mr, &other, 0, PAGE_SIZE, MrFlags::ALLOW_LOCAL_WRITE)
        .unwrap();
    assert_eq!(
        t.commit_bind(plan).unwrap_err(),
        Status::INVALID_DEVICE_REQUEST
    );
    assert!(!t.is_bound(mw).unwrap());
    // Still true: committed, once.
    let plan = t
        .check_bind(mw, mr, other.address(), 10, OpFlags::ALLOW_REMOTE_READ)
        .unwrap();
    let tok = t.commit_bind(plan).unwrap();
    assert!(
        t.check_remote(pd, tok.0, other.address(), 10, Access::RemoteRead)
            .is_ok()
    );
    // The MR was closed between the check and the commit.
    let t2 = table();
    let pd2 = t2.create_pd().unwrap();
    let (m2, _) = regular(&t2, pd2, &buf, MrFlags::ALLOW_LOCAL_WRITE);
    let w2 = t2.create_mw(pd2).unwrap();
    let plan = t2
        .check_bind(w2, m2, a, 10, OpFlags::ALLOW_REMOTE_READ)
        .unwrap();
    t2.close_mr(m2, || {}).unwrap();
    assert_eq!(t2.commit_bind(plan).unwrap_err(), Status::INVALID_HANDLE);

    // Fast register: registered, or initialized for fewer pages or without remote access,
    // between the check and the commit.
    let lam_buf = Buffer::new(4 * PAGE_SIZE);
    let (_lam, pages) = pages_of(&t, &lam_buf);
    let fr = frmr(&t, pd, 4, true);
    let plan = t
        .check_fast_register(fr, &pages, 0, 4 * PAGE, 0, RW)
        .unwrap();
    t.initialize_fast_register(fr, 2, true).unwrap();
    assert_eq!(
        t.commit_fast_register(plan).unwrap_err(),
        Status::INVALID_PARAMETER
    );
    let plan = t
        .check_fast_register(fr, &pages[..2], 0, PAGE, 0, RW)
        .unwrap();
    t.initialize_fast_register(fr, 2, false).unwrap();
    assert_eq!(
        t.commit_fast_register(plan).unwrap_err(),
        Status::ACCESS_VIOLATION
    );
    t.initialize_fast_register(fr, 2, true).unwrap();
    let plan = t
        .check_fast_register(fr, &pages[..2], 0, PAGE, 0, RW)
        .unwrap();
    let again = t
        .check_fast_register(fr, &pages[..2], 0, PAGE, 0, RW)
        .unwrap();
    let tok = t.commit_fast_register(plan).unwrap();
    assert_eq!(
        t.commit_fast_register(again).unwrap_err(),
        Status::INVALID_DEVICE_REQUEST
    );
    assert!(
        t.check_remote(pd, tok.0, 0, PAGE, Access::RemoteRead)
            .is_ok()
    );
}

#[test]
fn remote_invalidation_targets() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(64);
    let (_, regular_tok) = regular(&t, pd, &buf, MrFlags::ALLOW_REMOTE_WRITE);
    assert_eq!(
        t.invalidate_remote(pd, regular_tok).unwrap_err(),
        TaggedError::AccessRights
    );
    assert!(
        t.check_remote(pd, regular_tok, buf.address(), 1, Access::RemoteWrite)
            .is_ok()
    );
    assert_eq!(
        t.invalidate_remote(pd, pd.privileged_token().0)
            .unwrap_err(),
        TaggedError::InvalidStag
    );
    assert_eq!(
        t.invalidate_remote(pd, 0).unwrap_err(),
        TaggedError::InvalidStag
    );
    let mw = t.create_mw(pd).unwrap();
    let unbound = t.mw_remote_token(mw).unwrap();
    assert_eq!(
        t.invalidate_remote(pd, unbound.0).unwrap_err(),
        TaggedError::InvalidStag
    );
}

// ---- leases -------------------------------------------------------------------------------

#[test]
fn leases_survive_deregistration_and_close() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::from_slice(b"0123456789abcdef");
    let a = buf.address();
    let (mr, tok) = regular(
        &t,
        pd,
        &buf,
        MrFlags::ALLOW_REMOTE_WRITE | MrFlags::ALLOW_REMOTE_READ,
    );
    let lease = t
        .check_remote(pd, tok, a + 4, 8, Access::RemoteRead)
        .unwrap();
    assert_eq!((lease.to(), lease.len()), (a + 4, 8));
    t.deregister_mr(mr).unwrap();
    t.close_mr(mr, || {}).unwrap();
    let clone = lease.clone();
    drop(buf);
    let mut out = [0u8; 8];
    clone.read(a + 4, &mut out).unwrap();
    assert_eq!(&out, b"456789ab");
    clone.write(a + 6, b"XY").unwrap();
    clone.read(a + 4, &mut out).unwrap();
    assert_eq!(&out, b"45XY89ab");
    // Only the checked range is reachable.
    assert!(clone.read(a + 3, &mut [0u8; 1]).is_err());
    assert!(clone.read(a + 12, &mut [0u8; 1]).is_err());
    assert!(clone.write(a + 11, b"ZZ").is_err());
    let sub = clone.sub(a + 6, 2).unwrap();
    assert_eq!(sub.range(), a + 6..a + 8);
    assert!(clone.sub(a + 6, 7).is_err());
    let mut all = Vec::new();
    lease
        .for_each_span(a + 4, 8, |s| all.extend_from_slice(s))
        .unwrap();
    assert_eq!(all, b"45XY89ab");
}

#[test]
fn fast_registered_lease_survives_invalidate_and_lam_release() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(2 * PAGE_SIZE);
    let (lam, pages) = pages_of(&t, &buf);
    let mr = frmr(&t, pd, 2, true);
    let tok = t
        .fast_register(mr, &[pages[1], pages[0]], 0, 2 * PAGE, 0, RW)
        .unwrap();
    let lease = t
        .check_remote(pd, tok.0, PAGE - 2, 4, Access::RemoteWrite)
        .unwrap();
    t.invalidate(mr).unwrap();
    t.release_lam(&lam).unwrap();
    t.close_mr(mr, || {}).unwrap();
    drop(pages);
    lease.write(PAGE - 2, b"abcd").unwrap();
    let v = buf.to_vec();
    assert_eq!(&v[2 * PAGE_SIZE - 2..], b"ab");
    assert_eq!(&v[..2], b"cd");
    lease
        .for_each_span_mut(PAGE - 2, 4, |s| s.fill(b'!'))
        .unwrap();
    assert_eq!(&buf.to_vec()[..2], b"!!");
}

// ---- LAMs and the privileged token -------------------------------------------------------

#[test]
fn build_lam_pages_and_fbo() {
    let t = table();
    let buf = Buffer::new(3 * PAGE_SIZE);
    let lam = t.build_lam(&buf, PAGE_SIZE + 10, PAGE_SIZE).unwrap();
    assert_eq!(lam.fbo, 10);
    assert_eq!(lam.mapping.adapter_page_count(), 2);
    assert!(
        lam.mapping
            .adapter_page_array
            .iter()
            .all(|p| p.is_page_aligned())
    );
    let p = &lam.mapping.adapter_page_array;
    assert_eq!(p[1].0, p[0].0 + PAGE, "pages of one LAM are contiguous");
    assert!(p[0].0 >= 1 << 44);
    assert_eq!(
        t.build_lam(&buf, 0, 0).unwrap_err(),
        Status::INVALID_PARAMETER
    );
    assert_eq!(
        t.build_lam(&buf, 2 * PAGE_SIZE, PAGE_SIZE + 1).unwrap_err(),
        Status::INVALID_PARAMETER
    );
    assert_eq!(
        t.build_lam(&buf, usize::MAX, 2).unwrap_err(),
        Status::INVALID_PARAMETER
    );
    let other = t.build_lam(&buf, 0, 1).unwrap();
    assert_ne!(other.mapping.adapter_page_array[0], p[0]);
    assert_eq!(MAX_LAM_PAGES, 1 << 20);
}

#[test]
fn privileged_token_uses_lam_addresses_locally_only() {
    let t = table();
    let pd = t.create_pd().unwrap();
    let other = t.create_pd().unwrap();
    let priv_tok = pd.privileged_token().0;
    assert_ne!(priv_tok, other.privileged_token().0);
    let buf = Buffer::new(3 * PAGE_SIZE);
    let lam = t.build_lam(&buf, 100, 2 * PAGE_SIZE).unwrap();
    let p0 = lam.mapping.adapter_page_array[0].0;
    let first = p0 + 100;
    // Read and write, across a page boundary of the LAM.
    let lease = t
        .check_local(
            pd,
            &sge(first + PAGE - 110, 20, priv_tok),
            LocalAccess::Write,
        )
        .unwrap();
    lease.write(first + PAGE - 110, &[9; 20]).unwrap();
    assert!(
        buf.to_vec()[PAGE_SIZE - 10..PAGE_SIZE + 10]
            .iter()
            .all(|&b| b == 9)
    );
    assert!(
        t.check_local(
            pd,
            &sge(first, 2 * PAGE as u32, priv_tok),
            LocalAccess::Read
        )
        .is_ok()
    );
    // Outside the mapped bytes.
    let av = Err(Status::ACCESS_VIOLATION);
    let local = |address, len, acc| {
        t.check_local(pd, &sge(address, len, priv_tok), acc)
            .map(|_| ())
    };
    assert_eq!(local(first - 1, 1, LocalAccess::Read), av);
    assert_eq!(local(first, 2 * PAGE as u32 + 1, LocalAccess::Read), av);
    assert_eq!(
        local(buf.address() + 100, 1, LocalAccess::Read),
        av,
        "not a logical address"
    );
    // Read sinks need the adapter flag.
    assert_eq!(local(first, 1, LocalAccess::ReadSink), av);
    // Another PD's privileged token.
    assert_eq!(
        t.check_local(other, &sge(first, 1, priv_tok), LocalAccess::Read)
            .map(|_| ()),
        av
    );
    // Never remote.
    for access in [Access::RemoteRead, Access::RemoteWrite, Access::ReadSink] {
        assert_eq!(
            t.check_remote(pd, priv_tok, first, 1, access).unwrap_err(),
            TaggedError::InvalidStag,
            "{access:?}"
        );
    }
    // Released LAM: its addresses are dead, even after the slot is reused.
    t.release_lam(&lam).unwrap();
    assert_eq!(local(first, 1, LocalAccess::Read), av);
    let again = t.build_lam(&buf, 100, 2 * PAGE_SIZE).unwrap();
    assert_ne!(again.mapping.adapter_page_array[0].0, p0);
    assert_eq!(local(first, 1, LocalAccess::Read), av);
    assert!(
        t.check_local(
            pd,
            &sge(again.mapping.adapter_page_array[0].0 + 100, 1, priv_tok),
            LocalAccess::Read
        )
        .is_ok()
    );
    // The lease made before the release still works.
    let mut out = [0u8; 1];
    lease.read(first + PAGE - 110, &mut out).unwrap();
    assert_eq!(out, [9]);
}

#[test]
fn privileged_token_as_read_sink_when_not_required() {
    let t = sink_free_table();
    let pd = t.create_pd().unwrap();
    let other = t.create_pd().unwrap();
    let buf = Buffer::new(PAGE_SIZE);
    let lam = t.build_lam(&buf, 0, PAGE_SIZE).unwrap();
    let p0 = lam.mapping.adapter_page_array[0].0;
    let tok = pd.privileged_token().0;
    assert!(
        t.check_local(pd, &sge(p0, 16, tok), LocalAccess::ReadSink)
            .is_ok()
    );
    let lease = t.check_remote(pd, tok, p0, 16, Access::ReadSink).unwrap();
    lease.write(p0 + 4, b"ok").unwrap();
    assert_eq!(&buf.to_vec()[4..6], b"ok");
    assert_eq!(
        t.check_remote(other, tok, p0, 16, Access::ReadSink)
            .unwrap_err(),
        TaggedError::NotAssociated
    );
    assert_eq!(
        t.check_remote(pd, tok, p0 + PAGE, 1, Access::ReadSink)
            .unwrap_err(),
        TaggedError::BaseBounds
    );
    assert_eq!(
        t.check_remote(pd, tok, u64::MAX, 2, Access::ReadSink)
            .unwrap_err(),
        TaggedError::ToWrap
    );
    // Still never remote read or write.
    assert_eq!(
        t.check_remote(pd, tok, p0, 1, Access::RemoteWrite)
            .unwrap_err(),
        TaggedError::InvalidStag
    );
}

// ---- table-level ---------------------------------------------------------------------------

#[test]
fn table_is_send_and_sync_and_bounded() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MemoryTable>();
    assert_send_sync::<netdirect_soft::memory::Lease>();
    let t = MemoryTable::new(MemoryConfig {
        max_objects: 3,
        max_lams: 1,
        ..MemoryConfig::default()
    });
    let pd = t.create_pd().unwrap();
    let a = t.create_mr(pd, false).unwrap();
    t.create_mw(pd).unwrap();
    assert_eq!(
        t.create_mr(pd, false).unwrap_err(),
        Status::INSUFFICIENT_RESOURCES
    );
    t.close_mr(a, || {}).unwrap();
    t.create_mr(pd, true).unwrap();
    let buf = Buffer::new(10);
    let lam = t.build_lam(&buf, 0, 10).unwrap();
    assert_eq!(
        t.build_lam(&buf, 0, 10).unwrap_err(),
        Status::INSUFFICIENT_RESOURCES
    );
    t.release_lam(&lam).unwrap();
    t.build_lam(&buf, 0, 10).unwrap();
}

#[test]
fn concurrent_checks_during_reregistration() {
    let t = std::sync::Arc::new(table());
    let pd = t.create_pd().unwrap();
    let buf = Buffer::new(PAGE_SIZE);
    let (mr, _) = regular(&t, pd, &buf, MrFlags::ALLOW_REMOTE_WRITE);
    let a = buf.address();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checkers: Vec<_> = (0..2)
        .map(|_| {
            let (t, stop) = (t.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut ok = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let tok = t.remote_token(mr).unwrap().0;
                    match t.check_remote(pd, tok, a, 8, Access::RemoteWrite) {
                        Ok(lease) => {
                            lease.write(a, &[1; 8]).unwrap();
                            ok += 1;
                        }
                        Err(e) => assert_eq!(e, TaggedError::InvalidStag),
                    }
                }
                ok
            })
        })
        .collect();
    for _ in 0..2000 {
        t.deregister_mr(mr).unwrap();
        t.register_mr(mr, &buf, 0, PAGE_SIZE, MrFlags::ALLOW_REMOTE_WRITE)
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in checkers {
        c.join().unwrap();
    }
}

// ---- properties ----------------------------------------------------------------------------

const CANARY: u8 = 0xCC;

/// The first index where two byte strings differ (short failure messages).
fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

#[derive(Debug, Clone)]
struct RegionCase {
    buf_len: usize,
    offset: usize,
    len: usize,
    flags: u32,
}

fn region_case() -> impl Strategy<Value = RegionCase> {
    (1usize..3 * PAGE_SIZE)
        .prop_flat_map(|buf_len| (Just(buf_len), 0..buf_len))
        .prop_flat_map(|(buf_len, offset)| {
            (Just(buf_len), Just(offset), 1..=buf_len - offset, 0u32..16)
        })
        .prop_map(|(buf_len, offset, len, flags)| RegionCase {
            buf_len,
            offset,
            len,
            flags,
        })
}

fn access() -> impl Strategy<Value = Access> {
    prop_oneof![
        Just(Access::RemoteRead),
        Just(Access::RemoteWrite),
        Just(Access::ReadSink)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random regular regions and random (to, len) checks agree with a simple model, and a
    /// lease write changes exactly the bytes it names.
    #[test]
    fn remote_checks_match_the_model(
        case in region_case(),
        probes in prop::collection::vec((-40i64..3 * PAGE as i64, 0u64..PAGE + 64, access(), any::<bool>()), 1..12),
        raw_to in any::<u64>(),
        raw_len in any::<u64>(),
    ) {
        let t = table();
        let pd = t.create_pd().unwrap();
        let buf = Buffer::from_slice(&vec![CANARY; case.buf_len]);
        let mr = t.create_mr(pd, false).unwrap();
        let flags = MrFlags::from_bits_retain(case.flags);
        t.register_mr(mr, &buf, case.offset, case.len, flags).unwrap();
        let tok = t.remote_token(mr).unwrap().0;
        let base = buf.address() + case.offset as u64;
        let rlen = case.len as u64;
        let granted = |acc| match acc {
            Access::RemoteRead => flags.grants_remote_read(),
            Access::RemoteWrite => flags.grants_remote_write(),
            Access::ReadSink => flags.grants_local_write() && flags.is_rdma_read_sink(),
        };
        let model = |to: u64, len: u64, acc| -> Result<(), TaggedError> {
            if !granted(acc) { return Err(TaggedError::AccessRights); }
            let end = to.checked_add(len).ok_or(TaggedError::ToWrap)?;
            if to < base || end > base + rlen { return Err(TaggedError::BaseBounds); }
            Ok(())
        };
        let mut expected = buf.to_vec();
        for (delta, len, acc, write) in probes {
            let to = base.wrapping_add_signed(delta);
            let got = t.check_remote(pd, tok, to, len, acc);
            prop_assert_eq!(got.as_ref().map(|_| ()).map_err(|e| *e), model(to, len, acc));
            if let (Ok(lease), true) = (got, write) {
                let data: Vec<u8> = (0..len).map(|i| (i as u8) ^ 0x5A).collect();
                lease.write(to, &data).unwrap();
                let at = (to - buf.address()) as usize;
                expected[at..at + len as usize].copy_from_slice(&data);
                let diff = first_diff(&buf.to_vec(), &expected);
                prop_assert!(diff.is_none(), "buffer differs at {:?}", diff);
                // One byte beyond either end is refused and changes nothing.
                prop_assert!(lease.write(to.wrapping_sub(1), &[0]).is_err() || len > 0);
                prop_assert!(lease.write(to + len, &[0]).is_err());
                prop_assert!(first_diff(&buf.to_vec(), &expected).is_none());
            }
        }
        // Arbitrary (to, len): never a panic, same answer as the model.
        prop_assert_eq!(
            t.check_remote(pd, tok, raw_to, raw_len, Access::RemoteRead).map(|_| ()),
            model(raw_to, raw_len, Access::RemoteRead)
        );
        // Bytes outside the registered range are never written.
        let v = buf.to_vec();
        prop_assert!(v[..case.offset].iter().all(|&b| b == CANARY));
        prop_assert!(v[case.offset + case.len..].iter().all(|&b| b == CANARY));
    }

    /// Fast registrations over random (non-contiguous, multi-buffer) page lists: every byte
    /// written through a lease lands where the page list says, nothing else changes.
    #[test]
    fn page_list_writes_land_in_the_right_pages(
        picks in prop::collection::vec((0usize..2, 0usize..4), 1..6),
        fbo in 0u32..PAGE as u32,
        tail in 0u64..PAGE,
        n in 0u64..1000,
        window in (0u64..1_000_000, 0u64..10_000),
    ) {
        let t = table();
        let pd = t.create_pd().unwrap();
        let bufs = [
            Buffer::from_slice(&vec![CANARY; 4 * PAGE_SIZE]),
            Buffer::from_slice(&vec![CANARY; 4 * PAGE_SIZE]),
        ];
        let lams: Vec<_> = bufs.iter().map(|b| pages_of(&t, b)).collect();
        let pages: Vec<LogicalAddress> = picks.iter().map(|&(b, p)| lams[b].1[p]).collect();
        let fbo64 = u64::from(fbo);
        let max = picks.len() as u64 * PAGE - fbo64;
        let len = max.saturating_sub(tail).max(1);
        let base = (n + 1) * PAGE + fbo64;
        let mr = frmr(&t, pd, 8, true);
        let tok = t.fast_register(mr, &pages, fbo, len, base, RW).unwrap();
        // The model: region byte r is byte (fbo + r) % PAGE of page picks[(fbo + r) / PAGE].
        let mut expected: Vec<Vec<u8>> = bufs.iter().map(Buffer::to_vec).collect();
        let (start, wlen) = (window.0 % len, window.1);
        let wlen = wlen.min(len - start);
        let to = base + start;
        let lease = t.check_remote(pd, tok.0, to, wlen, Access::RemoteWrite).unwrap();
        let data: Vec<u8> = (0..wlen).map(|i| (i % 13) as u8).collect();
        lease.write(to, &data).unwrap();
        for (i, &byte) in data.iter().enumerate() {
            let r = start + i as u64 + fbo64;
            let (b, p) = picks[(r / PAGE) as usize];
            expected[b][p * PAGE_SIZE + (r % PAGE) as usize] = byte;
        }
        for (b, buf) in bufs.iter().enumerate() {
            let diff = first_diff(&buf.to_vec(), &expected[b]);
            prop_assert!(diff.is_none(), "buffer {} differs at {:?}", b, diff);
        }
        // Reading back gives what the pages now hold (a page listed twice holds the later write).
        let model_back: Vec<u8> = (0..wlen)
            .map(|i| {
                let r = start + i + fbo64;
                let (b, p) = picks[(r / PAGE) as usize];
                expected[b][p * PAGE_SIZE + (r % PAGE) as usize]
            })
            .collect();
        let mut back = vec![0u8; wlen as usize];
        lease.read(to, &mut back).unwrap();
        let diff = first_diff(&back, &model_back);
        prop_assert!(diff.is_none(), "read-back differs at {:?}", diff);
        prop_assert!(lease.write(to + wlen, &[1]).is_err());
        prop_assert_eq!(
            t.check_remote(pd, tok.0, base + len, 1, Access::RemoteWrite).unwrap_err(),
            TaggedError::BaseBounds
        );
    }
}

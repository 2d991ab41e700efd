//! Placement through a NetDMA channel: the soft RNIC as a NetDMA client.
//!
//! Inbound payloads reach the engine in a staging buffer (the deframer's) and are copied into
//! the registered region or receive buffer they belong to. [`Placement::Cpu`] copies on the
//! progress thread; [`Placement::NetDma`] hands each copy to a NetDMA channel of a
//! [`netdma::CpuEngine`] and waits for it, the way a hardware RNIC would use a DMA engine. Both
//! paths can be measured against each other (`cargo bench -p netdirect-soft --bench placement`).
//!
//! The channel's buffers wrap the two byte ranges of one copy for the duration of that copy
//! only: the destination under its [`netdirect::Buffer`] write lock, the source while it is
//! borrowed. That is the one `unsafe` spot of this crate; the contract is below.
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::time::Duration;

use netdirect_types::Status;
use netdma::{
    Chain, Channel, ChannelParameters, ControlFlags, CpuEngine, DmaBuffer, EngineConfig, NetDma,
};

/// How the RNIC copies inbound payloads into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// On the progress thread (the default; fastest on a CPU-only machine).
    #[default]
    Cpu,
    /// Through a NetDMA channel (a CPU engine worker), one descriptor per copy.
    NetDma,
}

/// A NetDMA channel owned by one adapter's progress thread.
pub(crate) struct DmaPlacer {
    channel: Channel,
    // Dropped after the channel: the engine and the interface it registered with.
    _engine: CpuEngine,
    _netdma: NetDma,
}

impl std::fmt::Debug for DmaPlacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DmaPlacer")
    }
}

impl DmaPlacer {
    pub(crate) fn new() -> Result<DmaPlacer, Status> {
        let netdma = NetDma::new();
        let engine = CpuEngine::register(&netdma, EngineConfig::new(1))?;
        let channel = netdma.allocate_channel(engine.id(), ChannelParameters::default())?;
        Ok(DmaPlacer {
            channel,
            _engine: engine,
            _netdma: netdma,
        })
    }

    /// Copies `src` into `dst` (same length) through the channel and waits for it.
    pub(crate) fn copy(&self, src: &[u8], dst: &mut [u8]) -> Result<(), Status> {
        debug_assert_eq!(src.len(), dst.len());
        let len = u32::try_from(src.len()).map_err(|_| Status::INVALID_PARAMETER)?;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: (the `DmaBuffer::from_raw_parts` contract) both pointers come from live
        // references valid for `len` bytes for the whole of this call, and the buffers are used
        // only inside it: the chain is waited for below, and NetDMA releases a submission's
        // leases before it reports completion, so no engine access to either range happens after
        // this function returns (an early return on error happens only when the chain was never
        // submitted or has halted). `dst` is a unique borrow (the caller holds the region
        // buffer's write lock), so nothing else touches it. `src` is a shared borrow that is
        // only ever read: it is the chain's source and never a destination.
        let (s, d) = unsafe {
            (
                DmaBuffer::from_raw_parts(
                    NonNull::new(src.as_ptr().cast_mut()).ok_or(Status::INVALID_PARAMETER)?,
                    src.len(),
                    Box::new(()),
                ),
                DmaBuffer::from_raw_parts(
                    NonNull::new(dst.as_mut_ptr()).ok_or(Status::INVALID_PARAMETER)?,
                    dst.len(),
                    Box::new(()),
                ),
            )
        };
        let mut chain = Chain::new();
        chain.copy(&s, 0, &d, 0, len, ControlFlags::STATUS_UPDATE_ON_COMPLETION);
        let submission = self.channel.start(chain)?;
        let done = self
            .channel
            .wait(&submission, Some(Duration::from_secs(10)));
        if done.0 != 0 {
            // Halted or timed out: make sure nothing still runs on these ranges.
            let _ = self.channel.abort();
            let _ = self.channel.reset();
            return Err(done);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_through_the_channel() {
        let p = DmaPlacer::new().unwrap();
        let src: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut dst = vec![0u8; 100_002];
        p.copy(&src, &mut dst[1..100_001]).unwrap();
        assert_eq!(dst[1..100_001], src[..]);
        assert_eq!(
            (dst[0], dst[100_001]),
            (0, 0),
            "bytes outside the range were touched"
        );
        p.copy(&[], &mut []).unwrap();
    }
}

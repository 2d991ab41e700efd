//! A fake host's registered regions: what the engine tests (`netdirect-proto`) and the
//! transport tests (`netdirect-soft`) give their [`Host`](netdirect_proto::stream::Host) to
//! answer the stream's tagged-access checks.

use netdirect_proto::stream::{Access, TaggedError};

/// A region registered under an STag: its bytes from `base`, its remote rights, and whether
/// the STag is still valid (not invalidated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// The tagged offset of `data[0]`.
    pub base: u64,
    /// The region's bytes.
    pub data: Vec<u8>,
    /// Remote writes allowed.
    pub remote_write: bool,
    /// Remote reads allowed.
    pub remote_read: bool,
    /// May be the sink of our reads.
    pub read_sink: bool,
    /// The STag is valid (not invalidated).
    pub valid: bool,
}

impl Region {
    /// A valid region at `base` holding `data`, with every right.
    pub fn new(base: u64, data: Vec<u8>) -> Region {
        Region {
            base,
            data,
            remote_write: true,
            remote_read: true,
            read_sink: true,
            valid: true,
        }
    }

    /// Whether `access` is allowed here.
    pub fn allows(&self, access: Access) -> bool {
        match access {
            Access::RemoteWrite => self.remote_write,
            Access::RemoteRead => self.remote_read,
            Access::ReadSink => self.read_sink,
        }
    }
}

/// The host's answer to a tagged access of `len` octets at `to` through `stag`, whose region
/// (if any) is `region`: an unknown or invalidated STag, then the rights, then a wrapping
/// offset, then the bounds, as the NDK provider checks them. The lease is the STag.
pub fn tagged(
    region: Option<&Region>,
    stag: u32,
    to: u64,
    len: u64,
    access: Access,
) -> Result<u32, TaggedError> {
    let r = region.filter(|r| r.valid).ok_or(TaggedError::InvalidStag)?;
    if !r.allows(access) {
        return Err(TaggedError::AccessRights);
    }
    let end = to.checked_add(len).ok_or(TaggedError::ToWrap)?;
    if to < r.base || end > r.base + r.data.len() as u64 {
        return Err(TaggedError::BaseBounds);
    }
    Ok(stag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_in_order() {
        let mut r = Region::new(100, vec![0; 10]);
        assert_eq!(tagged(Some(&r), 7, 100, 10, Access::RemoteWrite), Ok(7));
        assert_eq!(
            tagged(None, 7, 100, 1, Access::RemoteRead),
            Err(TaggedError::InvalidStag)
        );
        assert_eq!(
            tagged(Some(&r), 7, 105, 6, Access::ReadSink),
            Err(TaggedError::BaseBounds)
        );
        assert_eq!(
            tagged(Some(&r), 7, u64::MAX, 2, Access::ReadSink),
            Err(TaggedError::ToWrap)
        );
        r.remote_read = false;
        assert_eq!(
            tagged(Some(&r), 7, u64::MAX, 2, Access::RemoteRead),
            Err(TaggedError::AccessRights)
        );
        r.valid = false;
        assert_eq!(
            tagged(Some(&r), 7, 100, 1, Access::RemoteWrite),
            Err(TaggedError::InvalidStag)
        );
    }
}

//! The `provider_error_code` of an error completion, in words.
//!
//! An error completion caused by a Terminate carries it packed as `0xOOLLTTCC`: origin `01` when
//! we sent it, `02` when the peer did, then layer, error type and error code of RFC 5040 §4.8
//! ([`crate::stream::TermCode::provider_error`] packs it). [`ProviderError`] unpacks it for
//! people: `nd` prints it wherever a failed completion is shown, and a consumer can log it.

use std::fmt;

use netdirect_wire::terminate::TermError;

/// A completion's `provider_error_code`, decoded.
///
/// ```
/// use netdirect_proto::ProviderError;
/// let e = ProviderError(0x0101_0202);
/// assert_eq!(e.terminate_sent(), Some(true));
/// assert_eq!(
///     e.to_string(),
///     "we sent a Terminate: DDP untagged buffer error: no receive posted for a Send (no buffer) \
///      (layer 1, type 2, code 0x02; provider code 0x01010202)"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProviderError(pub u32);

impl ProviderError {
    /// `Some(true)` when we sent the Terminate, `Some(false)` when the peer did, `None` when the
    /// code is not a Terminate (0, or another provider's diagnostic).
    pub fn terminate_sent(self) -> Option<bool> {
        match self.0 >> 24 {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }

    /// The Terminate's named error, when the code carries one the RFC tables name.
    pub fn term_error(self) -> Option<TermError> {
        self.terminate_sent()?;
        let [_, layer, etype, code] = self.0.to_be_bytes();
        TermError::from_parts(layer, etype, code)
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [_, layer, etype, code] = self.0.to_be_bytes();
        let who = match self.terminate_sent() {
            Some(true) => "we sent a Terminate",
            Some(false) => "the peer sent a Terminate",
            None if self.0 == 0 => return f.write_str("no provider error"),
            None => return write!(f, "provider code {:#010x}", self.0),
        };
        let what = self.term_error().map_or(
            "an error the RFC tables do not name",
            TermError::description,
        );
        write!(
            f,
            "{who}: {what} (layer {layer}, type {etype}, code {code:#04x}; provider code {:#010x})",
            self.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_error_round_trips_both_origins() {
        for e in TermError::ALL {
            let (l, t, c) = e.parts();
            let code = crate::stream::TermCode {
                layer: l as u8,
                error_type: t,
                error_code: c,
            };
            for sent in [true, false] {
                let p = ProviderError(code.provider_error(sent));
                assert_eq!(p.terminate_sent(), Some(sent));
                assert_eq!(p.term_error(), Some(*e));
                assert!(p.to_string().contains(e.description()), "{p}");
            }
        }
        assert_eq!(ProviderError(0).to_string(), "no provider error");
        assert_eq!(ProviderError(0x0500_0001).term_error(), None);
    }
}

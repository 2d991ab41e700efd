//! `NDK_RESULT_EX` and `NDK_RESULT`: completion queue entries.

use crate::{OperationType, RemoteToken, Status};

/// `NDK_RESULT_EX` (spec §5.2): one completion queue entry.
///
/// Contexts are opaque `u64`s (the NDK's `PVOID`s): the provider stores and echoes them, never
/// interprets them.
///
/// ```
/// use netdirect_types::{Completion, OperationType, RemoteToken, Status};
///
/// let c = Completion {
///     status: Status::SUCCESS,
///     bytes_transferred: 64,
///     qp_context: 1,
///     request_context: 7,
///     op_type: OperationType::ReceiveAndInvalidate,
///     provider_error_code: 0,
///     type_specific: 0x1234,
/// };
/// assert_eq!(c.invalidated_token(), Some(RemoteToken(0x1234)));
/// let basic = c.to_basic();
/// assert_eq!((basic.status, basic.bytes_transferred, basic.request_context), (Status::SUCCESS, 64, 7));
/// ```
#[doc(alias = "NDK_RESULT_EX")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Completion {
    /// How the request ended: [`Status::SUCCESS`], [`Status::CANCELLED`] when flushed, or an error.
    #[doc(alias = "Status")]
    pub status: Status,
    /// Bytes placed. Defined only for receive completions ([`OperationType::is_receive`]);
    /// undefined for every other type.
    #[doc(alias = "BytesTransferred")]
    pub bytes_transferred: u32,
    /// The context given when the QP was created (`NdkCreateQp` or `NdkCreateQpWithSrq`).
    #[doc(alias = "QPContext")]
    pub qp_context: u64,
    /// The context given when the request was posted.
    #[doc(alias = "RequestContext")]
    pub request_context: u64,
    /// The kind of request completed. Send-and-invalidate reports [`OperationType::Send`] on the
    /// sender.
    #[doc(alias = "Type")]
    pub op_type: OperationType,
    /// [2.1] 0 when `status` is a success; on failure 0 means "not provided", anything else is a
    /// provider diagnostic.
    #[doc(alias = "ProviderErrorCode")]
    pub provider_error_code: u32,
    /// For [`OperationType::ReceiveAndInvalidate`]: the 32-bit token invalidated before this
    /// completion was reported. Undefined otherwise.
    #[doc(alias = "TypeSpecificCompletionOutput")]
    pub type_specific: u64,
}

impl Completion {
    /// An all-zero successful entry, to size the buffers `NdkGetCqResultsEx` fills.
    pub const EMPTY: Completion = Completion {
        status: Status::SUCCESS,
        bytes_transferred: 0,
        qp_context: 0,
        request_context: 0,
        op_type: OperationType::Send,
        provider_error_code: 0,
        type_specific: 0,
    };

    /// The `NDK_RESULT` view of this entry (what `NdkGetCqResults` returns).
    #[doc(alias = "NDK_RESULT")]
    #[inline]
    pub const fn to_basic(&self) -> BasicCompletion {
        BasicCompletion {
            status: self.status,
            bytes_transferred: self.bytes_transferred,
            qp_context: self.qp_context,
            request_context: self.request_context,
        }
    }

    /// The token a receive-and-invalidate invalidated, or `None` for any other operation type.
    ///
    /// The token is truncated to 32 bits: `TypeSpecificCompletionOutput` is pointer-sized but
    /// carries a `UINT32` token.
    #[inline]
    pub const fn invalidated_token(&self) -> Option<RemoteToken> {
        match self.op_type {
            OperationType::ReceiveAndInvalidate => Some(RemoteToken(self.type_specific as u32)),
            _ => None,
        }
    }
}

/// `NDK_RESULT` (spec §5.2): the pre-1.2 completion entry, without type and extras.
#[doc(alias = "NDK_RESULT")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BasicCompletion {
    /// How the request ended.
    #[doc(alias = "Status")]
    pub status: Status,
    /// Bytes placed; defined only for receive completions.
    #[doc(alias = "BytesTransferred")]
    pub bytes_transferred: u32,
    /// The context given when the QP was created.
    #[doc(alias = "QPContext")]
    pub qp_context: u64,
    /// The context given when the request was posted.
    #[doc(alias = "RequestContext")]
    pub request_context: u64,
}

impl From<Completion> for BasicCompletion {
    #[inline]
    fn from(c: Completion) -> Self {
        c.to_basic()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(op_type: OperationType) -> Completion {
        Completion {
            status: Status::CANCELLED,
            bytes_transferred: 3,
            qp_context: 0xAAAA,
            request_context: 0xBBBB,
            op_type,
            provider_error_code: 9,
            type_specific: 0x1_0000_0042,
        }
    }

    #[test]
    fn basic_view_copies_the_common_fields() {
        let b = BasicCompletion::from(completion(OperationType::Read));
        assert_eq!(
            b,
            BasicCompletion {
                status: Status::CANCELLED,
                bytes_transferred: 3,
                qp_context: 0xAAAA,
                request_context: 0xBBBB
            }
        );
    }

    #[test]
    fn invalidated_token_only_for_receive_and_invalidate() {
        assert_eq!(
            completion(OperationType::ReceiveAndInvalidate).invalidated_token(),
            Some(RemoteToken(0x42))
        );
        for op in OperationType::ALL {
            if *op != OperationType::ReceiveAndInvalidate {
                assert_eq!(completion(*op).invalidated_token(), None, "{op}");
            }
        }
    }
}

//! Consumer callbacks (NDK §4) the provider calls. All run on a provider thread and must not
//! block; the provider never calls two notifications of one CQ or SRQ at once.
//!
//! The completion callbacks (`NdkCreateCompletion`, `NdkRequestCompletion`,
//! `NdkCloseCompletion`) are [`crate::Request::on_complete`].

use std::sync::Arc;

use netdirect_types::Status;

use crate::Connector;

/// CQ notification: `STATUS_SUCCESS` when an arm is satisfied, `STATUS_BUFFER_OVERFLOW` on
/// overrun and `STATUS_INTERNAL_ERROR` on a fatal error (then the CQ and its QPs are unusable).
#[doc(alias = "NdkCqNotificationCallback")]
#[doc(alias = "NDK_FN_CQ_NOTIFICATION_CALLBACK")]
pub type CqNotification = Arc<dyn Fn(Status) + Send + Sync>;

/// SRQ notification: `STATUS_SUCCESS` when the posted receives fell below the threshold,
/// `STATUS_INTERNAL_ERROR` on a fatal error.
#[doc(alias = "NdkSrqNotificationCallback")]
#[doc(alias = "NDK_FN_SRQ_NOTIFICATION_CALLBACK")]
pub type SrqNotification = Arc<dyn Fn(Status) + Send + Sync>;

/// Connect event: one incoming connection request, as a new connector the consumer accepts or
/// rejects and eventually closes.
#[doc(alias = "NdkConnectEventCallback")]
#[doc(alias = "NDK_FN_CONNECT_EVENT_CALLBACK")]
pub type ConnectEvent = Arc<dyn Fn(Box<dyn Connector>) + Send + Sync>;

/// Disconnect event: the peer disconnected (at most once per connection). The provider does not
/// flush the QP because of it.
#[doc(alias = "NdkDisconnectEventCallback")]
#[doc(alias = "NDK_FN_DISCONNECT_EVENT_CALLBACK")]
pub type DisconnectEvent = Box<dyn FnOnce() + Send>;

/// Disconnect event with the provider's reason (0: none given) [2.1].
#[doc(alias = "NdkDisconnectEventCallbackEx")]
#[doc(alias = "NDK_FN_DISCONNECT_EVENT_CALLBACK_EX")]
pub type DisconnectEventEx = Box<dyn FnOnce(u32) + Send>;

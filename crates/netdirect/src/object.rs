//! What every NDK object has: its type, and `NdkQueryExtension`.

use std::any::Any;
use std::sync::Arc;

use netdirect_types::{ObjectType, Status, Version};

/// A GUID naming an extension interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

/// A vendor extension interface (`NDK_EXTENSION_INTERFACE`): an opaque dispatch table.
#[doc(alias = "NDK_EXTENSION_INTERFACE")]
#[derive(Clone)]
pub struct Extension {
    /// The extension's dispatch table, downcast by the consumer that asked for it.
    pub dispatch: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Extension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Extension")
    }
}

/// The part every NDK object shares (`NDK_OBJECT_HEADER` and the common dispatch slots).
pub trait Object: Any + Send + Sync {
    /// The object's type (`NDK_OBJECT_HEADER.ObjectType`).
    fn object_type(&self) -> ObjectType;

    /// The provider's concrete object, for providers that must recognise their own objects
    /// when a consumer passes them back (a PD to create a QP, an MR to bind a window).
    fn as_any(&self) -> &dyn Any;

    /// Looks up a vendor extension interface. The NDK defines none; netdirect defines the
    /// counters ([`crate::counters::COUNTERS_GUID`]). The default answers
    /// `STATUS_NOT_SUPPORTED`, as a minimal provider must.
    #[doc(alias = "NdkQueryExtension")]
    #[doc(alias = "NDK_FN_QUERY_EXTENSION_INTERFACE")]
    fn query_extension(&self, id: &Guid, version: Version) -> Result<Extension, Status> {
        let _ = (id, version);
        Err(Status::NOT_SUPPORTED)
    }
}

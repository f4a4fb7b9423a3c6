//! What a handler knows about the connection its request came on.
//!
//! Why a leaf module: the server creates one per connection and the handlers (the `Refuse` fault
//! in [`crate::contract`], `/_dev/down` in [`crate::admin`]) read it; with the type here neither
//! side depends on the other for it.

use std::sync::Arc;

use tokio::sync::Notify;

/// Per-connection context handed to handlers as a request extension.
#[derive(Clone)]
pub(crate) struct ConnCtx {
    /// Connection number (unique per service).
    pub id: u64,
    /// Notified by the `Refuse` fault: the connection is dropped without a response.
    pub kill: Arc<Notify>,
}

//! Which Kong release line the emulator imitates, and the defaults that follow from it.
//!
//! Why a leaf module: the version changes behaviour everywhere in the client (msgid counters,
//! `__seq__`, pool size, instance reset, which PDK functions exist), so every layer reads it and
//! none of them should have to depend on the worker ([`crate::Kong`]) to do so.

/// Which Kong release line to imitate where they differ on the wire or in the PDK.
/// Ordered by release, so "added in" checks read `version >= KongVersion::V3_9`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum KongVersion {
    /// 3.4 LTS: one msgid counter per plugin server, `__seq__` from 0, no `__ws_id`,
    /// pool size 30, `set_header` rejects arrays, stale-instance reset drops one entry.
    V3_4,
    /// 3.9: one msgid counter per plugin, `__seq__` from 1, `__ws_id`, pool size 256,
    /// stale-instance reset drops every instance of the plugin.
    #[default]
    V3_9,
}

impl KongVersion {
    /// `lua_socket_pool_size` default of that version.
    pub fn default_pool_size(self) -> usize {
        match self {
            KongVersion::V3_4 => 30,
            KongVersion::V3_9 => 256,
        }
    }
}

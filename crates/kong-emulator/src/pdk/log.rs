//! `kong.log.<level>(...)`: every argument through `tostring`, concatenated.
//!
//! Tables are rendered as JSON after `table: ` (real Lua prints an address, which would be
//! useless in assertions).

use super::lua::{nil, Args, PdkContext, PdkOutcome};
use crate::json::tostring;
use crate::request::LogSource;

const LEVELS: &[&str] = &["emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"];

/// Returns `None` (unknown PDK method) for anything that is not a log level.
pub(super) fn write(ctx: &mut PdkContext<'_>, level: &str, args: &Args) -> Option<PdkOutcome> {
    if !LEVELS.contains(&level) {
        return None;
    }
    let mut message = Vec::new();
    for arg in args.all() {
        message.extend_from_slice(&tostring(arg));
    }
    ctx.req.log(LogSource::Plugin, level, String::from_utf8_lossy(&message));
    nil()
}

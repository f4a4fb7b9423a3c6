//! `kong.ctx.shared.get/set` and `kong.nginx.get_ctx/set_ctx`: Kong's overrides that read
//! and write Lua tables (`kong.ctx.shared`, `ngx.ctx`) living for the request.
//!
//! Values round-trip as Lua values: what the server stores comes back re-packed by Lua's
//! rules (an empty table as `[]`, nil entries gone). A nil key raises ("table index is nil").

use super::lua::{nil, throw, Args, PdkContext, PdkOutcome};
use crate::wire::StepData;

pub(super) fn shared_get(ctx: &mut PdkContext<'_>, args: &Args) -> Option<PdkOutcome> {
    let value = ctx.req.ctx_shared_raw_get(args.get(0)).cloned();
    Some(PdkOutcome::Return(value.map(StepData::from).unwrap_or(StepData::Absent)))
}

pub(super) fn shared_set(ctx: &mut PdkContext<'_>, args: &mut Args) -> Option<PdkOutcome> {
    if args.get(0).is_nil() {
        return throw("table index is nil");
    }
    let (key, value) = (args.take(0), args.take(1));
    ctx.req.ctx_shared_raw_set(key, value);
    nil()
}

pub(super) fn ngx_get(ctx: &mut PdkContext<'_>, args: &Args) -> Option<PdkOutcome> {
    let value = ctx.req.ngx_ctx_get(args.get(0)).cloned();
    Some(PdkOutcome::Return(value.map(StepData::from).unwrap_or(StepData::Absent)))
}

pub(super) fn ngx_set(ctx: &mut PdkContext<'_>, args: &mut Args) -> Option<PdkOutcome> {
    if args.get(0).is_nil() {
        return throw("table index is nil");
    }
    let (key, value) = (args.take(0), args.take(1));
    ctx.req.ngx_ctx_set(key, value);
    nil()
}

//! `kong.client.authenticate`: the only client function with side effects.
//!
//! Kong stores the consumer and credential in `ngx.ctx` for later plugins (acl, logging,
//! rate limiting by consumer). It raises when both are nil or when either is not a table.

use super::lua::{lua_type, throw, Args, PdkContext, PdkOutcome};
use crate::wire::StepData;
use rmpv::Value;

pub(super) fn authenticate(ctx: &mut PdkContext<'_>, args: &mut Args) -> Option<PdkOutcome> {
    let (consumer, credential) = (args.get(0), args.get(1));
    if consumer.is_nil() && credential.is_nil() {
        return throw("either credential or consumer must be provided");
    }
    if !consumer.is_nil() && !is_table(consumer) {
        return throw(format!("consumer must be a table or nil (got {})", lua_type(consumer)));
    }
    if !credential.is_nil() && !is_table(credential) {
        return throw(format!("credential must be a table or nil (got {})", lua_type(credential)));
    }
    let keep = |v: Value| (!v.is_nil()).then_some(v);
    let (consumer, credential) = (args.take(0), args.take(1));
    ctx.req.authenticate(keep(consumer), keep(credential));
    Some(PdkOutcome::Return(StepData::Absent))
}

fn is_table(v: &Value) -> bool {
    matches!(v, Value::Array(_) | Value::Map(_))
}

//! The PDK functions Kong executes on behalf of the plugin server.
//!
//! Kong resolves the `Method` of a step result to a Lua function, calls it with the
//! unpacked `Args` and sends the first return value back (docs/protocol.md#step-methods, docs/protocol.md#pdk-results). This
//! module mirrors that bridge: dispatch by name and the choice of the `plugin.Step*` method,
//! which depends on the method *name* only. Argument spreading and the Lua outcomes (a value,
//! `nil`, a thrown error, or a terminal `kong.response.exit/error`) are in `lua.rs`, which every
//! function module (`request.rs`, `service.rs`, …) uses; none of them uses this dispatcher.

mod client;
mod ctx;
mod log;
mod lua;
mod nginx;
mod request;
mod response;
mod service;

use crate::request::LogSource;
use crate::version::KongVersion;
use crate::wire::StepData;
use lua::Args;
use rmpv::Value;

pub use lua::Exit;
pub(crate) use lua::{PdkContext, PdkOutcome};

/// PDK functions that appeared after Kong 3.4, with the first release line that has them
/// (from the `@function` tags of Kong's `kong/pdk` sources). On an older Kong the function
/// does not exist, so the name does not resolve: Kong logs "could not find pdk method" and
/// answers the Step with nil, exactly as for a misspelt name. A plugin that relies on one of
/// these silently does nothing there, which is the class of bug this table makes visible.
const ADDED_AFTER_3_4: &[(&str, KongVersion)] = &[("kong.service.request.clear_query_arg", KongVersion::V3_9)];

/// Whether the emulated Kong has `method` at all.
fn exists_in(method: &str, version: KongVersion) -> bool {
    ADDED_AFTER_3_4.iter().all(|(name, since)| *name != method || version >= *since)
}

/// Executes `method` with the step result's raw `Args`.
pub(crate) fn call(ctx: &mut PdkContext<'_>, method: &str, args: Option<Value>) -> PdkOutcome {
    let mut args = Args::spread(args);
    let requested = method;
    let method = if exists_in(method, ctx.version) { method } else { "" };
    let outcome = match method {
        "kong.request.get_header" => request::get_header(ctx, &args),
        "kong.request.get_headers" => request::get_headers(ctx, &args),
        "kong.request.get_query_arg" => request::get_query_arg(ctx, &args),
        "kong.request.get_query" => request::get_query(ctx, &args),
        "kong.request.get_method" => ret_str(ctx.req.method()),
        "kong.request.get_path" => ret_str(ctx.req.path()),
        "kong.request.get_raw_query" => ret_str(ctx.req.raw_query()),
        "kong.request.get_scheme" => ret_str(ctx.req.scheme()),
        "kong.request.get_host" => request::get_host(ctx),
        "kong.request.get_raw_body" => Some(PdkOutcome::Return(StepData::Raw(ctx.req.body().to_vec()))),
        "kong.client.get_ip" => ret_str(ctx.req.client_ip()),
        "kong.client.get_forwarded_ip" => ret_str(ctx.req.forwarded_ip()),
        "kong.client.authenticate" => client::authenticate(ctx, &mut args),
        "kong.client.get_consumer" => ret_opt(ctx.req.consumer().cloned()),
        "kong.client.get_credential" => ret_opt(ctx.req.credential().cloned()),
        "kong.service.request.set_header" => service::set_header(ctx, &mut args),
        "kong.service.request.set_headers" => service::set_headers(ctx, &mut args),
        "kong.service.request.add_header" => service::add_header(ctx, &mut args),
        "kong.service.request.clear_header" => service::clear_header(ctx, &args),
        "kong.service.request.clear_query_arg" => service::clear_query_arg(ctx, &args),
        "kong.service.request.set_raw_query" => service::set_raw_query(ctx, &args),
        "kong.response.exit" => response::exit(ctx, &args),
        "kong.response.error" => response::error(ctx, &args),
        "kong.response.set_header" => response::set_header(ctx, &args),
        "kong.response.add_header" => response::add_header(ctx, &args),
        "kong.ctx.shared.get" => ctx::shared_get(ctx, &args),
        "kong.ctx.shared.set" => ctx::shared_set(ctx, &mut args),
        "kong.nginx.get_ctx" => ctx::ngx_get(ctx, &args),
        "kong.nginx.set_ctx" => ctx::ngx_set(ctx, &mut args),
        "kong.nginx.get_var" => nginx::get_var(ctx, &args),
        "kong.nginx.req_start_time" => Some(PdkOutcome::Return(Value::F64(ctx.req.start_time()).into())),
        "kong.router.get_route" => ret_opt(ctx.req.route().cloned()),
        "kong.router.get_service" => ret_opt(ctx.req.service().cloned()),
        "kong.node.get_id" => ret_str(ctx.node_id),
        m if m.starts_with("kong.log.") => log::write(ctx, &m["kong.log.".len()..], &args),
        _ => None,
    };
    outcome.unwrap_or_else(|| {
        // `call_pdk_method`: an unresolvable name is logged and answered with nil.
        ctx.req.log(LogSource::Kong, "err", format!("could not find pdk method: {requested}"));
        PdkOutcome::Return(StepData::Absent)
    })
}

/// The Step method Kong answers a PDK call with (`get_step_method`, 3.x).
pub fn step_method(pdk_method: &str) -> &'static str {
    match pdk_method {
        "kong.client.get_credential" | "kong.client.authenticate" => "plugin.StepCredential",
        "kong.client.load_consumer" | "kong.client.get_consumer" => "plugin.StepConsumer",
        "kong.node.get_memory_stats" => "plugin.StepMemoryStats",
        "kong.router.get_route" => "plugin.StepRoute",
        "kong.router.get_service" => "plugin.StepService",
        "kong.request.get_query"
        | "kong.request.get_headers"
        | "kong.response.get_headers"
        | "kong.service.response.get_headers" => "plugin.StepMultiMap",
        _ => "plugin.Step",
    }
}

fn ret_str(s: &str) -> Option<PdkOutcome> {
    Some(PdkOutcome::Return(StepData::Value(Value::from(s))))
}

fn ret_opt(v: Option<Value>) -> Option<PdkOutcome> {
    Some(PdkOutcome::Return(v.map(StepData::from).unwrap_or(StepData::Absent)))
}

//! ⑨ The PDK handle a plugin uses to call Kong, typed and async; plugins never see msgpack.
//!
//! Every call costs a round trip through Kong's Lua (design.md §6), which dominates the
//! price of a request, so the API offers the batch forms (`get_headers`, `set_headers`) and
//! plugins are expected to use as few calls as possible.
//!
//! A call is left in the event's [`Mailbox`] as an [`Outgoing`] and the plugin's future
//! suspends. Whoever is serving the event's current RPC (HandleEvent, then each Step, on
//! whichever pooled connection Kong used) polls that future, finds the call and sends it
//! to Kong as the RPC's result; Kong's answer comes back with the next Step, goes into the
//! mailbox, and that Step polls the future again. No task, channel or wake-up stands
//! between a Step and the plugin code it resumes (see [`crate::event`] for why).
//! `kong.response.exit`/`error` are terminal: Kong never answers them (§5.4), so the handle
//! refuses any call after them.

pub mod client;
pub mod ctx;
pub mod log;
pub mod request;
pub mod response;
pub mod service;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use rmpv::Value;

/// Kong's answer to one PDK call: the value (`None` = Lua nil), or the error Kong 2.8 reports
/// with `plugin.StepError`.
pub type StepReply = Result<Option<Value>, KongError>;

/// A PDK function that raised in Kong (`plugin.StepError`), with Kong's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KongError {
    pub message: String,
}

/// A PDK call on its way from the plugin to Kong.
#[derive(Debug)]
pub enum Outgoing {
    /// A call whose result the plugin awaits.
    Call { method: Cow<'static, str>, args: Vec<Value> },
    /// `kong.response.exit` / `error`: Kong runs it and never talks about the event again.
    Terminal { method: Cow<'static, str>, args: Vec<Value> },
}

/// Where an event's future and the RPCs that drive it meet: the call the plugin wants sent,
/// and Kong's answer to it. Each side takes what the other left, so a slot is never read
/// twice.
#[derive(Debug, Default)]
pub struct Mailbox {
    outgoing: Option<Outgoing>,
    reply: Option<StepReply>,
}

impl Mailbox {
    /// The call the plugin left since the last look, if any.
    pub fn take_outgoing(&mut self) -> Option<Outgoing> {
        self.outgoing.take()
    }

    /// Kong's answer to the pending call; the next poll of the event's future reads it.
    pub fn put_reply(&mut self, reply: StepReply) {
        self.reply = Some(reply);
    }
}

pub type SharedMailbox = Arc<Mutex<Mailbox>>;

#[derive(Debug, thiserror::Error)]
pub enum PdkError {
    #[error("{method} failed in Kong: {source}")]
    Kong { method: Cow<'static, str>, source: KongError },
    #[error("{method} returned {found}, expected {expected}")]
    UnexpectedType { method: &'static str, expected: &'static str, found: String },
    #[error("the event already ended with kong.response.exit/error")]
    EventEnded,
}

/// One event's connection to Kong. Owned by the event's future.
pub struct Pdk {
    mailbox: SharedMailbox,
    /// A terminal call was sent.
    ended: bool,
    plugin: &'static str,
    route: Arc<str>,
    outcome: Option<&'static str>,
    cache: Option<&'static str>,
}

impl Pdk {
    pub(crate) fn new(mailbox: SharedMailbox, plugin: &'static str, route: Arc<str>) -> Self {
        Pdk { mailbox, ended: false, plugin, route, outcome: None, cache: None }
    }

    /// Records the event's decision (`ok`, `anonymous` or an error code): counted in the
    /// `decisions` metric and shown in the event's log line.
    pub fn record_outcome(&mut self, code: &'static str) {
        self.outcome = Some(code);
        crate::metrics::global().decision(self.plugin, &self.route, code);
    }

    /// Notes how the credential cache answered (`hit`, `miss`, …) for the event's log line.
    pub fn note_cache(&mut self, status: &'static str) {
        self.cache = Some(status);
    }

    /// `(outcome, cache status)` recorded so far.
    pub fn notes(&self) -> (Option<&'static str>, Option<&'static str>) {
        (self.outcome, self.cache)
    }

    /// True once a terminal call was sent.
    pub fn is_finished(&self) -> bool {
        self.ended
    }

    /// Any PDK call by name, for functions without a typed wrapper.
    pub async fn call(
        &mut self,
        method: impl Into<Cow<'static, str>>,
        args: Vec<Value>,
    ) -> Result<Option<Value>, PdkError> {
        if self.ended {
            return Err(PdkError::EventEnded);
        }
        let method = method.into();
        self.mailbox.lock().outgoing = Some(Outgoing::Call { method: method.clone(), args });
        match (AwaitReply { mailbox: &self.mailbox }).await {
            Ok(value) => Ok(value),
            Err(source) => Err(PdkError::Kong { method, source }),
        }
    }

    /// Sends a terminal call; the event is over afterwards, whatever Kong does with it.
    pub(crate) async fn terminal(&mut self, method: &'static str, args: Vec<Value>) -> Result<(), PdkError> {
        if self.ended {
            return Err(PdkError::EventEnded);
        }
        self.mailbox.lock().outgoing = Some(Outgoing::Terminal { method: method.into(), args });
        self.ended = true;
        Ok(())
    }

    pub fn request(&mut self) -> request::Request<'_> {
        request::Request(self)
    }
    pub fn service_request(&mut self) -> service::ServiceRequest<'_> {
        service::ServiceRequest(self)
    }
    pub fn response(&mut self) -> response::Response<'_> {
        response::Response(self)
    }
    pub fn client(&mut self) -> client::Client<'_> {
        client::Client(self)
    }
    pub fn ctx_shared(&mut self) -> ctx::Shared<'_> {
        ctx::Shared(self)
    }
    pub fn log(&mut self) -> log::Log<'_> {
        log::Log(self)
    }
}

/// Suspends the plugin until the RPC that resumes it has put Kong's answer in the mailbox.
/// It registers no waker on purpose: the Step that delivers the answer polls the event
/// right after, and until then the future sits parked in the registry.
struct AwaitReply<'a> {
    mailbox: &'a SharedMailbox,
}

impl Future for AwaitReply<'_> {
    type Output = StepReply;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<StepReply> {
        match self.mailbox.lock().reply.take() {
            Some(reply) => Poll::Ready(reply),
            None => Poll::Pending,
        }
    }
}

/// Describes a msgpack value's type for [`PdkError::UnexpectedType`].
pub(crate) fn type_name(v: &Value) -> String {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::Integer(_) | Value::F32(_) | Value::F64(_) => "number",
        Value::String(_) => "string",
        Value::Binary(_) => "binary",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Ext(..) => "ext",
    }
    .to_owned()
}

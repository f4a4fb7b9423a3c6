//! ⑨ The PDK handle a plugin uses to call Kong, typed and async; plugins never see msgpack.
//!
//! Every call costs a round trip through Kong's Lua (design.md §6), which dominates the
//! price of a request, so the API offers the batch forms (`get_headers`, `set_headers`) and
//! plugins are expected to use as few calls as possible.
//!
//! A call leaves the event task as an [`Outgoing`] message; dispatch relays it to Kong as the
//! result of the current HandleEvent/Step and parks a oneshot for Kong's answer, which comes
//! back with the next Step (possibly on another connection). `kong.response.exit`/`error` are
//! terminal: Kong never answers them (§5.4), so the handle refuses any call after them.

pub mod client;
pub mod ctx;
pub mod log;
pub mod request;
pub mod response;
pub mod service;

use std::borrow::Cow;
use std::sync::Arc;

use rmpv::Value;
use tokio::sync::{mpsc, oneshot};

/// Kong's answer to one PDK call: the value (`None` = Lua nil), or Kong 2.8's StepError text.
pub type StepReply = Result<Option<Value>, String>;

/// A message from the event task to whoever serves the event's current RPC.
#[derive(Debug)]
pub enum Outgoing {
    /// A PDK call whose result the plugin awaits.
    Call { method: Cow<'static, str>, args: Vec<Value>, reply: oneshot::Sender<StepReply> },
    /// `kong.response.exit` / `error`: Kong runs it and never talks about the event again.
    Terminal { method: Cow<'static, str>, args: Vec<Value> },
}

#[derive(Debug, thiserror::Error)]
pub enum PdkError {
    #[error("{method} failed in Kong: {message}")]
    Kong { method: Cow<'static, str>, message: String },
    #[error("{method} returned {found}, expected {expected}")]
    UnexpectedType { method: &'static str, expected: &'static str, found: String },
    #[error("the event already ended with kong.response.exit/error")]
    EventEnded,
    #[error("Kong abandoned the event (reaped or the server is shutting down)")]
    EventGone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// A terminal call was sent.
    Ended,
    /// Kong is no longer listening (reaped/shutdown): nothing more can be sent.
    Gone,
}

/// One event's connection to Kong. Owned by the event task.
pub struct Pdk {
    tx: mpsc::Sender<Outgoing>,
    state: State,
    plugin: &'static str,
    route: Arc<str>,
    outcome: Option<&'static str>,
    cache: Option<&'static str>,
}

impl Pdk {
    pub(crate) fn new(tx: mpsc::Sender<Outgoing>, plugin: &'static str, route: Arc<str>) -> Self {
        Pdk { tx, state: State::Running, plugin, route, outcome: None, cache: None }
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

    /// True once a terminal call was sent or Kong abandoned the event.
    pub fn is_finished(&self) -> bool {
        self.state != State::Running
    }

    /// Any PDK call by name, for functions without a typed wrapper.
    pub async fn call(
        &mut self,
        method: impl Into<Cow<'static, str>>,
        args: Vec<Value>,
    ) -> Result<Option<Value>, PdkError> {
        match self.state {
            State::Ended => return Err(PdkError::EventEnded),
            State::Gone => return Err(PdkError::EventGone),
            State::Running => {}
        }
        let method = method.into();
        let (reply, answer) = oneshot::channel();
        let msg = Outgoing::Call { method: method.clone(), args, reply };
        if self.tx.send(msg).await.is_err() {
            self.state = State::Gone;
            return Err(PdkError::EventGone);
        }
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(PdkError::Kong { method, message }),
            Err(_) => {
                self.state = State::Gone;
                Err(PdkError::EventGone)
            }
        }
    }

    /// Sends a terminal call; the event is over afterwards, whatever Kong does with it.
    pub(crate) async fn terminal(&mut self, method: &'static str, args: Vec<Value>) -> Result<(), PdkError> {
        match self.state {
            State::Ended => return Err(PdkError::EventEnded),
            State::Gone => return Err(PdkError::EventGone),
            State::Running => {}
        }
        let sent = self.tx.send(Outgoing::Terminal { method: method.into(), args }).await;
        self.state = if sent.is_ok() { State::Ended } else { State::Gone };
        sent.map_err(|_| PdkError::EventGone)
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

//! ⑨ The PDK handle a plugin uses to call Kong, typed and async; plugins never see msgpack.
//!
//! Every call costs a round trip through Kong's Lua (docs/design.md#round-trips-are-the-cost),
//! which dominates the price of a request, so the API offers the batch forms (`get_headers`,
//! `set_headers`) and plugins are expected to use as few calls as possible.
//!
//! A call is left in the event's [`Mailbox`] as an [`Outgoing`] and the plugin's future
//! suspends. Whoever is serving the event's current RPC (HandleEvent, then each Step, on
//! whichever pooled connection Kong used) polls that future, finds the call and sends it
//! to Kong as the RPC's result; Kong's answer comes back with the next Step, goes into the
//! mailbox, and that Step polls the future again. No task, channel or wake-up stands
//! between a Step and the plugin code it resumes (see [`crate::event`] for why).
//! `kong.response.exit`/`error` are terminal: Kong never answers them
//! (docs/protocol.md#terminal-calls), so the handle refuses any call after them.

pub mod client;
pub mod ctx;
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

    /// One PDK call by name with MessagePack arguments: what every typed wrapper in this
    /// module's children builds on. Private to them, so that plugins see only typed calls.
    async fn call(
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

    /// Any PDK call by name with JSON arguments, its result ignored: the test-only script
    /// plugin's generic step (it makes whatever calls a test lists).
    #[cfg(feature = "test-hooks")]
    pub async fn call_json(&mut self, method: &str, args: &[serde_json::Value]) -> Result<(), PdkError> {
        let args = args.iter().map(crate::rpc::value::from_json).collect();
        self.call(method.to_owned(), args).await.map(drop)
    }

    /// Sends a terminal call; the event is over afterwards, whatever Kong does with it.
    async fn terminal(&mut self, method: &'static str, args: Vec<Value>) -> Result<(), PdkError> {
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

/// Runs plugin code against scripted answers from Kong, the way an event runs it, so tests
/// can see the exact calls a typed wrapper (or a plugin) makes.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::VecDeque;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use rmpv::Value;

    use super::{Outgoing, Pdk, SharedMailbox, StepReply};

    pub type Body<T> = Pin<Box<dyn Future<Output = T>>>;

    /// Every call `body` makes, `(method, args)` in order, and its output. Each non-terminal
    /// call gets the next of `answers`.
    pub fn drive<T>(answers: Vec<StepReply>, body: impl FnOnce(Pdk) -> Body<T>) -> (Vec<(String, Vec<Value>)>, T) {
        let mut answers = VecDeque::from(answers);
        let mailbox = SharedMailbox::default();
        let mut future = body(Pdk::new(mailbox.clone(), "test", Arc::from("r1")));
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut calls = Vec::new();
        loop {
            let polled = future.as_mut().poll(&mut cx);
            let outgoing = mailbox.lock().take_outgoing();
            match outgoing {
                Some(Outgoing::Call { method, args }) => {
                    calls.push((method.into_owned(), args));
                    let answer = answers.pop_front().expect("an answer for every call");
                    mailbox.lock().put_reply(answer);
                }
                Some(Outgoing::Terminal { method, args }) => calls.push((method.into_owned(), args)),
                None => assert!(polled.is_ready(), "the body waits for something other than Kong"),
            }
            if let Poll::Ready(output) = polled {
                assert!(answers.is_empty(), "unused answers: {answers:?}");
                return (calls, output);
            }
        }
    }

    /// [`drive`] in JSON terms, for plugin tests (plugins never see MessagePack): each
    /// answer is a JSON value (`null` is Lua nil); each call is `(method, [args…])`.
    pub fn drive_json<T>(
        answers: Vec<serde_json::Value>,
        body: impl FnOnce(Pdk) -> Body<T>,
    ) -> (Vec<(String, serde_json::Value)>, T) {
        let answers = answers.iter().map(|a| Ok(Some(crate::rpc::value::from_json(a)).filter(|v| !v.is_nil())));
        let (calls, output) = drive(answers.collect(), body);
        let calls = calls.into_iter().map(|(method, args)| (method, to_json(&Value::Array(args)))).collect();
        (calls, output)
    }

    fn to_json(value: &Value) -> serde_json::Value {
        use serde_json::Value as J;
        match value {
            Value::Nil => J::Null,
            Value::Boolean(b) => J::Bool(*b),
            Value::Integer(i) => i.as_i64().map(J::from).or_else(|| i.as_u64().map(J::from)).unwrap_or(J::Null),
            Value::F32(f) => J::from(f64::from(*f)),
            Value::F64(f) => J::from(*f),
            Value::String(s) => J::from(String::from_utf8_lossy(s.as_bytes())),
            Value::Binary(b) => J::from(String::from_utf8_lossy(b)),
            Value::Array(items) => J::Array(items.iter().map(to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (crate::rpc::value::bytes(k).map(String::from_utf8_lossy).unwrap_or_default(), v))
                    .map(|(k, v)| (k.into_owned(), to_json(v)))
                    .collect(),
            ),
            Value::Ext(..) => J::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::client::Consumer;
    use super::service::HeaderChanges;
    use super::testing::drive;
    use super::*;

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(entries.iter().map(|(k, v)| (Value::from(*k), v.clone())).collect())
    }

    #[test]
    fn typed_wrappers_send_exactly_the_calls_kong_expects() {
        let (calls, result) = drive(vec![Ok(None), Ok(None), Ok(None), Ok(None), Ok(None)], |mut pdk| {
            Box::pin(async move {
                let mut changes = HeaderChanges::new();
                changes.set("X-Account-Id", "acc").remove("X-User-Id").set("x-account-id", "acc2");
                pdk.service_request().set_headers(changes).await?;
                pdk.ctx_shared().set_strings("authenticated_groups", &["a".into(), "b".into()]).await?;
                pdk.client().authenticate(&Consumer { id: "acc", username: "user" }).await?;
                pdk.service_request().set_raw_query(b"a=1&b").await?;
                pdk.service_request().set_raw_query(b"k=\xff").await?;
                pdk.response().exit(401, b"{}", &[("WWW-Authenticate", "ApiKey")]).await
            })
        });
        result.unwrap();
        let expected: Vec<(&str, Vec<Value>)> = vec![
            (
                "kong.service.request.set_headers",
                // The last change to a name wins, under the name as first given; {} removes.
                vec![map(&[("X-Account-Id", "acc2".into()), ("X-User-Id", Value::Array(vec![]))])],
            ),
            ("kong.ctx.shared.set", vec!["authenticated_groups".into(), Value::Array(vec!["a".into(), "b".into()])]),
            ("kong.client.authenticate", vec![map(&[("id", "acc".into()), ("username", "user".into())])]),
            ("kong.service.request.set_raw_query", vec!["a=1&b".into()]),
            ("kong.service.request.set_raw_query", vec![Value::Binary(b"k=\xff".to_vec())]),
            ("kong.response.exit", vec![401.into(), "{}".into(), map(&[("WWW-Authenticate", "ApiKey".into())])]),
        ];
        let calls: Vec<(&str, Vec<Value>)> = calls.iter().map(|(m, a)| (m.as_str(), a.clone())).collect();
        assert_eq!(calls, expected);
    }

    #[test]
    fn shared_lists_are_read_as_strings_and_anything_else_as_absent() {
        let answers = vec![
            Ok(Some(Value::Array(vec!["a".into(), Value::Binary(b"b".to_vec()), 1.into()]))),
            Ok(Some(Value::Array(vec![]))),
            Ok(None),
            Ok(Some(Value::Map(vec![]))), // an empty Lua table may arrive as a map
            Ok(Some("admin".into())),
        ];
        let (calls, lists) = drive(answers, |mut pdk| {
            Box::pin(async move {
                let mut lists = Vec::new();
                for _ in 0..5 {
                    lists.push(pdk.ctx_shared().get_strings("authenticated_groups").await.unwrap());
                }
                lists
            })
        });
        assert_eq!(lists, [Some(vec!["a".to_owned(), "b".into(), "1".into()]), Some(vec![]), None, None, None]);
        assert!(calls.iter().all(|(m, a)| m == "kong.ctx.shared.get" && a == &[Value::from("authenticated_groups")]));
    }

    #[test]
    fn reads_are_typed_and_kong_errors_name_the_call() {
        let headers = map(&[
            ("X-Api-Key", Value::Array(vec!["k1".into(), Value::Binary(b"k\xff".to_vec())])),
            ("accept", "*/*".into()),
        ]);
        let answers = vec![
            Ok(Some(headers)),
            Ok(Some(Value::Array(vec![]))), // no headers: an empty table
            Ok(Some("k".into())),
            Ok(None),
            Ok(Some(Value::from(5))),
            Err(KongError { message: "header too long".into() }),
        ];
        let (_, (headers, empty, found, absent, wrong, failed)) = drive(answers, |mut pdk| {
            Box::pin(async move {
                let headers = pdk.request().get_headers().await.unwrap();
                let empty = pdk.request().get_headers().await.unwrap();
                let found = pdk.request().get_header("x-api-key").await.unwrap();
                let absent = pdk.request().get_raw_query().await.unwrap();
                let wrong = pdk.request().get_header("x-api-key").await.unwrap_err();
                let failed = pdk.request().get_header("x-api-key").await.unwrap_err();
                (headers, empty, found, absent, wrong, failed)
            })
        });
        assert_eq!(headers.get_all("x-api-key"), [b"k1".to_vec(), b"k\xff".to_vec()], "names are lower-cased");
        assert_eq!(headers.get_all("accept"), [b"*/*".to_vec()]);
        assert!(!empty.contains("accept"));
        assert_eq!((found, absent), (Some(b"k".to_vec()), Vec::new()));
        assert_eq!(wrong.to_string(), "kong.request.get_header returned number, expected string");
        assert_eq!(failed.to_string(), "kong.request.get_header failed in Kong: header too long");
    }

    #[test]
    fn nothing_is_sent_after_a_terminal_call() {
        let (calls, after) = drive(vec![], |mut pdk| {
            Box::pin(async move {
                pdk.response().exit(403, b"no", &[]).await.unwrap();
                let after = pdk.request().get_header("x").await;
                (after, pdk.is_finished())
            })
        });
        assert_eq!(calls.len(), 1);
        assert!(matches!(after, (Err(PdkError::EventEnded), true)), "{after:?}");
    }
}

//! `kong.response.*`: answering the client directly. `exit` ends the event.

use rmpv::Value;

use super::{Pdk, PdkError};

pub struct Response<'a>(pub(super) &'a mut Pdk);

impl Response<'_> {
    /// `kong.response.exit(status, body, headers)`. Terminal: Kong never answers it, and any
    /// later PDK call of this event fails with [`PdkError::EventEnded`].
    pub async fn exit(&mut self, status: u16, body: &[u8], headers: &[(&str, &str)]) -> Result<(), PdkError> {
        let headers = Value::Map(headers.iter().map(|(k, v)| (Value::from(*k), Value::from(*v))).collect());
        let args = vec![Value::from(status), Value::String(body_string(body)), headers];
        self.0.terminal("kong.response.exit", args).await
    }
}

/// Bodies are sent as msgpack `str` (Kong turns str and bin alike into a Lua string).
fn body_string(body: &[u8]) -> rmpv::Utf8String {
    match std::str::from_utf8(body) {
        Ok(s) => rmpv::Utf8String::from(s),
        Err(_) => rmpv::Utf8String::from(String::from_utf8_lossy(body).as_ref()),
    }
}

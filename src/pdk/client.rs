//! `kong.client.*`: who is calling.

use rmpv::Value;

use super::request::string_or_nil;
use super::{Pdk, PdkError};

pub struct Client<'a>(pub(super) &'a mut Pdk);

impl Client<'_> {
    /// `kong.client.authenticate(consumer, credential)`: sets Kong's authenticated consumer
    /// (used by logging plugins and `limit_by: consumer`). `None` sends Lua nil.
    pub async fn authenticate(&mut self, consumer: Option<Value>, credential: Option<Value>) -> Result<(), PdkError> {
        let mut args = vec![consumer.unwrap_or(Value::Nil)];
        if let Some(c) = credential {
            args.push(c);
        }
        self.0.call("kong.client.authenticate", args).await?;
        Ok(())
    }

    /// `kong.client.get_ip()`.
    pub async fn get_ip(&mut self) -> Result<Option<String>, PdkError> {
        let v = self.0.call("kong.client.get_ip", vec![]).await?;
        Ok(string_or_nil("kong.client.get_ip", v)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }
}

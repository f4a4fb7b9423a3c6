//! `kong.log.*`: writing into Kong's error log (costs a round trip; our own `tracing` output
//! is the default channel, this is for messages an SRE must see next to the request).

use rmpv::Value;

use super::{Pdk, PdkError};

pub struct Log<'a>(pub(super) &'a mut Pdk);

impl Log<'_> {
    pub async fn err(&mut self, message: &str) -> Result<(), PdkError> {
        self.0.call("kong.log.err", vec![Value::from(message)]).await.map(drop)
    }
    pub async fn warn(&mut self, message: &str) -> Result<(), PdkError> {
        self.0.call("kong.log.warn", vec![Value::from(message)]).await.map(drop)
    }
    pub async fn info(&mut self, message: &str) -> Result<(), PdkError> {
        self.0.call("kong.log.info", vec![Value::from(message)]).await.map(drop)
    }
    pub async fn debug(&mut self, message: &str) -> Result<(), PdkError> {
        self.0.call("kong.log.debug", vec![Value::from(message)]).await.map(drop)
    }
}

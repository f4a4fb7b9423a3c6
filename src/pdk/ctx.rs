//! `kong.ctx.shared.*`: the per-request table other plugins (acl, rate-limiting) read.

use rmpv::Value;

use super::{Pdk, PdkError};

pub struct Shared<'a>(pub(super) &'a mut Pdk);

impl Shared<'_> {
    /// `kong.ctx.shared.set(key, value)`.
    pub async fn set(&mut self, key: &str, value: Value) -> Result<(), PdkError> {
        self.0.call("kong.ctx.shared.set", vec![Value::from(key), value]).await?;
        Ok(())
    }

    /// `kong.ctx.shared.get(key)`.
    pub async fn get(&mut self, key: &str) -> Result<Option<Value>, PdkError> {
        self.0.call("kong.ctx.shared.get", vec![Value::from(key)]).await
    }
}

//! `kong.ctx.shared.*`: the per-request table other plugins (acl, rate-limiting) read.

use rmpv::Value;

use super::{Pdk, PdkError};

pub struct Shared<'a>(pub(super) &'a mut Pdk);

impl Shared<'_> {
    /// `kong.ctx.shared.set(key, {…})`: a list of strings (a Lua sequence), such as the
    /// `authenticated_groups` Kong's acl plugin reads.
    pub async fn set_strings(&mut self, key: &str, values: &[String]) -> Result<(), PdkError> {
        let list = Value::Array(values.iter().map(|v| Value::from(v.as_str())).collect());
        self.0.call("kong.ctx.shared.set", vec![Value::from(key), list]).await?;
        Ok(())
    }

    /// `kong.ctx.shared.get(key)` read as a list: `None` when the key is unset or holds no
    /// list (another plugin's value of another shape is not ours to judge). Items that are
    /// not strings are kept as their printed value, so a list never looks shorter than it is.
    pub async fn get_strings(&mut self, key: &str) -> Result<Option<Vec<String>>, PdkError> {
        let value = self.0.call("kong.ctx.shared.get", vec![Value::from(key)]).await?;
        let Some(Value::Array(items)) = value else {
            return Ok(None);
        };
        Ok(Some(items.into_iter().map(lossy_string).collect()))
    }
}

/// A list item as text: strings (UTF-8 or not) as they are, anything else printed.
fn lossy_string(item: Value) -> String {
    match item {
        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Value::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
        other => other.to_string(),
    }
}

//! `kong.client.*`: who is calling.

use rmpv::Value;

use super::{Pdk, PdkError};

pub struct Client<'a>(pub(super) &'a mut Pdk);

/// A consumer that exists only for this request (not in Kong's database): what logging
/// plugins and `limit_by: consumer` read after [`Client::authenticate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumer<'a> {
    pub id: &'a str,
    pub username: &'a str,
}

impl Client<'_> {
    /// `kong.client.authenticate(consumer, nil)`: sets Kong's authenticated consumer, with no
    /// credential.
    pub async fn authenticate(&mut self, consumer: &Consumer<'_>) -> Result<(), PdkError> {
        let consumer = Value::Map(vec![
            (Value::from("id"), Value::from(consumer.id)),
            (Value::from("username"), Value::from(consumer.username)),
        ]);
        self.0.call("kong.client.authenticate", vec![consumer]).await?;
        Ok(())
    }
}

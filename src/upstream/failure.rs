//! Why an upstream gave no usable answer.

/// An upstream call that produced no usable answer. Never cached as a verdict: every kind is
/// transient or our own misconfiguration, and the request is answered 503. The messages name
/// addresses and statuses, never a request body (so never an API key or token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No answer in time (the call's own deadline, or the client's connect timeout).
    #[error("timed out: {0}")]
    Timeout(String),
    /// The connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Any other transport error (the connection broke, TLS, …).
    #[error("request failed: {0}")]
    Request(String),
    /// An HTTP status the contract does not make a verdict of.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// auth-service answered `401`: it refused our `service_token` (a misconfiguration of this
    /// edge, never a verdict about the customer's key).
    #[error("refused our service_token (HTTP 401): check the route's service_token")]
    ServiceTokenRefused,
    /// The body is too large, could not be read, or does not follow the contract.
    #[error("unusable body: {0}")]
    Body(String),
    /// A JWKS document without one key we could use.
    #[error("no usable key: {0}")]
    EmptySet(String),
}

impl Failure {
    /// The `kind` label of `upstream_failures` and of the auth-service health report.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Timeout(_) => "timeout",
            Failure::Connect(_) | Failure::Request(_) => "connect",
            Failure::Status(_) => "status",
            Failure::ServiceTokenRefused => "service_token_refused",
            Failure::Body(_) => "body",
            Failure::EmptySet(_) => "empty_set",
        }
    }
}

/// Sorts a transport error into a [`Failure`], with its causes.
pub fn classify(e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::Timeout(chain(e))
    } else if e.is_connect() {
        Failure::Connect(chain(e))
    } else {
        Failure::Request(chain(e))
    }
}

/// An error and its causes, `: `-separated (reqwest's own message omits the cause).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_one_of_the_preregistered_kinds() {
        let kinds = [
            Failure::Timeout("t".into()),
            Failure::Connect("c".into()),
            Failure::Request("r".into()),
            Failure::Status(502),
            Failure::ServiceTokenRefused,
            Failure::Body("b".into()),
            Failure::EmptySet("e".into()),
        ]
        .map(|f| f.kind());
        assert_eq!(kinds, ["timeout", "connect", "connect", "status", "service_token_refused", "body", "empty_set"]);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure() {
        // A port nobody listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = crate::upstream::build_client(Some(std::time::Duration::from_secs(2))).unwrap();
        let e = client.get(format!("http://127.0.0.1:{port}/")).send().await.unwrap_err();
        let failure = classify(&e);
        assert_eq!(failure.kind(), "connect", "{failure}");
        assert!(failure.to_string().contains("127.0.0.1"), "the cause chain names the address: {failure}");
    }
}

//! The one mapping from authentication failures to what the client sees
//! (docs/design.md#errors-a-client-sees), shared by both plugins: `kong.response.exit` with an RFC
//! 9457 `application/problem+json` body carrying a stable `code`, `WWW-Authenticate` (RFC 6750 for
//! Bearer, `ApiKey` for keys) and `Retry-After` on 503. Bodies are fixed texts: no key, token or
//! claim value ever appears in them.

use std::sync::OnceLock;

use crate::pdk::{Pdk, PdkError};

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    CredentialMissing,
    CredentialAmbiguous,
    CredentialInvalid,
    TokenExpired,
    TokenNotYetValid,
    TokenInvalid,
    InsufficientRole,
    AuthorityUnavailable { retry_after_secs: u64 },
    SpoofedIdentityHeader,
}

/// Every variant (the `Retry-After` value does not change the body).
const ALL: [AuthError; 9] = [
    AuthError::CredentialMissing,
    AuthError::CredentialAmbiguous,
    AuthError::CredentialInvalid,
    AuthError::TokenExpired,
    AuthError::TokenNotYetValid,
    AuthError::TokenInvalid,
    AuthError::InsufficientRole,
    AuthError::AuthorityUnavailable { retry_after_secs: 0 },
    AuthError::SpoofedIdentityHeader,
];

/// Which credential the plugin asks for, for `WWW-Authenticate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    ApiKey,
}

impl AuthError {
    pub fn status(self) -> u16 {
        match self {
            AuthError::InsufficientRole => 403,
            AuthError::AuthorityUnavailable { .. } => 503,
            AuthError::SpoofedIdentityHeader => 400,
            _ => 401,
        }
    }

    /// The stable machine-readable code (also the metrics label).
    pub fn code(self) -> &'static str {
        match self {
            AuthError::CredentialMissing => "credential_missing",
            AuthError::CredentialAmbiguous => "credential_ambiguous",
            AuthError::CredentialInvalid => "credential_invalid",
            AuthError::TokenExpired => "token_expired",
            AuthError::TokenNotYetValid => "token_not_yet_valid",
            AuthError::TokenInvalid => "token_invalid",
            AuthError::InsufficientRole => "insufficient_role",
            AuthError::AuthorityUnavailable { .. } => "authority_unavailable",
            AuthError::SpoofedIdentityHeader => "spoofed_identity_header",
        }
    }

    fn title(self) -> &'static str {
        match self.status() {
            400 => "Bad Request",
            403 => "Forbidden",
            503 => "Service Unavailable",
            _ => "Unauthorized",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            AuthError::CredentialMissing => "No credential was presented.",
            AuthError::CredentialAmbiguous => "More than one credential was presented.",
            AuthError::CredentialInvalid => "The credential is not valid.",
            AuthError::TokenExpired => "The token has expired.",
            AuthError::TokenNotYetValid => "The token is not valid yet.",
            AuthError::TokenInvalid => "The token is not acceptable.",
            AuthError::InsufficientRole => "The credential lacks a role this route requires.",
            AuthError::AuthorityUnavailable { .. } => "The authentication authority is unavailable; retry later.",
            AuthError::SpoofedIdentityHeader => "The request carries a reserved identity header.",
        }
    }

    /// The problem+json body, built once per code (refusals are a hot path under attack).
    pub fn body(self) -> &'static str {
        static BODIES: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
        let bodies = BODIES.get_or_init(|| ALL.iter().map(|e| (e.code(), e.render_body())).collect());
        let code = self.code();
        bodies.iter().find(|(c, _)| *c == code).map(|(_, b)| b.as_str()).expect("every code has a body")
    }

    fn render_body(self) -> String {
        serde_json::json!({
            "type": "about:blank",
            "title": self.title(),
            "status": self.status(),
            "code": self.code(),
            "detail": self.detail(),
        })
        .to_string()
    }

    /// `WWW-Authenticate` value, if this answer carries one.
    pub fn www_authenticate(self, scheme: Scheme) -> Option<&'static str> {
        match (scheme, self) {
            (_, AuthError::SpoofedIdentityHeader | AuthError::AuthorityUnavailable { .. }) => None,
            // RFC 6750 §3.1: no error code when the request had no credential.
            (Scheme::Bearer, AuthError::CredentialMissing) => Some(r#"Bearer realm="ghasi""#),
            (Scheme::Bearer, AuthError::InsufficientRole) => {
                Some(r#"Bearer realm="ghasi", error="insufficient_scope""#)
            }
            (Scheme::Bearer, AuthError::CredentialAmbiguous) => {
                Some(r#"Bearer realm="ghasi", error="invalid_request""#)
            }
            (Scheme::Bearer, _) => Some(r#"Bearer realm="ghasi", error="invalid_token""#),
            (Scheme::ApiKey, AuthError::InsufficientRole) => None,
            (Scheme::ApiKey, _) => Some(r#"ApiKey realm="ghasi""#),
        }
    }
}

/// Answers the request with `error` and ends the event (one round trip).
pub async fn reject(pdk: &mut Pdk, scheme: Scheme, error: AuthError) -> Result<(), PdkError> {
    pdk.record_outcome(error.code());
    let retry_after;
    let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "application/problem+json")];
    if let Some(value) = error.www_authenticate(scheme) {
        headers.push(("WWW-Authenticate", value));
    }
    if let AuthError::AuthorityUnavailable { retry_after_secs } = error {
        retry_after = retry_after_secs.max(1).to_string();
        headers.push(("Retry-After", &retry_after));
    }
    pdk.response().exit(error.status(), error.body().as_bytes(), &headers).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_follow_the_design_table() {
        let cases = [
            (AuthError::CredentialMissing, 401, "credential_missing"),
            (AuthError::CredentialAmbiguous, 401, "credential_ambiguous"),
            (AuthError::CredentialInvalid, 401, "credential_invalid"),
            (AuthError::TokenExpired, 401, "token_expired"),
            (AuthError::TokenNotYetValid, 401, "token_not_yet_valid"),
            (AuthError::TokenInvalid, 401, "token_invalid"),
            (AuthError::InsufficientRole, 403, "insufficient_role"),
            (AuthError::AuthorityUnavailable { retry_after_secs: 5 }, 503, "authority_unavailable"),
            (AuthError::SpoofedIdentityHeader, 400, "spoofed_identity_header"),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status(), e.code()), (status, code));
            let body: serde_json::Value = serde_json::from_str(e.body()).unwrap();
            assert_eq!(body["code"], code);
            assert_eq!(body["status"], status);
        }
    }

    #[test]
    fn bearer_challenges_follow_rfc_6750() {
        assert_eq!(AuthError::CredentialMissing.www_authenticate(Scheme::Bearer), Some(r#"Bearer realm="ghasi""#));
        assert!(AuthError::TokenExpired.www_authenticate(Scheme::Bearer).unwrap().contains(r#"error="invalid_token""#));
        assert!(AuthError::InsufficientRole.www_authenticate(Scheme::Bearer).unwrap().contains("insufficient_scope"));
        assert_eq!(AuthError::CredentialInvalid.www_authenticate(Scheme::ApiKey), Some(r#"ApiKey realm="ghasi""#));
        assert_eq!(AuthError::AuthorityUnavailable { retry_after_secs: 1 }.www_authenticate(Scheme::ApiKey), None);
    }
}

//! The lookup and JWKS endpoints against the documented contract.

mod common;

use common::{client, fetch_jwks, lookup, service};
use dev_auth_service::{fixtures::*, Account, AccountStatus, ApiKey, DevAuthService, DevConfig};
use serde_json::{json, Value};

#[tokio::test]
async fn valid_key_with_user_answers_200_with_every_field() {
    let svc = service().await;
    let resp = lookup(&svc, KEY_ALICE).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("date"));
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "account_id": ACCOUNT_ACME, "key_id": KEY_ID_ALICE, "user_id": USER_ALICE,
            "consumer_username": CONSUMER_ALICE, "expires_at": null
        })
    );
    assert_eq!(svc.lookups(), 1);
}

#[tokio::test]
async fn key_without_user_has_explicit_nulls() {
    let svc = service().await;
    let body: Value = lookup(&svc, KEY_SERVICE).await.json().await.unwrap();
    let obj = body.as_object().unwrap();
    assert_eq!(obj.len(), 5, "{body}");
    assert_eq!(body["key_id"], KEY_ID_SERVICE);
    assert_eq!(body["account_id"], ACCOUNT_ACME);
    assert!(obj["user_id"].is_null() && obj["consumer_username"].is_null() && obj["expires_at"].is_null());
}

#[tokio::test]
async fn expiring_key_reports_rfc3339_expiry_then_expires() {
    let svc = service().await;
    let body: Value = lookup(&svc, KEY_EXPIRING).await.json().await.unwrap();
    let exp = body["expires_at"].as_str().unwrap();
    let exp = time::OffsetDateTime::parse(exp, &time::format_description::well_known::Rfc3339).unwrap();
    let left = exp - time::OffsetDateTime::now_utc();
    assert!(left > time::Duration::seconds(1) && left <= time::Duration::seconds(5), "{left}");
    tokio::time::sleep((left + time::Duration::milliseconds(100)).unsigned_abs()).await;
    assert_eq!(lookup(&svc, KEY_EXPIRING).await.status(), 403);
}

#[tokio::test]
async fn invalid_keys_answer_404_or_403() {
    let svc = service().await;
    for (key, status, code) in [
        (KEY_UNKNOWN, 404, "not_found"),
        (KEY_REVOKED, 403, "revoked"),
        (KEY_SUSPENDED, 403, "account_suspended"),
        (KEY_EXPIRED, 403, "expired"),
    ] {
        let resp = lookup(&svc, key).await;
        assert_eq!(resp.status(), status, "{key}");
        assert!(resp.headers().contains_key("date"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], code);
        assert!(!body.to_string().contains(key), "error body echoes the key");
    }
    assert_eq!(svc.lookups(), 4);
}

#[tokio::test]
async fn service_token_is_required_when_configured() {
    let svc = service().await;
    let body = json!({ "api_key": KEY_ALICE });
    let no_token = client().post(svc.lookup_url()).json(&body).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    let wrong = client().post(svc.lookup_url()).bearer_auth("nope").json(&body).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let basic = client()
        .post(svc.lookup_url())
        .header("authorization", format!("Basic {SERVICE_TOKEN}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    // 401 wins over a malformed body: authentication comes first.
    let unauth_garbage = client().post(svc.lookup_url()).body("{").send().await.unwrap();
    assert_eq!(unauth_garbage.status(), 401);
    assert_eq!(lookup(&svc, KEY_ALICE).await.status(), 200);
}

#[tokio::test]
async fn without_a_configured_service_token_authorization_is_ignored() {
    let config = DevConfig { service_token: None, ..DevConfig::for_tests() };
    let svc = DevAuthService::start(config).await.unwrap();
    let body = json!({ "api_key": KEY_ALICE });
    let resp = client().post(svc.lookup_url()).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client().post(svc.lookup_url()).bearer_auth("anything").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn malformed_bodies_answer_400() {
    let svc = service().await;
    for body in ["", "{", "[]", "null", r#"{"key": "x"}"#, r#"{"api_key": 5}"#, r#"{"api_key": ""}"#, "api_key=x"] {
        let resp = client()
            .post(svc.lookup_url())
            .bearer_auth(SERVICE_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "body {body:?}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"], "bad_request");
    }
    // Extra fields are tolerated; content-type is not required.
    let resp = client()
        .post(svc.lookup_url())
        .bearer_auth(SERVICE_TOKEN)
        .body(format!(r#"{{"api_key": "{KEY_ALICE}", "extra": 1}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn lookup_path_is_configurable_and_get_is_not_a_lookup() {
    let config = DevConfig { lookup_path: "/v2/keys/check".into(), ..DevConfig::for_tests() };
    let svc = DevAuthService::start(config).await.unwrap();
    assert_eq!(svc.lookup_url(), format!("{}/v2/keys/check", svc.url()));
    assert_eq!(lookup(&svc, KEY_ALICE).await.status(), 200);
    let default_path = format!("{}{}", svc.url(), dev_auth_service::DEFAULT_LOOKUP_PATH);
    let resp = client()
        .post(default_path)
        .bearer_auth(SERVICE_TOKEN)
        .json(&json!({"api_key": KEY_ALICE}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(client().get(svc.lookup_url()).send().await.unwrap().status(), 405);
}

#[tokio::test]
async fn run_time_data_changes_take_effect() {
    let svc = service().await;
    assert!(svc.revoke_key(KEY_ALICE));
    assert_eq!(lookup(&svc, KEY_ALICE).await.status(), 403);
    assert!(svc.unrevoke_key(KEY_ALICE));
    assert_eq!(lookup(&svc, KEY_ALICE).await.status(), 200);
    assert!(svc.set_account_status(ACCOUNT_ACME, AccountStatus::Suspended));
    assert_eq!(lookup(&svc, KEY_SERVICE).await.status(), 403);
    svc.add_account(Account { id: "acc_new".into(), status: AccountStatus::Active });
    svc.add_api_key(ApiKey {
        consumer_username: Some("newbie".into()),
        ..ApiKey::new("k_new_1", "kid_new_1", "acc_new")
    })
    .unwrap();
    let body: Value = lookup(&svc, "k_new_1").await.json().await.unwrap();
    assert_eq!(body["consumer_username"], "newbie");
    assert!(svc.remove_api_key("k_new_1"));
    assert_eq!(lookup(&svc, "k_new_1").await.status(), 404);
    assert!(svc.add_api_key(ApiKey::new("k_x", "kid_x", "acc_missing")).is_err());
    assert!(!svc.revoke_key("never-heard-of-it"));
}

#[tokio::test]
async fn jwks_has_one_key_per_alg_with_required_members() {
    let svc = service().await;
    let resp = client().get(svc.jwks_url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("date"));
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = resp.json().await.unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    for (kty, alg, members) in [
        ("RSA", "RS256", &["n", "e"][..]),
        ("EC", "ES256", &["crv", "x", "y"][..]),
        ("OKP", "EdDSA", &["crv", "x"][..]),
    ] {
        let k = keys.iter().find(|k| k["alg"] == alg).unwrap_or_else(|| panic!("no {alg}"));
        assert_eq!(k["kty"], kty);
        assert_eq!(k["use"], "sig");
        assert!(k["kid"].as_str().is_some_and(|s| !s.is_empty()));
        for m in members {
            assert!(k[m].is_string(), "{alg} lacks {m}");
        }
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(k.get(private).is_none(), "{alg} JWK leaks private member {private}");
        }
    }
    assert_eq!(keys.iter().find(|k| k["kty"] == "EC").unwrap()["crv"], "P-256");
    assert_eq!(keys.iter().find(|k| k["kty"] == "OKP").unwrap()["crv"], "Ed25519");
    // It parses as a jsonwebtoken JwkSet too.
    assert_eq!(fetch_jwks(&svc).await.keys.len(), 3);
    assert_eq!(svc.jwks_fetches(), 2);
}

#[tokio::test]
async fn unknown_routes_are_json_404_with_date() {
    let svc = service().await;
    let resp = client().get(format!("{}/nope", svc.url())).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().contains_key("date"));
    assert_eq!(svc.lookups() + svc.jwks_fetches(), 0);
}

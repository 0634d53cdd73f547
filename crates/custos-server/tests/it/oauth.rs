//! The OAuth authorization server as a client meets it: metadata and keys, the
//! `client_credentials` grant, introspection, revocation, and the cascade of a suspension.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestServer, client};

both_backends!(
    metadata_and_keys_describe_the_server,
    client_credentials_issue_scoped_tokens,
    introspection_and_revocation_follow_live_state,
    malformed_token_requests_are_refused_precisely,
    delegation_narrows_and_revocation_cascades,
    private_key_jwt_authenticates_once_per_assertion,
    signing_keys_rotate_with_overlap,
    static_keys_rotate_with_a_grace_period,
    revoking_a_key_revokes_what_was_obtained_with_it,
);

async fn metadata_and_keys_describe_the_server(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, metadata) = server
        .call(
            Method::GET,
            "/.well-known/oauth-authorization-server",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(metadata["issuer"], server.base);
    assert_eq!(
        metadata["token_endpoint"],
        format!("{}/oauth2/token", server.base)
    );
    assert_eq!(
        metadata["grant_types_supported"],
        json!([
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ])
    );
    let (_, jwks) = server
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0]["alg"].as_str(), keys[0]["kty"].as_str()),
        (Some("ES256"), Some("EC"))
    );
    assert!(
        keys[0].get("d").is_none(),
        "the jwks holds public keys only"
    );
    server.stop().await;
}

async fn client_credentials_issue_scoped_tokens(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = client(&server, "cc-bot", &["crm:read:customers/*", "mail:send"]).await;

    let (status, _, token) = server
        .form(
            "/oauth2/token",
            Some((&id, &secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{token}");
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["scope"], "crm:read:customers/* mail:send");
    assert!(token["expires_in"].as_i64().unwrap() > 0);

    // client_secret_post, narrowing the scope.
    let (status, _, narrow) = server
        .form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
                ("scope", "crm:read:customers/42"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{narrow}");
    assert_eq!(narrow["scope"], "crm:read:customers/42");

    let (status, _, error) = server
        .form(
            "/oauth2/token",
            Some((&id, &secret)),
            &[("grant_type", "client_credentials"), ("scope", "crm:write")],
        )
        .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );

    let (status, headers, error) = server
        .form(
            "/oauth2/token",
            Some((&id, "custos_sk_wrong")),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    assert!(
        headers.get("www-authenticate").is_some(),
        "basic clients are challenged"
    );

    // Another NHI's key does not authenticate this client.
    let (_, other_secret) = client(&server, "other-bot", &["crm:read"]).await;
    let (status, _, _) = server
        .form(
            "/oauth2/token",
            Some((&id, &other_secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

async fn introspect(server: &TestServer, caller: (&str, &str), token: &str) -> Value {
    let (status, _, answer) = server
        .form("/oauth2/introspect", Some(caller), &[("token", token)])
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

async fn introspection_and_revocation_follow_live_state(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = client(&server, "live-bot", &["crm:read"]).await;
    let (gw_id, gw_secret) = client(&server, "gateway", &["custos:introspect"]).await;
    let (other_id, other_secret) = client(&server, "nosy-bot", &["crm:read"]).await;
    let issue = || async {
        let (_, _, token) = server
            .form(
                "/oauth2/token",
                Some((&id, &secret)),
                &[("grant_type", "client_credentials")],
            )
            .await;
        token["access_token"].as_str().unwrap().to_owned()
    };
    let token = issue().await;

    let own = introspect(&server, (&id, &secret), &token).await;
    assert_eq!(own["active"], true);
    assert_eq!(
        (own["client_id"].as_str(), own["sub"].as_str()),
        (Some(id.as_str()), Some(id.as_str()))
    );
    assert_eq!(own["scope"], "crm:read");
    let by_gateway = introspect(&server, (&gw_id, &gw_secret), &token).await;
    assert_eq!(by_gateway["active"], true);
    // Someone else's token is none of a plain client's business.
    let nosy = introspect(&server, (&other_id, &other_secret), &token).await;
    assert_eq!(nosy, json!({"active": false}));
    let (status, _, _) = server
        .form("/oauth2/introspect", None, &[("token", &token)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A tampered payload is just inactive.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].chars().rev().collect();
    let tampered = parts.join(".");
    assert_eq!(
        introspect(&server, (&gw_id, &gw_secret), &tampered).await,
        json!({"active": false})
    );

    // Revocation by a stranger does nothing; by the holder it takes effect at once.
    let (status, _, _) = server
        .form(
            "/oauth2/revoke",
            Some((&other_id, &other_secret)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        introspect(&server, (&gw_id, &gw_secret), &token).await["active"],
        true
    );
    let (status, _, _) = server
        .form("/oauth2/revoke", Some((&id, &secret)), &[("token", &token)])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        introspect(&server, (&gw_id, &gw_secret), &token).await,
        json!({"active": false})
    );
    let (status, _, _) = server
        .form(
            "/oauth2/revoke",
            Some((&id, &secret)),
            &[("token", "not-a-token")],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "unknown tokens are not an error (RFC 7009 §2.2)"
    );

    // Suspending the NHI kills its live tokens.
    let token = issue().await;
    assert_eq!(
        introspect(&server, (&gw_id, &gw_secret), &token).await["active"],
        true
    );
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/v1/nhis/{id}/suspend"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        introspect(&server, (&gw_id, &gw_secret), &token).await,
        json!({"active": false})
    );
    server.stop().await;
}

async fn malformed_token_requests_are_refused_precisely(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = client(&server, "picky-bot", &["crm:read"]).await;
    // (form parameters, basic credentials, expected error)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Option<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], Some((&id, &secret)), "invalid_request"),
        (
            vec![("grant_type", "password")],
            Some((&id, &secret)),
            "unsupported_grant_type",
        ),
        (
            vec![("grant_type", "client_credentials")],
            None,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("scope", "crm:read"),
                ("scope", "crm:read"),
            ],
            Some((&id, &secret)),
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_secret", &secret),
                ("client_id", &id),
            ],
            Some((&id, &secret)),
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("scope", "NOT A GRANT"),
            ],
            Some((&id, &secret)),
            "invalid_scope",
        ),
    ];
    for (params, basic, expected) in cases {
        let (_, _, error) = server.form("/oauth2/token", basic, &params).await;
        assert_eq!(error["error"], expected, "{params:?}");
    }
    server.stop().await;
}

async fn exchange(
    server: &TestServer,
    client: (&str, &str),
    params: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut all = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
    ];
    all.extend_from_slice(params);
    let (status, _, answer) = server.form("/oauth2/token", Some(client), &all).await;
    (status, answer)
}

async fn delegation_narrows_and_revocation_cascades(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (parent_id, parent_secret) =
        client(&server, "planner", &["crm:read:customers/*", "mail:send"]).await;
    let (child_id, _) = client(&server, "researcher", &["crm:read"]).await;
    let (grandchild_id, grandchild_secret) = client(&server, "summariser", &["crm:read"]).await;
    let (gw_id, gw_secret) = client(&server, "gateway", &["custos:introspect"]).await;
    let gateway = (gw_id.as_str(), gw_secret.as_str());
    let (_, _, root) = server
        .form(
            "/oauth2/token",
            Some((&parent_id, &parent_secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let root = root["access_token"].as_str().unwrap().to_owned();

    // The planner hands the researcher a narrower token, named by `audience`.
    let (status, child) = exchange(
        &server,
        (&parent_id, &parent_secret),
        &[
            ("subject_token", &root),
            ("audience", &child_id),
            ("scope", "crm:read:customers/7"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{child}");
    assert_eq!(
        child["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let child = child["access_token"].as_str().unwrap().to_owned();
    let seen = introspect(&server, gateway, &child).await;
    assert_eq!(
        (seen["sub"].as_str(), seen["client_id"].as_str()),
        (Some(parent_id.as_str()), Some(child_id.as_str()))
    );
    assert_eq!(seen["act"], json!({"sub": child_id}));

    // The researcher passes it on, proving itself with its own token as the actor token.
    let (_, _, actor) = server
        .form(
            "/oauth2/token",
            Some((&grandchild_id, &grandchild_secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let actor = actor["access_token"].as_str().unwrap().to_owned();
    let (status, grandchild) = exchange(
        &server,
        (&grandchild_id, &grandchild_secret),
        &[
            ("subject_token", &child),
            ("actor_token", &actor),
            (
                "actor_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{grandchild}");
    let grandchild = grandchild["access_token"].as_str().unwrap().to_owned();
    let seen = introspect(&server, gateway, &grandchild).await;
    assert_eq!(
        seen["act"],
        json!({"sub": grandchild_id, "act": {"sub": child_id}})
    );
    assert_eq!(seen["scope"], "crm:read:customers/7");
    assert!(seen["exp"].as_i64() <= introspect(&server, gateway, &root).await["exp"].as_i64());

    // Broader than the parent, or beyond the delegate's own ceiling: invalid_scope.
    for (who, params) in [
        (
            (&parent_id, &parent_secret),
            vec![
                ("subject_token", root.as_str()),
                ("audience", child_id.as_str()),
                ("scope", "crm:read"),
            ],
        ),
        (
            (&parent_id, &parent_secret),
            vec![
                ("subject_token", root.as_str()),
                ("audience", child_id.as_str()),
                ("scope", "mail:send"),
            ],
        ),
    ] {
        let (status, error) = exchange(&server, (who.0, who.1), &params).await;
        assert_eq!(
            (status, error["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_scope")),
            "{params:?}"
        );
    }
    // A stranger holding neither side cannot exchange.
    let (status, error) = exchange(
        &server,
        gateway,
        &[("subject_token", &root), ("audience", &child_id)],
    )
    .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // Depth is capped (3 by default): three more hops from the grandchild are refused at the third.
    let mut token = grandchild.clone();
    let mut refused = None;
    for hop in 0..3 {
        let (status, answer) = exchange(
            &server,
            (&grandchild_id, &grandchild_secret),
            &[("subject_token", &token)],
        )
        .await;
        if status != StatusCode::OK {
            refused = Some((hop, answer));
            break;
        }
        token = answer["access_token"].as_str().unwrap().to_owned();
    }
    let (hop, answer) = refused.expect("the chain must stop at the depth cap");
    assert_eq!(
        (hop, answer["error"].as_str()),
        (1, Some("invalid_request")),
        "{answer}"
    );

    // Revoking the root reaches the child and the grandchild: parent and grandparent revoked.
    let (status, _, _) = server
        .form(
            "/oauth2/revoke",
            Some((&parent_id, &parent_secret)),
            &[("token", &root)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for token in [&root, &child, &grandchild] {
        assert_eq!(
            introspect(&server, gateway, token).await,
            json!({"active": false})
        );
    }
    let (status, error) = exchange(
        &server,
        (&parent_id, &parent_secret),
        &[("subject_token", &root), ("audience", &child_id)],
    )
    .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    server.stop().await;
}

fn assertion(
    key: &custos_core::jose::SigningKey,
    client_id: &str,
    audience: &str,
    jti: &str,
) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    custos_core::jose::sign_jwt(
        key,
        "JWT",
        &json!({"iss": client_id, "sub": client_id, "aud": audience, "iat": now, "exp": now + 60, "jti": jti}),
    )
}

async fn private_key_jwt_authenticates_once_per_assertion(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, _) = client(&server, "signer", &["crm:read"]).await;
    let key = custos_core::jose::SigningKey::generate(
        custos_core::jose::SigningAlg::EdDsa,
        &mut rand::rng(),
    )
    .unwrap();
    let (status, registered) = server
        .call(
            Method::POST,
            &format!("/v1/nhis/{id}/client-keys"),
            Some(ADMIN_TOKEN),
            Some(json!({"jwk": key.public_jwk()})),
        )
        .await;
    assert_eq!(
        (status, registered["kind"].as_str()),
        (StatusCode::CREATED, Some("client_key")),
        "{registered}"
    );
    // A private JWK is refused.
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/v1/nhis/{id}/client-keys"),
            Some(ADMIN_TOKEN),
            Some(json!({"jwk": {"kty": "oct", "k": "c2VjcmV0"}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let endpoint = format!("{}/oauth2/token", server.base);
    let signed = assertion(&key, &id, &endpoint, "a-1");
    let request = |signed: String| {
        let id = id.clone();
        let server = &server;
        async move {
            server
                .form(
                    "/oauth2/token",
                    None,
                    &[
                        ("grant_type", "client_credentials"),
                        ("client_id", &id),
                        (
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        ),
                        ("client_assertion", &signed),
                    ],
                )
                .await
        }
    };
    let (status, _, token) = request(signed.clone()).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    let (status, _, error) = request(signed).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "replayed"
    );
    // Signed by another key, or for another audience: refused.
    let stranger = custos_core::jose::SigningKey::generate(
        custos_core::jose::SigningAlg::Es256,
        &mut rand::rng(),
    )
    .unwrap();
    let (status, _, _) = request(assertion(&stranger, &id, &endpoint, "a-2")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = request(assertion(
        &key,
        &id,
        "https://elsewhere.example/token",
        "a-3",
    ))
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A revoked client key no longer authenticates.
    server
        .admin(
            Method::POST,
            &format!(
                "/v1/credentials/{}/revoke",
                registered["id"].as_str().unwrap()
            ),
            None,
            StatusCode::OK,
        )
        .await;
    let (status, _, _) = request(assertion(&key, &id, &endpoint, "a-4")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

async fn signing_keys_rotate_with_overlap(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = client(&server, "rotating-bot", &["crm:read"]).await;
    let issue = || async {
        let (_, _, token) = server
            .form(
                "/oauth2/token",
                Some((&id, &secret)),
                &[("grant_type", "client_credentials")],
            )
            .await;
        token["access_token"].as_str().unwrap().to_owned()
    };
    let before = issue().await;
    let keys = server
        .admin(
            Method::POST,
            "/v1/keys/rotate",
            Some(json!({"alg": "RS256"})),
            StatusCode::OK,
        )
        .await;
    let states: Vec<&str> = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["retired_published", "active"]);
    let (_, jwks) = server
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let algs: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap())
        .collect();
    assert_eq!(algs, ["ES256", "RS256"]);
    let after = issue().await;
    assert_ne!(
        before.split('.').next(),
        after.split('.').next(),
        "a new kid signs"
    );
    // Tokens signed before the rotation still verify.
    assert_eq!(
        introspect(&server, (&id, &secret), &before).await["active"],
        true
    );
    assert_eq!(
        introspect(&server, (&id, &secret), &after).await["active"],
        true
    );
    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/keys/rotate",
            Some(ADMIN_TOKEN),
            Some(json!({"alg": "HS256"})),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed"))
    );
    server.stop().await;
}

async fn static_keys_rotate_with_a_grace_period(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, _) = client(&server, "legacy-bot", &["crm:read"]).await;
    let old = server.static_key(&id).await;
    let rotated = server
        .admin(
            Method::POST,
            &format!("/v1/credentials/{}/rotate", old["id"].as_str().unwrap()),
            None,
            StatusCode::CREATED,
        )
        .await;
    let new_secret = rotated["key"]["secret"].as_str().unwrap();
    let old_secret = old["secret"].as_str().unwrap();
    let token = |secret: &str| {
        let (id, secret) = (id.clone(), secret.to_owned());
        let server = &server;
        async move {
            server
                .form(
                    "/oauth2/token",
                    Some((&id, &secret)),
                    &[("grant_type", "client_credentials")],
                )
                .await
                .0
        }
    };
    assert_eq!(token(new_secret).await, StatusCode::OK);
    assert_eq!(
        token(old_secret).await,
        StatusCode::OK,
        "the old key works during the grace period"
    );
    // The test server's grace period is one second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        token(old_secret).await,
        StatusCode::UNAUTHORIZED,
        "and not after it"
    );
    assert_eq!(token(new_secret).await, StatusCode::OK);
    server.stop().await;
}

async fn revoking_a_key_revokes_what_was_obtained_with_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, _) = client(&server, "leaky-bot", &["crm:read"]).await;
    let (gw_id, gw_secret) = client(&server, "gateway", &["custos:introspect"]).await;
    let gateway = (gw_id.as_str(), gw_secret.as_str());
    let leaked = server.static_key(&id).await;
    let spare = server.static_key(&id).await;
    let leaked_secret = leaked["secret"].as_str().unwrap();
    let (_, _, token) = server
        .form(
            "/oauth2/token",
            Some((&id, leaked_secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let token = token["access_token"].as_str().unwrap().to_owned();
    let (_, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(leaked_secret),
            Some(json!({"purpose": "p", "scope": ["crm:read"]})),
        )
        .await;
    let task_token = task["credential"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, _, other) = server
        .form(
            "/oauth2/token",
            Some((&id, spare["secret"].as_str().unwrap())),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let other = other["access_token"].as_str().unwrap().to_owned();
    server
        .admin(
            Method::POST,
            &format!("/v1/credentials/{}/revoke", leaked["id"].as_str().unwrap()),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        introspect(&server, gateway, &token).await,
        json!({"active": false})
    );
    assert_eq!(
        introspect(&server, gateway, &task_token).await,
        json!({"active": false})
    );
    assert_eq!(
        introspect(&server, gateway, &other).await["active"],
        true,
        "tokens obtained with the other key live on"
    );
    server.stop().await;
}

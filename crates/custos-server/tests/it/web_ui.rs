//! The web UI over HTTP, on both stores: sessions (cookie attributes, sign-out, revocation),
//! the CSRF and cross-origin checks on every form, what a reviewer may see, and the headers
//! every page carries. The same flows in a real browser are in interop/test_web_ui.py.

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode, redirect};
use serde_json::json;

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestServer, client};

both_backends!(
    a_session_begins_with_an_operator_token_and_ends_on_sign_out_or_revocation,
    forms_from_other_origins_or_without_the_token_change_nothing,
    a_reviewer_sees_and_decides_only_its_teams_requests,
    an_escalated_request_is_offered_to_the_fallback_team,
    pages_carry_strict_headers_and_unknown_ones_are_404,
    findings_are_listed_shown_and_resolved_with_a_reason,
);

/// A browser without a cookie jar: redirects and cookies are looked at by the tests.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The value a `Set-Cookie` gives `name`, and the whole header.
fn cookie_set(headers: &HeaderMap, name: &str) -> (String, String) {
    let header = set_cookies(headers)
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name}: {headers:?}"));
    let value = header[name.len() + 1..]
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    (value, header)
}

/// The CSRF token a page's forms carry.
fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a form with a csrf field") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

struct SignedIn {
    cookie: String,
    csrf: String,
}

async fn sign_in(server: &TestServer, token: &str) -> SignedIn {
    let http = browser();
    let form = http
        .get(format!("{}/ui/login", server.base))
        .send()
        .await
        .unwrap();
    let (login_cookie, _) = cookie_set(form.headers(), "custos_login");
    let html = form.text().await.unwrap();
    let response = http
        .post(format!("{}/ui/login", server.base))
        .header("cookie", format!("custos_login={login_cookie}"))
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            ("token", token),
            ("next", "/ui/approvals"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (cookie, _) = cookie_set(response.headers(), "custos_session");
    let page = get(server, "/ui/approvals", Some(&cookie)).await;
    assert_eq!(page.0, StatusCode::OK, "{}", page.2);
    SignedIn {
        cookie,
        csrf: csrf_of(&page.2),
    }
}

async fn get(
    server: &TestServer,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let mut request = browser().get(format!("{}{path}", server.base));
    if let Some(cookie) = cookie {
        request = request.header("cookie", format!("custos_session={cookie}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

async fn post(
    server: &TestServer,
    path: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
    form: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut request = browser().post(format!("{}{path}", server.base)).form(form);
    if let Some(cookie) = cookie {
        request = request.header("cookie", format!("custos_session={cookie}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

fn location(headers: &HeaderMap) -> &str {
    headers.get(LOCATION).unwrap().to_str().unwrap()
}

/// An agent's task beyond its ceiling: (agent secret, task id, approval id).
async fn pending_request(server: &TestServer, agent: &str) -> (String, String, String) {
    let (_, secret) = client(server, agent, &["crm:read:orders/*"]).await;
    let (status, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&secret),
            Some(json!({"purpose": "quarterly export", "scope": ["crm:export:customers/emea"], "ttl_seconds": 600})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    (
        secret,
        task["id"].as_str().unwrap().to_owned(),
        task["approval_id"].as_str().unwrap().to_owned(),
    )
}

async fn approval_state(server: &TestServer, id: &str) -> String {
    server
        .admin(
            Method::GET,
            &format!("/v1/approvals/{id}"),
            None,
            StatusCode::OK,
        )
        .await["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn a_session_begins_with_an_operator_token_and_ends_on_sign_out_or_revocation(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    server.team("owners-oauth").await;
    let (rita_id, rita) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;

    // Not signed in: every page leads to the sign-in form, and back afterwards.
    let (status, headers, _) = get(&server, "/ui/approvals?risk=high", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location(&headers),
        "/ui/login?next=%2Fui%2Fapprovals%3Frisk%3Dhigh"
    );

    // The sign-in form: its own CSRF cookie, scoped to the form, HttpOnly and SameSite=Strict.
    let http = browser();
    let form = http
        .get(format!("{}/ui/login", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let (login_cookie, header) = cookie_set(form.headers(), "custos_login");
    assert!(
        header.contains("HttpOnly")
            && header.contains("SameSite=Strict")
            && header.contains("Path=/ui/login"),
        "{header}"
    );
    let csrf = csrf_of(&form.text().await.unwrap());
    assert_eq!(csrf, login_cookie);
    let login = |token: &'static str, cookie: Option<String>, next: &'static str| {
        let http = http.clone();
        let base = server.base.clone();
        let csrf = csrf.clone();
        async move {
            let mut request = http.post(format!("{base}/ui/login")).form(&[
                ("csrf", csrf.as_str()),
                ("token", token),
                ("next", next),
            ]);
            if let Some(cookie) = cookie {
                request = request.header("cookie", format!("custos_login={cookie}"));
            }
            request.send().await.unwrap()
        }
    };
    let rita_token: &'static str = Box::leak(rita.clone().into_boxed_str());

    // Without the form's cookie (a login forged from elsewhere): refused.
    let refused = login(rita_token, None, "/ui/approvals").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("csrf_failed"));
    // An unknown token, and an NHI's key: the form again, with why.
    let unknown = login(
        "cst_op_not-a-real-token",
        Some(login_cookie.clone()),
        "/ui/approvals",
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert!(
        unknown
            .text()
            .await
            .unwrap()
            .contains("unknown or has been revoked")
    );
    let (_, agent_key) = client(&server, "ui-agent", &["crm:read"]).await;
    let agent_token: &'static str = Box::leak(agent_key.into_boxed_str());
    let agent = login(agent_token, Some(login_cookie.clone()), "/ui/approvals").await;
    assert_eq!(agent.status(), StatusCode::UNAUTHORIZED);
    assert!(
        set_cookies(agent.headers())
            .iter()
            .all(|c| !c.starts_with("custos_session="))
    );
    assert!(
        agent
            .text()
            .await
            .unwrap()
            .contains("only operators sign in here")
    );

    // The operator's token: a session cookie, and back to a page of ours only (no open
    // redirect to another site).
    let signed_in = login(rita_token, Some(login_cookie.clone()), "//evil.example/ui/").await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(signed_in.headers()), "/ui/approvals");
    let (session, header) = cookie_set(signed_in.headers(), "custos_session");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
        assert!(header.contains(attribute), "{attribute} missing: {header}");
    }
    assert!(!header.contains("Secure"), "plain http here: {header}");
    assert!(!session.contains(&rita), "the cookie is not the token");
    let (status, _, html) = get(&server, "/ui/approvals", Some(&session)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("rita") && html.contains("Review inbox"));
    let signed = server
        .admin(
            Method::GET,
            "/v1/audit/events?kind=operator.signed_in",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(signed["items"][0]["actor"], format!("operator:{rita_id}"));

    // Signing out needs the session's CSRF token, then the cookie is worth nothing.
    let csrf = csrf_of(&html);
    let (status, _, body) = post(&server, "/ui/logout", Some(&session), &[], &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("csrf_failed"));
    let (status, headers, _) = post(
        &server,
        "/ui/logout",
        Some(&session),
        &[],
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/ui/login");
    assert!(
        cookie_set(&headers, "custos_session")
            .1
            .contains("Max-Age=0")
    );
    let (status, headers, _) = get(&server, "/ui/approvals", Some(&session)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location(&headers).starts_with("/ui/login"));

    // Revoking the operator ends its sessions too.
    let again = sign_in(&server, &rita).await;
    server
        .admin(
            Method::POST,
            &format!("/v1/operators/{rita_id}/revoke"),
            None,
            StatusCode::OK,
        )
        .await;
    let (status, _, _) = get(&server, "/ui/approvals", Some(&again.cookie)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

async fn forms_from_other_origins_or_without_the_token_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (secret, task_id, approval) = pending_request(&server, "ui-csrf-agent").await;
    let (_, rita) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;
    let rita = sign_in(&server, &rita).await;
    let path = format!("/ui/approvals/{approval}/approve");
    let host = server.base.trim_start_matches("http://").to_owned();
    let good = [
        ("csrf", rita.csrf.as_str()),
        ("reason", "fine"),
        ("scope", "crm:export:customers/emea"),
        ("ttl_seconds", "300"),
    ];
    struct Attempt<'a> {
        cookie: Option<&'a str>,
        headers: Vec<(&'a str, &'a str)>,
        form: Vec<(&'a str, &'a str)>,
        code: &'a str,
    }
    let attempt = |cookie, headers, form, code| Attempt {
        cookie,
        headers,
        form,
        code,
    };
    let session = Some(rita.cookie.as_str());
    let refusals = [
        // Another site, as the browser says.
        attempt(
            session,
            vec![("origin", "http://evil.example")],
            good.to_vec(),
            "csrf_failed",
        ),
        attempt(
            session,
            vec![("sec-fetch-site", "cross-site")],
            good.to_vec(),
            "csrf_failed",
        ),
        attempt(
            session,
            vec![("sec-fetch-site", "same-site")],
            good.to_vec(),
            "csrf_failed",
        ),
        // No token, or another one.
        attempt(session, vec![], good[1..].to_vec(), "csrf_failed"),
        attempt(
            session,
            vec![],
            [&[("csrf", "forged")], &good[1..]].concat(),
            "csrf_failed",
        ),
        // No session at all.
        attempt(None, vec![], good.to_vec(), "not_signed_in"),
    ];
    for a in refusals {
        let (status, _, body) = post(&server, &path, a.cookie, &a.headers, &a.form).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{:?}: {body}", a.headers);
        assert!(body.contains(a.code), "{} expected: {body}", a.code);
        assert_eq!(approval_state(&server, &approval).await, "pending");
    }

    // The reviewer's own form, from this origin: approved narrower, and the agent collects it.
    let origin = format!("http://{host}");
    let (status, headers, _) = post(
        &server,
        &path,
        Some(&rita.cookie),
        &[("origin", &origin), ("sec-fetch-site", "same-origin")],
        &good,
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location(&headers),
        format!("/ui/approvals/{approval}?done=approved")
    );
    let (_, task) = server
        .call(
            Method::GET,
            &format!("/v1/tasks/{task_id}"),
            Some(&secret),
            None,
        )
        .await;
    assert_eq!(task["state"], "active");
    assert_eq!(task["ttl_seconds"], 300);

    // Bad input in a signed form: the page again with the code, nothing decided twice.
    let (status, _, body) = post(&server, &path, Some(&rita.cookie), &[], &good).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("approval_not_pending"));
    let (_, _, second) = pending_request(&server, "ui-csrf-agent-2").await;
    let broader = [
        ("csrf", rita.csrf.as_str()),
        ("reason", "fine"),
        ("scope", "crm:*"),
    ];
    let (status, _, body) = post(
        &server,
        &format!("/ui/approvals/{second}/approve"),
        Some(&rita.cookie),
        &[],
        &broader,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("not_narrower"), "{body}");
    let (status, _, body) = post(
        &server,
        &format!("/ui/approvals/{second}/deny"),
        Some(&rita.cookie),
        &[],
        &[("csrf", rita.csrf.as_str()), ("reason", "")],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("validation_failed"));
    assert_eq!(approval_state(&server, &second).await, "pending");
}

async fn a_reviewer_sees_and_decides_only_its_teams_requests(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, _, approval) = pending_request(&server, "ui-team-agent").await;
    server.team("elsewhere").await;
    let (_, sam) = server.operator("sam", &["reviewer"], &["elsewhere"]).await;
    let sam = sign_in(&server, &sam).await;
    let (status, _, inbox) = get(&server, "/ui/approvals", Some(&sam.cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!inbox.contains(&approval));
    assert!(inbox.contains("Nothing waiting here."));
    let (status, _, _) = get(
        &server,
        &format!("/ui/approvals/{approval}"),
        Some(&sam.cookie),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = post(
        &server,
        &format!("/ui/approvals/{approval}/approve"),
        Some(&sam.cookie),
        &[],
        &[
            ("csrf", &sam.csrf),
            ("reason", "why not"),
            ("scope", "crm:export:customers/emea"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(approval_state(&server, &approval).await, "pending");

    // The admin sees it, with its context, in the inbox and on its page.
    let admin = sign_in(&server, ADMIN_TOKEN).await;
    let (_, _, inbox) = get(
        &server,
        "/ui/approvals?risk=any&kind=scope_escalation",
        Some(&admin.cookie),
    )
    .await;
    assert!(inbox.contains(&format!("request-{approval}")));
    let (_, _, page) = get(
        &server,
        &format!("/ui/approvals/{approval}"),
        Some(&admin.cookie),
    )
    .await;
    assert!(page.contains("crm:export:customers/emea") && page.contains("quarterly export"));
    assert!(page.contains("approve-form"));
    // A filter value that means nothing is a clear 422, not an empty list.
    let (status, _, body) = get(&server, "/ui/approvals?risk=extreme", Some(&admin.cookie)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("validation_failed"));
}

async fn pages_carry_strict_headers_and_unknown_ones_are_404(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = sign_in(&server, ADMIN_TOKEN).await;
    for path in ["/ui/approvals", "/ui/nhis", "/ui/findings", "/ui/login"] {
        let (status, headers, _) = get(&server, path, Some(&admin.cookie)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["cache-control"], "no-store");
    }
    let (status, headers, body) = get(&server, "/ui/static/htmx.min.js", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(body.contains("htmx"));
    for path in [
        "/ui/static/../Cargo.toml",
        "/ui/static/nope.js",
        "/ui/nowhere",
    ] {
        let (status, _, _) = get(&server, path, Some(&admin.cookie)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _, _) = get(&server, "/ui/nhis/no-such-nhi", Some(&admin.cookie)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn an_escalated_request_is_offered_to_the_fallback_team(backend: Backend) {
    // Separation of duties: the owner team may not approve, so requests go to the fallback
    // team when they are filed.
    let server = TestServer::start_with(backend, |c| c.separation_of_duties = true).await;
    let (_, _, first) = pending_request(&server, "ui-sod-warmup").await;
    server.team("backup").await;
    server
        .call(
            Method::PATCH,
            "/v1/teams/owners-oauth",
            Some(ADMIN_TOKEN),
            Some(json!({"fallback_team": "backup"})),
        )
        .await;
    let (secret, task_id, approval) = pending_request(&server, "ui-sod-agent").await;
    let (_, bea) = server.operator("bea", &["reviewer"], &["backup"]).await;
    let (_, rita) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;

    // The fallback team's reviewer finds it in the inbox, escalated, with the forms.
    let bea = sign_in(&server, &bea).await;
    let (_, _, inbox) = get(&server, "/ui/approvals", Some(&bea.cookie)).await;
    assert!(inbox.contains(&format!("request-{approval}")));
    assert!(
        !inbox.contains(&format!("request-{first}")),
        "filed before the fallback existed"
    );
    let (status, _, page) = get(
        &server,
        &format!("/ui/approvals/{approval}"),
        Some(&bea.cookie),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"escalated\""), "{page}");
    assert!(page.contains("approve-form"));

    // The owner team's reviewer may look, and deny, but not approve.
    let rita = sign_in(&server, &rita).await;
    let path = format!("/ui/approvals/{approval}/approve");
    let form = [
        ("csrf", rita.csrf.as_str()),
        ("reason", "mine"),
        ("scope", "crm:export:customers/emea"),
    ];
    let (status, _, body) = post(&server, &path, Some(&rita.cookie), &[], &form).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("own_team_nhi"));
    assert_eq!(approval_state(&server, &approval).await, "pending");

    let form = [
        ("csrf", bea.csrf.as_str()),
        ("reason", "checked by backup"),
        ("scope", "crm:export:customers/emea"),
    ];
    let (status, _, _) = post(&server, &path, Some(&bea.cookie), &[], &form).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, task) = server
        .call(
            Method::GET,
            &format!("/v1/tasks/{task_id}"),
            Some(&secret),
            None,
        )
        .await;
    assert_eq!(task["state"], "active");
}

async fn findings_are_listed_shown_and_resolved_with_a_reason(backend: Backend) {
    let server = TestServer::start(backend).await;
    // An orphan makes a finding: its team's one member is revoked, and the jobs run.
    let team = server.team("vanishing").await;
    let (member, _) = server.operator("vera", &["reviewer"], &["vanishing"]).await;
    server.nhi("lonely-bot", "vanishing").await;
    server
        .admin(
            Method::POST,
            &format!("/v1/operators/{member}/revoke"),
            None,
            StatusCode::OK,
        )
        .await;
    let report = server
        .admin(Method::POST, "/v1/lifecycle/run", None, StatusCode::OK)
        .await;
    assert_eq!(report["orphans"], 1, "{report}");
    let found = server
        .admin(
            Method::GET,
            "/v1/findings?kind=orphaned",
            None,
            StatusCode::OK,
        )
        .await;
    let id = found["items"][0]["id"].as_str().unwrap().to_owned();

    let admin = sign_in(&server, ADMIN_TOKEN).await;
    let (status, _, list) = get(&server, "/ui/findings", Some(&admin.cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        list.contains(&format!("/ui/findings/{id}")) && list.contains("lonely-bot"),
        "{list}"
    );
    let (status, _, page) = get(&server, &format!("/ui/findings/{id}"), Some(&admin.cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("has no active member left"), "{page}");
    assert!(
        page.contains(team["id"].as_str().unwrap()),
        "the evidence: {page}"
    );
    assert!(page.contains("acknowledge-form"), "{page}");

    // Without the form's token nothing changes; with it, the finding is acknowledged.
    let path = format!("/ui/findings/{id}/acknowledge");
    let (status, _, _) = post(
        &server,
        &path,
        Some(&admin.cookie),
        &[],
        &[("reason", "looking")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, headers, _) = post(
        &server,
        &path,
        Some(&admin.cookie),
        &[],
        &[("csrf", &admin.csrf), ("reason", "looking into it")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), format!("/ui/findings/{id}"));
    let shown = server
        .admin(
            Method::GET,
            &format!("/v1/findings/{id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(shown["state"], "acknowledged", "{shown}");
    let (status, _, _) = post(
        &server,
        &format!("/ui/findings/{id}/dismiss"),
        Some(&admin.cookie),
        &[],
        &[("csrf", &admin.csrf), ("reason", "the team was merged")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // Resolved: gone from the default (unresolved) list, found under its state.
    let (_, _, list) = get(&server, "/ui/findings", Some(&admin.cookie)).await;
    assert!(!list.contains(&format!("/ui/findings/{id}")), "{list}");
    let (_, _, list) = get(&server, "/ui/findings?state=dismissed", Some(&admin.cookie)).await;
    assert!(list.contains(&format!("/ui/findings/{id}")), "{list}");
    let (_, _, page) = get(&server, &format!("/ui/findings/{id}"), Some(&admin.cookie)).await;
    assert!(
        !page.contains("dismiss-form") && page.contains("the team was merged"),
        "{page}"
    );
    // Deciding again is refused with its stable code, on the page.
    let (status, _, page) = post(
        &server,
        &format!("/ui/findings/{id}/accept"),
        Some(&admin.cookie),
        &[],
        &[("csrf", &admin.csrf), ("reason", "again")],
    )
    .await;
    assert!(status.is_client_error(), "{status}");
    assert!(page.contains("error-code"), "{page}");
    for bad in [
        format!("/ui/findings/{id}/explode"),
        "/ui/findings/no-such-finding/dismiss".to_owned(),
    ] {
        let (status, _, _) = post(
            &server,
            &bad,
            Some(&admin.cookie),
            &[],
            &[("csrf", &admin.csrf), ("reason", "x")],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
    }
    let (status, _, _) = get(&server, "/ui/findings?state=bogus", Some(&admin.cookie)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // A reviewer of another team sees neither the finding nor the nhi's name.
    server.team("others").await;
    let (_, other) = server.operator("otto", &["reviewer"], &["others"]).await;
    let other = sign_in(&server, &other).await;
    let (_, _, list) = get(&server, "/ui/findings?state=any", Some(&other.cookie)).await;
    assert!(
        !list.contains(&id) && !list.contains("lonely-bot"),
        "{list}"
    );
    let (status, _, _) = get(&server, &format!("/ui/findings/{id}"), Some(&other.cookie)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

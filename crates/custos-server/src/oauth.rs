//! The OAuth 2.0 authorization server: client authentication (RFC 6749 §2.3, RFC 7523), the
//! token endpoint's `client_credentials` grant, introspection (RFC 7662) and revocation
//! (RFC 7009), and the minting and checking of RFC 9068 access tokens that tasks share.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use custos_core::issuance::{self, AccessTokenClaims};
use custos_core::jose::{self, ClientAssertionExpectations, Expectations, JwtError, PublicKey};
use custos_core::token::{self, SecretKind};
use custos_core::{Credential, CredentialKind, EventKind, Nhi, NhiStatus, Scope, Timestamp};
use custos_store::Revocation;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::secrets::{self, hashes_equal};
use crate::service::{AppState, new_id};

/// RFC 7523 §2.2: the only client assertion type accepted.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// RFC 8693 §2.1: the token exchange grant.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3: the only token type exchanged and issued here.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 §3: our access tokens are JWTs, so this type names them too.
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Clock skew tolerated on every time claim.
const LEEWAY_SECONDS: u32 = 30;
/// A client assertion may live at most this long; its `jti` is remembered that long.
const MAX_ASSERTION_LIFETIME_SECONDS: u32 = 300;

/// An RFC 6749 §5.2 error.
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// Set when the client authenticated with HTTP Basic: a 401 must then challenge it.
    pub basic_challenge: bool,
}

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
            basic_challenge: false,
        }
    }

    pub fn invalid_client(description: impl Into<String>, basic: bool) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            basic_challenge: basic,
            ..Self::new("invalid_client", description)
        }
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        if e.status.is_server_error() {
            Self {
                status: e.status,
                ..Self::new("server_error", e.detail)
            }
        } else {
            Self::new("invalid_request", e.detail)
        }
    }
}

impl From<custos_store::StoreError> for OAuthError {
    fn from(e: custos_store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

/// Token endpoint responses must not be cached (RFC 6749 §5.1).
pub fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.basic_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"custos\""),
            );
        }
        no_store(response)
    }
}

/// The parameters of a form-encoded OAuth request. RFC 6749 §3.2: no parameter may appear
/// twice, and one sent empty counts as absent.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(body) {
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(OAuthError::new(
                    "invalid_request",
                    format!("the parameter {name} appears more than once"),
                ));
            }
            // Nothing Custos stores can hold a NUL (PostgreSQL refuses it in text).
            if name.contains('\0') || value.contains('\0') {
                return Err(OAuthError::new(
                    "invalid_request",
                    format!("the parameter {name} holds a NUL character"),
                ));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self(pairs))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| {
            OAuthError::new(
                "invalid_request",
                format!("the parameter {name} is required"),
            )
        })
    }
}

/// A client that proved who it is.
pub struct Client {
    pub nhi: Nhi,
    /// The static key or client key it proved itself with.
    pub credential: Credential,
}

fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || OAuthError::invalid_client("malformed basic credentials", true);
    let value = value.to_str().map_err(|_| bad())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(bad());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "the token endpoint takes HTTP Basic client authentication, not bearer tokens",
            true,
        ));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    // RFC 6749 §2.3.1: both halves are form-urlencoded before they are joined.
    let unescape = |text: &str| {
        form_urlencoded::parse(format!("x={text}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let (id, secret) = (unescape(id), unescape(secret));
    if id.contains('\0') || secret.contains('\0') {
        return Err(bad());
    }
    Ok(Some((id, secret)))
}

/// Authenticates the client of a token, introspection or revocation request by exactly one
/// method: HTTP Basic or form `client_secret` with a static key, or a `private_key_jwt`
/// assertion signed by a key registered on the NHI.
pub async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    endpoint: &str,
) -> Result<Client, OAuthError> {
    let basic = basic_credentials(headers)?;
    let form_secret = params.get("client_secret");
    let assertion = params.get("client_assertion");
    let methods = usize::from(basic.is_some())
        + usize::from(form_secret.is_some())
        + usize::from(assertion.is_some());
    if methods > 1 {
        return Err(OAuthError::new(
            "invalid_request",
            "use exactly one client authentication method",
        ));
    }
    let form_id = params.get("client_id");
    if let Some(assertion) = assertion {
        if params.get("client_assertion_type") != Some(JWT_BEARER_ASSERTION) {
            return Err(OAuthError::new(
                "invalid_request",
                format!("client_assertion_type must be {JWT_BEARER_ASSERTION}"),
            ));
        }
        return authenticate_assertion(state, assertion, form_id, endpoint).await;
    }
    let is_basic = basic.is_some();
    let (client_id, secret) = match (basic, form_secret) {
        (Some((id, secret)), None) => (id, secret),
        (None, Some(secret)) => (
            form_id
                .ok_or_else(|| OAuthError::invalid_client("client_id is required", false))?
                .to_owned(),
            secret.to_owned(),
        ),
        _ => {
            return Err(OAuthError::invalid_client(
                "client authentication is required",
                false,
            ));
        }
    };
    if form_id.is_some_and(|id| id != client_id) {
        return Err(OAuthError::new(
            "invalid_request",
            "client_id differs from the authenticated client",
        ));
    }
    let refused = || OAuthError::invalid_client("client authentication failed", is_basic);
    if token::classify(&secret) != Ok(SecretKind::StaticKey) {
        return Err(refused());
    }
    let hash = state.keys.secret_hash(&secret);
    let credential = state
        .store
        .find_credential_by_hash(&hash)
        .await?
        .filter(|c| hashes_equal(&c.secret_hash, &hash))
        .filter(|c| c.kind == CredentialKind::StaticKey && c.nhi_id == client_id)
        .ok_or_else(refused)?;
    if !credential.is_live(state.now()) {
        return Err(refused());
    }
    let nhi = active_nhi(state, &client_id).await.ok_or_else(refused)?;
    Ok(Client { nhi, credential })
}

async fn active_nhi(state: &AppState, id: &str) -> Option<Nhi> {
    match state.store.get_nhi(id).await {
        Ok(Some(nhi)) if nhi.status == NhiStatus::Active => Some(nhi),
        _ => None,
    }
}

async fn authenticate_assertion(
    state: &AppState,
    assertion: &str,
    form_id: Option<&str>,
    endpoint: &str,
) -> Result<Client, OAuthError> {
    let refused = |why: &str| OAuthError::invalid_client(why.to_owned(), false);
    // The client is named by the assertion itself; its keys are then the only ones tried.
    let client_id = match form_id {
        Some(id) => id.to_owned(),
        None => unverified_subject(assertion)
            .ok_or_else(|| refused("the client assertion names no client"))?,
    };
    let nhi = active_nhi(state, &client_id)
        .await
        .ok_or_else(|| refused("client authentication failed"))?;
    let now = state.now();
    let registered: Vec<(Credential, PublicKey)> = client_keys(state, &nhi.id, now).await?;
    let keys: Vec<PublicKey> = registered.iter().map(|(_, k)| k.clone()).collect();
    let expected = ClientAssertionExpectations {
        client_id: &nhi.id,
        token_endpoint: endpoint,
        issuer: &state.issuer,
        leeway_seconds: LEEWAY_SECONDS,
        max_lifetime_seconds: MAX_ASSERTION_LIFETIME_SECONDS,
    };
    let verified = jose::verify_client_assertion(assertion, &keys, &expected, now)
        .map_err(|e| refused(&format!("client assertion refused: {e}")))?;
    let jti = verified
        .claims
        .get("jti")
        .and_then(Value::as_str)
        .ok_or_else(|| refused("the client assertion has no jti"))?;
    let exp = verified
        .claims
        .get("exp")
        .and_then(Value::as_i64)
        .and_then(|s| Timestamp::from_unix_millis(s.saturating_mul(1000)))
        .ok_or_else(|| refused("the client assertion has no exp"))?;
    // The verifier accepts an assertion until `exp` plus the leeway, so its jti must be
    // remembered that long: forgetting it at `exp` would let a replay through the leeway.
    let remember_until = exp.plus_seconds(i64::from(LEEWAY_SECONDS));
    if !state
        .store
        .use_client_assertion(&nhi.id, jti, remember_until, now)
        .await?
    {
        return Err(refused("the client assertion was used before"));
    }
    let kid = verified.header.kid.as_deref();
    let credential = registered
        .into_iter()
        .find(|(_, key)| kid.is_none_or(|kid| key.kid() == kid || key.thumbprint() == kid))
        .map(|(c, _)| c)
        .ok_or_else(|| refused("client authentication failed"))?;
    Ok(Client { nhi, credential })
}

/// The `sub` an assertion claims, read before any check only to know whose keys to check it
/// with; nothing else is trusted until the signature verifies.
fn unverified_subject(assertion: &str) -> Option<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    if assertion.len() > jose::MAX_TOKEN_BYTES {
        return None;
    }
    let payload = assertion.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

/// The live client keys registered on an NHI, parsed.
async fn client_keys(
    state: &AppState,
    nhi_id: &str,
    now: Timestamp,
) -> Result<Vec<(Credential, PublicKey)>, OAuthError> {
    let mut keys = Vec::new();
    let mut after = None;
    loop {
        let page = state
            .store
            .list_credentials(
                Some(nhi_id),
                &custos_core::Page {
                    after: after.clone(),
                    limit: 200,
                },
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for credential in page {
            if credential.kind != CredentialKind::ClientKey || !credential.is_live(now) {
                continue;
            }
            let jwk = credential
                .public_jwk
                .as_deref()
                .and_then(|text| serde_json::from_str::<Value>(text).ok());
            if let Some(key) = jwk.and_then(|jwk| PublicKey::from_jwk(&jwk).ok()) {
                keys.push((credential, key));
            }
        }
    }
    Ok(keys)
}

/// What a new access token is for.
pub struct TokenSpec<'a> {
    /// The NHI the token is issued to (its `client_id`).
    pub holder: &'a Nhi,
    /// The NHI on whose authority it acts (`sub`); the holder unless delegated.
    pub subject: &'a str,
    pub scope: Scope,
    pub expires_at: Timestamp,
    pub task_id: Option<String>,
    /// What the token was obtained with or delegated from: revoking it revokes the token.
    pub parent: Option<&'a Credential>,
    /// Delegations between this token and one issued directly: the parent's plus one for a
    /// token exchange, 0 otherwise.
    pub depth: u32,
    pub act: Option<Value>,
    pub created_by: String,
}

/// Signs an access token and records it. The token itself is returned once and kept nowhere:
/// the store holds its keyed hash, its claims and its place in the delegation graph.
pub fn access_token(state: &AppState, spec: TokenSpec<'_>) -> (String, Credential) {
    let now = state.now();
    let jti = new_id();
    let claims = AccessTokenClaims {
        issuer: state.issuer.clone(),
        audience: vec![state.issuer.clone()],
        subject: spec.subject.to_owned(),
        client_id: spec.holder.id.clone(),
        jti: jti.clone(),
        issued_at: now,
        expires_at: spec.expires_at,
        scope: spec.scope.clone(),
        task_id: spec.task_id.clone(),
        act: spec.act,
    };
    let key = state.keyring.active();
    let token = jose::sign_jwt(&key, jose::ACCESS_TOKEN_TYP, &claims.to_json());
    let hash = state.keys.secret_hash(&token);
    let credential = Credential {
        id: jti,
        nhi_id: spec.holder.id.clone(),
        kind: CredentialKind::AccessToken,
        fingerprint: secrets::fingerprint_of_hash(&hash),
        secret_hash: hash.to_vec(),
        created_at: now,
        expires_at: Some(spec.expires_at),
        revoked_at: None,
        created_by: spec.created_by,
        scope: Some(spec.scope),
        task_id: spec.task_id,
        parent_id: spec.parent.map(|p| p.id.clone()),
        depth: spec.depth,
        public_jwk: None,
        last_used_at: None,
    };
    (token, credential)
}

/// The event recording an access token's issue.
pub fn issued_event(state: &AppState, credential: &Credential) -> custos_core::DomainEvent {
    let mut event = state
        .event(
            EventKind::CredentialIssued,
            custos_core::Actor::Nhi(credential.nhi_id.clone()),
            format!("nhi:{}", credential.nhi_id),
        )
        .with("credential", &credential.id)
        .with("kind", credential.kind.as_str())
        .with("fingerprint", &credential.fingerprint);
    if let Some(expires_at) = credential.expires_at {
        event = event.with("expires_at", expires_at.to_rfc3339());
    }
    if let Some(scope) = &credential.scope {
        event = event.with("scope", scope.to_strings().join(" "));
    }
    if let Some(task) = &credential.task_id {
        event = event.with("task", task);
    }
    if let Some(parent) = &credential.parent_id {
        event = event.with("parent", parent);
    }
    event
}

/// Why a presented access token is refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenRefusal {
    #[error("{0}")]
    Jwt(#[from] JwtError),
    #[error("the token is unknown to this server")]
    Unknown,
    #[error("the token has been revoked")]
    Revoked,
    #[error("a credential this token was delegated from has been revoked or has expired")]
    AncestorNotLive,
    #[error("nhi {0} is not active")]
    NhiNotActive(String),
    #[error(transparent)]
    Store(#[from] custos_store::StoreError),
}

/// A token that verified and is live, with its record and the NHI holding it.
pub struct LiveToken {
    pub claims: serde_json::Map<String, Value>,
    pub credential: Credential,
    pub nhi: Nhi,
}

/// Checks a presented access token against the keys and against live state: its record and
/// every delegation ancestor unrevoked and unexpired, and every NHI along the chain active.
/// The signature and claims of one of our access tokens (`typ`, issuer, audience, time),
/// reloading the signing keys once if the `kid` is unknown.
pub async fn verify_access_token_jwt(
    state: &AppState,
    token: &str,
    now: Timestamp,
) -> Result<jose::VerifiedJwt, JwtError> {
    let expected = Expectations::access_token(&state.issuer, &state.issuer, LEEWAY_SECONDS);
    match jose::verify_jwt(token, &state.keyring.published(now), &expected, now) {
        Err(JwtError::UnknownKey) if state.keyring.may_refresh(now) => {
            // Another node may have rotated the signing key since this one loaded them.
            let _ = state
                .keyring
                .refresh(state.store.as_ref(), &state.keys, now)
                .await;
            jose::verify_jwt(token, &state.keyring.published(now), &expected, now)
        }
        other => other,
    }
}

pub async fn check_access_token(state: &AppState, token: &str) -> Result<LiveToken, TokenRefusal> {
    let now = state.now();
    let verified = verify_access_token_jwt(state, token, now).await?;
    let jti = verified
        .claims
        .get("jti")
        .and_then(Value::as_str)
        .ok_or(JwtError::MissingClaim("jti"))?;
    let chain = state.store.credential_chain(jti).await?;
    let Some(credential) = chain.first().cloned() else {
        return Err(TokenRefusal::Unknown);
    };
    let hash = state.keys.secret_hash(token);
    if credential.kind != CredentialKind::AccessToken
        || !hashes_equal(&credential.secret_hash, &hash)
    {
        return Err(TokenRefusal::Unknown);
    }
    if credential.revoked_at.is_some() {
        return Err(TokenRefusal::Revoked);
    }
    if chain.iter().skip(1).any(|c| !c.is_live(now)) {
        return Err(TokenRefusal::AncestorNotLive);
    }
    let mut holder = None;
    for (i, link) in chain.iter().enumerate() {
        let nhi = state
            .store
            .get_nhi(&link.nhi_id)
            .await?
            .filter(|n| n.status == NhiStatus::Active)
            .ok_or_else(|| TokenRefusal::NhiNotActive(link.nhi_id.clone()))?;
        if i == 0 {
            holder = Some(nhi);
        }
    }
    Ok(LiveToken {
        claims: verified.claims,
        credential,
        nhi: holder.ok_or(TokenRefusal::Unknown)?,
    })
}

/// The `scope` parameter: space-separated grants (RFC 6749 §3.3).
fn requested_scope(params: &Params) -> Result<Option<Scope>, OAuthError> {
    params
        .get("scope")
        .map(|text| {
            let grants: Vec<&str> = text.split(' ').filter(|g| !g.is_empty()).collect();
            Scope::parse(&grants).map_err(|e| OAuthError::new("invalid_scope", e.to_string()))
        })
        .transpose()
}

/// `POST /oauth2/token`.
pub async fn token(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, OAuthError> {
    let params = Params::parse(body)?;
    let grant_type = params.require("grant_type")?;
    let endpoint = format!("{}/oauth2/token", state.issuer);
    match grant_type {
        "client_credentials" => {
            let client = authenticate_client(state, headers, &params, &endpoint).await?;
            client_credentials(state, &client, &params).await
        }
        TOKEN_EXCHANGE => {
            let client = authenticate_client(state, headers, &params, &endpoint).await?;
            token_exchange(state, &client, &params).await
        }
        other => Err(OAuthError::new(
            "unsupported_grant_type",
            format!("grant_type {other:?} is not supported"),
        )),
    }
}

async fn client_credentials(
    state: &AppState,
    client: &Client,
    params: &Params,
) -> Result<Value, OAuthError> {
    let nhi = &client.nhi;
    let scope = requested_scope(params)?.unwrap_or_else(|| nhi.scope_ceiling.clone());
    if scope.is_empty() {
        return Err(OAuthError::new(
            "invalid_scope",
            "the nhi's scope ceiling is empty",
        ));
    }
    if !scope.is_subset_of(&nhi.scope_ceiling) {
        let excess: Vec<String> = scope
            .excess_over(&nhi.scope_ceiling)
            .map(ToString::to_string)
            .collect();
        return Err(OAuthError::new(
            "invalid_scope",
            format!("beyond the nhi's scope ceiling: {}", excess.join(" ")),
        ));
    }
    let now = state.now();
    let ttl = state.limits.issuance.default_ttl_seconds;
    let expires_at = issuance::expiry(nhi, now, ttl);
    let (token, credential) = access_token(
        state,
        TokenSpec {
            holder: nhi,
            subject: &nhi.id,
            scope,
            expires_at,
            task_id: None,
            parent: Some(&client.credential),
            depth: 0,
            act: None,
            created_by: format!("nhi:{}", nhi.id),
        },
    );
    let event = issued_event(state, &credential).with("grant", "client_credentials");
    state
        .store
        .create_credential(&credential, &event)
        .await
        .map_err(|e| match e {
            custos_store::StoreError::Precondition(_) => {
                OAuthError::invalid_client("the client's key was revoked meanwhile", false)
            }
            other => other.into(),
        })?;
    Ok(token_response(&token, &credential, now))
}

/// A presented token of an accepted type, checked against live state.
async fn exchanged_token(
    state: &AppState,
    params: &Params,
    name: &str,
) -> Result<Option<LiveToken>, OAuthError> {
    let Some(token) = params.get(name) else {
        return Ok(None);
    };
    let kind = params.require(&format!("{name}_type"))?;
    if kind != ACCESS_TOKEN_TYPE && kind != JWT_TOKEN_TYPE {
        return Err(OAuthError::new(
            "invalid_request",
            format!("{name}_type must be {ACCESS_TOKEN_TYPE}"),
        ));
    }
    match check_access_token(state, token).await {
        Ok(live) => Ok(Some(live)),
        Err(TokenRefusal::Store(e)) => Err(e.into()),
        Err(refusal) => Err(OAuthError::new(
            "invalid_grant",
            format!("{name}: {refusal}"),
        )),
    }
}

/// RFC 8693 delegation: the holder of a token (the subject token) hands a narrower, shorter
/// one to another NHI, named by its actor token or by `audience`, or to itself. The new token
/// keeps the subject, names the new holder in `act` above the earlier actors, and is a child
/// of the subject token in the delegation graph.
async fn token_exchange(
    state: &AppState,
    client: &Client,
    params: &Params,
) -> Result<Value, OAuthError> {
    if let Some(kind) = params.get("requested_token_type")
        && kind != ACCESS_TOKEN_TYPE
    {
        return Err(OAuthError::new(
            "invalid_request",
            format!("only {ACCESS_TOKEN_TYPE} can be issued"),
        ));
    }
    if params.get("subject_token").is_none() {
        return Err(OAuthError::new(
            "invalid_request",
            "the parameter subject_token is required",
        ));
    }
    let parent = exchanged_token(state, params, "subject_token")
        .await?
        .ok_or_else(|| OAuthError::new("invalid_request", "subject_token is required"))?;
    let actor = exchanged_token(state, params, "actor_token").await?;
    let child = match (&actor, params.get("audience")) {
        (Some(actor), _) => actor.nhi.clone(),
        (None, Some(audience)) => state
            .store
            .get_nhi(audience)
            .await?
            .ok_or_else(|| OAuthError::new("invalid_target", "audience names no nhi"))?,
        (None, None) => client.nhi.clone(),
    };
    // Only a party to the delegation may ask for it: the subject token's holder handing it
    // down, or the sub-agent it is handed to.
    if client.nhi.id != parent.nhi.id && client.nhi.id != child.id {
        return Err(OAuthError::new(
            "invalid_grant",
            "the client is neither the holder of the subject token nor the delegate",
        ));
    }
    let parent_scope =
        parent.credential.scope.clone().ok_or_else(|| {
            OAuthError::new("invalid_grant", "the subject token carries no scope")
        })?;
    let parent_expiry = parent
        .credential
        .expires_at
        .ok_or_else(|| OAuthError::new("invalid_grant", "the subject token has no expiry"))?;
    let requested = requested_scope(params)?;
    let now = state.now();
    let delegation = issuance::plan_delegation(
        issuance::Parent {
            scope: &parent_scope,
            expires_at: parent_expiry,
            depth: parent.credential.depth,
            live: true,
        },
        &child,
        requested.as_ref(),
        None,
        &state.limits.issuance,
        now,
    )
    .map_err(|e| {
        let error = match e {
            issuance::IssuanceError::ScopeTooBroad { .. } | issuance::IssuanceError::EmptyScope => {
                "invalid_scope"
            }
            issuance::IssuanceError::TooDeep { .. } => "invalid_request",
            _ => "invalid_grant",
        };
        OAuthError::new(error, e.to_string())
    })?;
    let subject = parent
        .claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or(&parent.nhi.id)
        .to_owned();
    let act = issuance::delegated_act(&child.id, parent.claims.get("act"));
    let (token, credential) = access_token(
        state,
        TokenSpec {
            holder: &child,
            subject: &subject,
            scope: delegation.scope,
            expires_at: delegation.expires_at,
            task_id: parent.credential.task_id.clone(),
            parent: Some(&parent.credential),
            depth: delegation.depth,
            act: Some(act),
            created_by: format!("nhi:{}", client.nhi.id),
        },
    );
    let event = issued_event(state, &credential).with("grant", "token-exchange");
    state
        .store
        .create_credential(&credential, &event)
        .await
        .map_err(|e| match e {
            custos_store::StoreError::Precondition(why) => OAuthError::new("invalid_grant", why),
            other => other.into(),
        })?;
    // The delegating NHI's profile counts the NHIs it hands work to: a sudden fan-out is a
    // named detection. A failure here is logged, never a refused exchange.
    if let Err(error) =
        crate::behaviour::observe_delegation(state, &parent.nhi.id, &child.id, now).await
    {
        tracing::warn!(nhi = %parent.nhi.id, error = %error.detail, "cannot feed a delegation to the baseline");
    }
    let mut answer = token_response(&token, &credential, now);
    answer["issued_token_type"] = json!(ACCESS_TOKEN_TYPE);
    Ok(answer)
}

fn token_response(token: &str, credential: &Credential, now: Timestamp) -> Value {
    let expires_in = credential
        .expires_at
        .map_or(0, |e| (e.unix_millis() - now.unix_millis()).max(0) / 1000);
    json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": credential.scope.as_ref().map(|s| s.to_strings().join(" ")),
    })
}

/// `POST /oauth2/introspect` (RFC 7662). The caller authenticates as a client; a client sees
/// its own tokens, and one whose ceiling holds `custos:introspect` sees every token. Anything
/// else, like any dead or unknown token, is only `{"active": false}`.
pub async fn introspect(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, OAuthError> {
    let params = Params::parse(body)?;
    let endpoint = format!("{}/oauth2/introspect", state.issuer);
    let caller = authenticate_client(state, headers, &params, &endpoint).await?;
    let token = params.require("token")?;
    let inactive = json!({"active": false});
    let Ok(live) = check_access_token(state, token).await else {
        return Ok(inactive);
    };
    let may_see_all = caller.nhi.scope_ceiling.covers(&custos_core::Action {
        service: "custos".into(),
        operation: "introspect".into(),
        resource: None,
    });
    if !may_see_all && live.nhi.id != caller.nhi.id {
        return Ok(inactive);
    }
    let mut answer = serde_json::Map::new();
    answer.insert("active".into(), json!(true));
    answer.insert("token_type".into(), json!("Bearer"));
    for name in [
        "scope",
        "client_id",
        "sub",
        "aud",
        "iss",
        "exp",
        "iat",
        "nbf",
        "jti",
        "act",
        "task_id",
        "authorization_details",
    ] {
        if let Some(value) = live.claims.get(name) {
            answer.insert(name.into(), value.clone());
        }
    }
    Ok(Value::Object(answer))
}

/// `POST /oauth2/revoke` (RFC 7009). A client revokes its own tokens (and with them every
/// token delegated from them). Unknown or foreign tokens get the same empty 200, so the
/// endpoint tells nothing about tokens the caller does not hold.
pub async fn revoke(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<(), OAuthError> {
    let params = Params::parse(body)?;
    let endpoint = format!("{}/oauth2/revoke", state.issuer);
    let caller = authenticate_client(state, headers, &params, &endpoint).await?;
    let token = params.require("token")?;
    let credential = match check_access_token(state, token).await {
        Ok(live) => Some(live.credential),
        Err(_) => {
            // A token already dead, or a static key presented for revocation.
            let hash = state.keys.secret_hash(token);
            state
                .store
                .find_credential_by_hash(&hash)
                .await?
                .filter(|c| hashes_equal(&c.secret_hash, &hash))
        }
    };
    if let Some(credential) = credential.filter(|c| c.nhi_id == caller.nhi.id) {
        let event = state
            .event(
                EventKind::CredentialRevoked,
                custos_core::Actor::Nhi(caller.nhi.id.clone()),
                format!("nhi:{}", caller.nhi.id),
            )
            .with("credential", &credential.id)
            .with("fingerprint", &credential.fingerprint)
            .with("via", "oauth2/revoke");
        state
            .store
            .revoke_credentials(Revocation::Credential(&credential.id), state.now(), &event)
            .await?;
    }
    Ok(())
}

/// RFC 8414 metadata: exactly what this server supports.
pub fn metadata(state: &AppState) -> Value {
    let issuer = &state.issuer;
    json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
        "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
        "grant_types_supported": ["client_credentials", TOKEN_EXCHANGE],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "introspection_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "revocation_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"],
        "authorization_details_types_supported": [issuance::AUTHORIZATION_DETAILS_TYPE],
    })
}

/// The JWKS: every key a live token may name.
pub fn jwks(state: &AppState) -> Value {
    let published = state.keyring.published(state.now());
    json!({"keys": published.keys().iter().map(PublicKey::to_jwk).collect::<Vec<_>>()})
}

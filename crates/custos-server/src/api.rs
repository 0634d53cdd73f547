//! Wire types of the management API. Domain types stay in the core; these say exactly what
//! goes over HTTP, refuse unknown fields, and describe themselves for the OpenAPI document.

use std::collections::BTreeMap;

use custos_core::{Grant, NhiKind, NhiStatus, Role, Scope, Timestamp};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat,
    SchemaType, Type,
};

/// The text form of a grant, as a JSON-schema pattern (documentation and fuzzing).
pub const GRANT_PATTERN: &str =
    r"^[a-z0-9][a-z0-9._-]{0,63}:(\*|[A-Za-z0-9._/-]{1,64})(:[!-~]{1,512})?$";
pub const SLUG_PATTERN: &str = r"^[a-z0-9][a-z0-9._-]{0,63}$";
/// The operation of a grant in object form.
pub const GRANT_OPERATION_PATTERN: &str = r"^(\*|[A-Za-z0-9._/-]{1,64})$";
/// The resource glob of a grant in object form.
pub const GRANT_RESOURCE_PATTERN: &str = r"^[!-~]{1,512}$";

/// Characters `custos_core::validate` calls control characters (Unicode `Cc`).
macro_rules! control {
    () => {
        r"\u0000-\u001f\u007f-\u009f"
    };
}
/// Characters Rust's `str::trim` removes that are not control characters (Unicode
/// `White_Space`).
macro_rules! space {
    () => {
        r"\u0020\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    };
}

/// Human-facing text (names, contacts, purposes), as `custos_core::validate::text` accepts it:
/// not blank, no control characters, no leading or trailing whitespace.
pub const TEXT_PATTERN: &str = concat!(
    "^[^",
    control!(),
    space!(),
    "]([^",
    control!(),
    "]*[^",
    control!(),
    space!(),
    "])?$"
);
/// A tag or external id value: no control characters.
pub const LABEL_VALUE_PATTERN: &str = concat!("^[^", control!(), "]*$");
/// An entity tag as this server sends it: the record's version in double quotes.
pub const ETAG_PATTERN: &str = r#"^"[0-9]+"$"#;
/// A pagination cursor as this server issues it (unpadded URL-safe base64).
pub const CURSOR_PATTERN: &str = r"^[A-Za-z0-9_-]+$";

fn enum_schema(values: impl IntoIterator<Item = &'static str>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
}

pub fn role_schema() -> ObjectBuilder {
    enum_schema(Role::ALL.iter().map(|r| r.as_str()))
}
pub fn kind_schema() -> ObjectBuilder {
    enum_schema(NhiKind::ALL.iter().map(|k| k.as_str()))
}
pub fn status_schema() -> ObjectBuilder {
    enum_schema(NhiStatus::ALL.iter().map(|s| s.as_str()))
}
pub fn roles_schema() -> ArrayBuilder {
    ArrayBuilder::new().items(role_schema()).min_items(Some(1))
}
/// A scope as the server writes it: grants in text form.
pub fn scope_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(GRANT_PATTERN)),
        )
        .max_items(Some(custos_core::scope::MAX_GRANTS))
}
/// A scope as the server reads it: each grant in text form (`"crm:read:customers/*"`) or as an
/// object (`{"service": "crm", "operation": "read", "resource": "customers/*"}`).
pub fn scope_input_schema() -> ArrayBuilder {
    let object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "service",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(SLUG_PATTERN)),
        )
        .property(
            "operation",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(GRANT_OPERATION_PATTERN)),
        )
        .property(
            "resource",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .pattern(Some(GRANT_RESOURCE_PATTERN)),
        )
        .required("service")
        .required("operation")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    ArrayBuilder::new()
        .items(
            OneOfBuilder::new()
                .item(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(GRANT_PATTERN)),
                )
                .item(object),
        )
        .max_items(Some(custos_core::scope::MAX_GRANTS))
}
pub fn cursor_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(CURSOR_PATTERN))
        .description(Some("The `next_cursor` of the previous page."))
}
pub fn tag_filter_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[^:]")),
        )
        .description(Some(
            "`key` (has the tag) or `key:value`; repeat for several.",
        ))
}
pub fn timestamp_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
}
pub fn nullable_timestamp_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
}
pub fn labels_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(SLUG_PATTERN)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(256))
                .pattern(Some(LABEL_VALUE_PATTERN)),
        ))
        .max_properties(Some(custos_core::validate::MAX_TAGS))
}

fn text(max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(TEXT_PATTERN))
}
fn nullable_text(max: usize) -> ObjectBuilder {
    text(max).schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}
pub fn text_100() -> ObjectBuilder {
    text(100)
}
pub fn text_200() -> ObjectBuilder {
    text(200)
}
pub fn team_contact_schema() -> ObjectBuilder {
    text(320).description(Some(
        "Where to reach the team: an email address, a chat channel, a pager rota.",
    ))
}
pub fn text_2000() -> ObjectBuilder {
    text(2000)
}
pub fn nullable_text_200() -> ObjectBuilder {
    nullable_text(200)
}
pub fn nullable_text_320() -> ObjectBuilder {
    nullable_text(320)
}

/// Deserialises a field that may be absent (outer `None`), `null` (`Some(None)`) or a value.
pub fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Deserialises a field that may be absent but is never `null`: in a merge patch `null` would
/// mean "remove", which only `expires_at` allows.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Deserialises a scope, refusing more than [`custos_core::scope::MAX_GRANTS`] entries as sent
/// (before duplicates are merged), as the document's `maxItems` says.
pub fn bounded_scope<'de, D: Deserializer<'de>>(d: D) -> Result<Scope, D::Error> {
    let grants = Vec::<Grant>::deserialize(d)?;
    if grants.len() > custos_core::scope::MAX_GRANTS {
        return Err(serde::de::Error::custom(format!(
            "a scope holds at most {} grants",
            custos_core::scope::MAX_GRANTS
        )));
    }
    Scope::new(grants).map_err(serde::de::Error::custom)
}

fn present_bounded_scope<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Scope>, D::Error> {
    bounded_scope(d).map(Some)
}

// ---- teams ----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    #[schema(schema_with = text_100)]
    pub name: String,
    #[schema(schema_with = team_contact_schema)]
    pub contact: String,
    /// The team (a name or id) that also sees this team's approval requests once they have
    /// waited `escalate_after_seconds` unanswered; never the team itself.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, min_length = 1, max_length = 128)]
    pub fallback_team: Option<String>,
    /// How long a request waits before it is escalated to the fallback team: 60 s to 30 days.
    /// Without it, the configured `escalate_after_seconds` (default an hour).
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, minimum = 60, maximum = 2592000)]
    pub escalate_after_seconds: Option<u32>,
}

/// Changes a team's escalation (admin), as a JSON merge patch: a field left out stays as it
/// is, `null` clears it. Clearing the fallback team clears the wait too, unless the patch sets
/// one.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTeam {
    /// The fallback team, a name or id; `null`: none (requests are never escalated).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = nullable_team_ref_schema)]
    pub fallback_team: Option<Option<String>>,
    /// 60 s to 30 days; `null`: the configured default.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = nullable_escalation_seconds_schema)]
    pub escalate_after_seconds: Option<Option<u32>>,
}

pub fn nullable_team_ref_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .min_length(Some(1))
        .max_length(Some(128))
}

pub fn nullable_escalation_seconds_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .minimum(Some(60))
        .maximum(Some(2_592_000))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamView {
    pub id: String,
    pub name: String,
    pub contact: String,
    #[schema(schema_with = timestamp_schema)]
    pub created_at: Timestamp,
    /// The id of the team this team's approval requests are escalated to; `null`: none.
    pub fallback_team: Option<String>,
    /// How long a request waits before it is escalated; `null`: the configured default (or
    /// never, without a fallback team).
    pub escalate_after_seconds: Option<u32>,
    /// Operators who are members (reviewers of this team).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberView>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub id: String,
    pub name: String,
    #[schema(schema_with = roles_schema)]
    pub roles: Vec<Role>,
    pub active: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamList {
    pub items: Vec<TeamView>,
}

// ---- operators ----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOperator {
    #[schema(schema_with = text_100)]
    pub name: String,
    #[schema(schema_with = roles_schema)]
    pub roles: Vec<Role>,
    /// Team names or ids; required for reviewers.
    #[serde(default)]
    pub teams: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorView {
    pub id: String,
    pub name: String,
    #[schema(schema_with = roles_schema)]
    pub roles: Vec<Role>,
    /// Ids of the teams this operator reviews for.
    pub teams: Vec<String>,
    /// The token's first characters, to recognise it; never the token.
    pub token_hint: String,
    #[schema(schema_with = timestamp_schema)]
    pub created_at: Timestamp,
    pub created_by: Option<String>,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub revoked_at: Option<Timestamp>,
    pub active: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorCreated {
    #[serde(flatten)]
    pub operator: OperatorView,
    /// The operator's API token. Shown once; only a keyed hash of it is kept.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorList {
    pub items: Vec<OperatorView>,
}

// ---- NHIs ----

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnerInput {
    /// The owner team's name or id.
    #[schema(min_length = 1)]
    pub team: String,
    #[schema(schema_with = nullable_text_200)]
    pub application: Option<String>,
    #[schema(schema_with = nullable_text_320)]
    pub contact: Option<String>,
}

/// `POST /v1/nhis/{id}/transfer`: the new owner, and why.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferNhi {
    pub owner: OwnerInput,
    /// Why the NHI changes hands: kept in the trail.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNhi {
    #[schema(schema_with = text_200)]
    pub name: String,
    #[schema(schema_with = kind_schema)]
    pub kind: NhiKind,
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub platform: String,
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub environment: String,
    pub owner: OwnerInput,
    #[schema(schema_with = text_2000)]
    pub purpose: String,
    #[serde(default)]
    #[schema(schema_with = nullable_timestamp_schema)]
    pub expires_at: Option<Timestamp>,
    /// The most this NHI may hold without a human saying yes.
    #[serde(default, deserialize_with = "bounded_scope")]
    #[schema(schema_with = scope_input_schema)]
    pub scope_ceiling: Scope,
    #[serde(default)]
    #[schema(schema_with = labels_schema)]
    pub tags: BTreeMap<String, String>,
    /// Identifiers of this NHI on other systems (an ARN, a client id, …).
    #[serde(default)]
    #[schema(schema_with = labels_schema)]
    pub external_ids: BTreeMap<String, String>,
}

/// A partial update (JSON merge patch): absent fields stay as they are; `expires_at: null`
/// clears the expiry. Other fields cannot be null.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNhi {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = text_200)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = kind_schema)]
    pub kind: Option<NhiKind>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub platform: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub environment: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub owner: Option<OwnerInput>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = text_2000)]
    pub purpose: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = nullable_timestamp_schema)]
    pub expires_at: Option<Option<Timestamp>>,
    #[serde(default, deserialize_with = "present_bounded_scope")]
    #[schema(schema_with = scope_input_schema)]
    pub scope_ceiling: Option<Scope>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = labels_schema)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = labels_schema)]
    pub external_ids: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OwnerView {
    /// The owner team's name.
    pub team: String,
    pub team_id: String,
    pub application: Option<String>,
    pub contact: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NhiView {
    pub id: String,
    pub name: String,
    #[schema(schema_with = kind_schema)]
    pub kind: NhiKind,
    pub platform: String,
    pub environment: String,
    #[schema(schema_with = status_schema)]
    pub status: NhiStatus,
    pub owner: OwnerView,
    pub purpose: String,
    #[schema(schema_with = scope_schema)]
    pub scope_ceiling: Scope,
    #[schema(schema_with = labels_schema)]
    pub tags: BTreeMap<String, String>,
    #[schema(schema_with = labels_schema)]
    pub external_ids: BTreeMap<String, String>,
    #[schema(schema_with = timestamp_schema)]
    pub created_at: Timestamp,
    #[schema(schema_with = timestamp_schema)]
    pub updated_at: Timestamp,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub expires_at: Option<Timestamp>,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub last_used_at: Option<Timestamp>,
    /// Changes on every update; also sent as the ETag.
    pub version: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NhiList {
    pub items: Vec<NhiView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

// ---- credentials ----

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueStaticKey {
    /// Lifetime in seconds; at most the configured maximum age (default 90 days).
    #[schema(minimum = 60, maximum = 31536000)]
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StaticKeyIssued {
    pub id: String,
    pub nhi_id: String,
    /// The key. Shown once; only its keyed hash is kept.
    pub secret: String,
    pub fingerprint: String,
    #[schema(schema_with = timestamp_schema)]
    pub expires_at: Timestamp,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialView {
    pub id: String,
    pub nhi_id: String,
    pub kind: String,
    pub fingerprint: String,
    #[schema(schema_with = timestamp_schema)]
    pub created_at: Timestamp,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub expires_at: Option<Timestamp>,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub revoked_at: Option<Timestamp>,
    pub created_by: String,
    /// When the decision point last let it through (written every few seconds).
    #[schema(schema_with = nullable_timestamp_schema)]
    pub last_used_at: Option<Timestamp>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialList {
    pub items: Vec<CredentialView>,
    pub next_cursor: Option<String>,
}

// ---- events and identity ----

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub seq: i64,
    pub id: String,
    /// The event type, e.g. `nhi.registered`.
    pub kind: String,
    /// `operator:<id>`, `nhi:<id>` or `system`.
    pub actor: String,
    pub subject: String,
    #[schema(schema_with = timestamp_schema)]
    pub occurred_at: Timestamp,
    pub details: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub items: Vec<EventView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// `operator` or `nhi`.
    pub kind: String,
    pub id: String,
    pub name: String,
    #[schema(schema_with = roles_schema)]
    pub roles: Vec<Role>,
    pub teams: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    /// `/readyz`: the node that answered (as named in its PostgreSQL connections'
    /// `application_name`, `custos-listener <node>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

// ---- OAuth ----

/// The form parameters of the OAuth endpoints. Which apply depends on the endpoint and grant.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct OAuthForm {
    /// `client_credentials` (token endpoint only).
    grant_type: Option<String>,
    /// Space-separated grants, e.g. `crm:read mail:send`.
    scope: Option<String>,
    /// The token to introspect or revoke.
    token: Option<String>,
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_in: i64,
    pub scope: String,
}

/// An OAuth error (RFC 6749 §5.2).
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthErrorBody {
    pub error: String,
    pub error_description: String,
}

// ---- tasks and approvals ----

/// A request for a credential for one task. By an NHI (bearer: its static key or a token) for
/// itself; by an operator with `nhi_id` on an NHI's behalf, which always waits for a second
/// person's approval and whose credential only the NHI can collect.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    #[schema(schema_with = text_2000)]
    pub purpose: String,
    #[serde(deserialize_with = "bounded_scope")]
    #[schema(schema_with = scope_input_schema)]
    pub scope: Scope,
    /// Lifetime in seconds, capped by the configured maximum (default 15 minutes).
    #[schema(minimum = 1, maximum = 31622400)]
    pub ttl_seconds: Option<u32>,
    /// Only for operators: the NHI the task is for.
    pub nhi_id: Option<String>,
    /// Where to hear that the task's approval request was decided (approved, denied, by a
    /// standing rule, or expired): `https`, or `http` to a host named in
    /// `notify_allowed_hosts` only, and always within `notify_allowed_hosts` when that is set.
    /// Custos then POSTs `{"type": "task.decided", "task_id", "state", "decision",
    /// "approval_id", "decided_at"}` (never the credential: collect it with
    /// `GET /v1/tasks/{id}`), retried with backoff until a 2xx, with the headers
    /// `Custos-Delivery` (the delivery id, the same on every retry) and
    /// `Custos-Callback-Signature`: a compact JWS with detached content (RFC 7515 Appendix F),
    /// `<header>..<signature>`, over the exact body, signed by the server's current signing
    /// key with `typ` `custos-callback+jws`. To verify, put the base64url of the raw body
    /// between the two dots and check the compact JWS against the key named by `kid` in
    /// `/.well-known/jwks.json`; no shared secret is needed.
    #[schema(max_length = 2048, pattern = "^[Hh][Tt][Tt][Pp][Ss]?://")]
    pub callback_url: Option<String>,
}

/// A task's credential. `access_token` appears once, in the response that minted it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskCredential {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    pub jti: String,
    #[schema(schema_with = timestamp_schema)]
    pub expires_at: Timestamp,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    pub id: String,
    pub nhi_id: String,
    pub purpose: String,
    #[schema(schema_with = scope_schema)]
    pub scope: Scope,
    pub ttl_seconds: u32,
    /// `active`, `pending_approval`, `denied` or `ended`.
    pub state: String,
    pub requested_by: String,
    #[schema(schema_with = timestamp_schema)]
    pub created_at: Timestamp,
    pub approval_id: Option<String>,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub activated_at: Option<Timestamp>,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub expires_at: Option<Timestamp>,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub ended_at: Option<Timestamp>,
    pub credential: Option<TaskCredential>,
    /// Where the decision of the task's approval request is posted, signed.
    pub callback_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalView {
    pub id: String,
    /// What is asked: `scope_escalation` (a task beyond its NHI's ceiling), `policy_approval`
    /// (one action a guardrail holds back), `anomaly` (an action out of the baseline), or a
    /// review of the NHI itself: `resume`, `decommission`, `ownership`.
    pub kind: String,
    pub nhi_id: String,
    /// The task that waits on the request; `null` for a review of the NHI itself.
    pub task_id: Option<String>,
    pub requested_by: String,
    pub purpose: String,
    #[schema(schema_with = scope_schema)]
    pub requested_scope: Scope,
    /// The grants beyond the NHI's scope ceiling: what the approval is really about.
    pub excess: Vec<String>,
    pub requested_ttl_seconds: u32,
    /// The guardrail policies that raised it.
    pub policies: Vec<String>,
    /// `low`, `medium` or `high`, judged when it was asked.
    pub risk: String,
    /// What made the risk what it is.
    pub risk_factors: Vec<String>,
    /// How many reviewers must approve (a quorum for high-risk requests).
    pub required_approvals: u32,
    /// The approvals counted so far towards the quorum, before the deciding one.
    pub approvals: Vec<VoteView>,
    /// `pending`, `approved`, `denied` or `expired`.
    pub state: String,
    #[schema(schema_with = timestamp_schema)]
    pub created_at: Timestamp,
    /// Unanswered by then, the request expires, and its task is denied.
    #[schema(schema_with = timestamp_schema)]
    pub expires_at: Timestamp,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub decided_at: Option<Timestamp>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub granted_scope: Option<Vec<String>>,
    pub granted_ttl_seconds: Option<u32>,
    /// The fallback team (its id) the request was escalated to: unanswered past the owner
    /// team's wait, or at once under separation of duties. Its reviewers may decide it too.
    pub escalated_to: Option<String>,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub escalated_at: Option<Timestamp>,
    /// What a reviewer needs to decide (on `GET /v1/approvals/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<ApprovalContext>,
}

/// Everything about a request a reviewer decides on: who asks and who owns it, what it asks
/// against what the NHI may do already, what it would reach, and how such requests went.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalContext {
    pub nhi: NhiSummary,
    /// The NHI's scope ceiling now.
    pub ceiling: Vec<String>,
    /// The grants asked for that the ceiling already allows.
    pub within_ceiling: Vec<String>,
    /// The resources the grants asked beyond the ceiling would reach, with their sensitivity
    /// tags from the resource catalogue.
    pub reach: Vec<ReachView>,
    /// Earlier requests of the same NHI for the same grants, and how they were decided.
    pub history: RequestHistory,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NhiSummary {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub environment: String,
    pub status: String,
    pub owner_team: String,
    pub owner_team_name: Option<String>,
    pub owner_contact: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReachView {
    pub grant: String,
    pub sensitivity: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RequestHistory {
    pub approved: u32,
    pub denied: u32,
    pub expired: u32,
    /// The latest few, newest first.
    pub recent: Vec<PastRequest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PastRequest {
    pub id: String,
    pub state: String,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    #[schema(schema_with = timestamp_schema)]
    pub created_at: Timestamp,
}

/// One reviewer's approval, counted towards a quorum.
#[derive(Debug, Serialize, ToSchema)]
pub struct VoteView {
    pub reviewer: String,
    pub scope: Vec<String>,
    pub ttl_seconds: u32,
    pub reason: String,
    #[schema(schema_with = timestamp_schema)]
    pub at: Timestamp,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalList {
    pub items: Vec<ApprovalView>,
    pub next_cursor: Option<String>,
}

/// Approving, optionally with less than was asked.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    #[schema(schema_with = text_2000)]
    pub reason: String,
    /// A subset of the requested scope.
    #[serde(default, deserialize_with = "present_bounded_scope")]
    #[schema(schema_with = scope_input_schema)]
    pub scope: Option<Scope>,
    /// At most the requested lifetime.
    #[schema(minimum = 1, maximum = 31622400)]
    pub ttl_seconds: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DenyRequest {
    #[schema(schema_with = text_2000)]
    pub reason: String,
}

/// A standing rule: approve this NHI's requests within `scope` for a while.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRule {
    pub nhi_id: String,
    #[serde(deserialize_with = "bounded_scope")]
    #[schema(schema_with = scope_input_schema)]
    pub scope: Scope,
    /// How long the rule lasts: default 7 days, at most 90.
    #[schema(minimum = 60, maximum = 7776000)]
    pub ttl_seconds: Option<u32>,
    #[schema(schema_with = text_2000)]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    pub id: String,
    pub nhi_id: String,
    pub scope: Vec<String>,
    pub reason: String,
    pub created_by: String,
    #[schema(schema_with = timestamp_schema)]
    pub created_at: Timestamp,
    #[schema(schema_with = timestamp_schema)]
    pub expires_at: Timestamp,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub revoked_at: Option<Timestamp>,
    /// Neither revoked nor expired.
    pub active: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    pub items: Vec<RuleView>,
}

/// One decision for several similar requests: each is decided on its own, as if alone.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchDecision {
    /// 1 to 100 approval request ids.
    #[schema(min_items = 1, max_items = 100)]
    pub ids: Vec<String>,
    /// `approve` (each as asked) or `deny`.
    #[schema(pattern = "^(approve|deny)$")]
    pub decision: String,
    #[schema(schema_with = text_2000)]
    pub reason: String,
}

/// How each request of a batch went: its view, or the problem that left it undecided.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchOutcome {
    pub id: String,
    /// `decided` (approved or denied), `counted` (an approval towards a quorum) or `refused`.
    pub outcome: String,
    pub approval: Option<ApprovalView>,
    /// The stable code of the problem, when refused.
    pub code: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    pub items: Vec<BatchOutcome>,
}

// ---- key management ----

#[derive(Debug, Serialize, ToSchema)]
pub struct StaticKeyRotated {
    /// The new key, shown once.
    pub key: StaticKeyIssued,
    pub previous_id: String,
    /// When the replaced key stops working: now plus the configured grace period.
    #[schema(schema_with = timestamp_schema)]
    pub previous_expires_at: Timestamp,
}

/// A public key for `private_key_jwt` client authentication (RFC 7523).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterClientKey {
    /// A public JWK: EC P-256, OKP Ed25519 or RSA of 2048 to 4096 bits. Private members are
    /// refused.
    #[schema(value_type = Object)]
    pub jwk: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyView {
    pub kid: String,
    /// `ES256`, `EdDSA` or `RS256`.
    pub alg: String,
    /// `active` (signs new tokens), `retired_published` (still verifies) or `retired`.
    pub status: String,
    #[schema(schema_with = timestamp_schema)]
    pub created_at: Timestamp,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub retired_at: Option<Timestamp>,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub publish_until: Option<Timestamp>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyList {
    pub items: Vec<SigningKeyView>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSigningKey {
    /// The new key's algorithm; the active key's when absent.
    #[schema(pattern = "^(ES256|EdDSA|RS256)$")]
    pub alg: Option<String>,
}

// ---- audit log ----

/// The latest signed checkpoint of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointView {
    /// Leaves (events) in the log at this checkpoint.
    pub size: u64,
    /// The RFC 6962 root hash, base64.
    pub root: String,
    /// The C2SP signed note: the tlog checkpoint and its Ed25519 signature.
    pub note: String,
    /// The log's verifier key, in the signed-note `vkey` form.
    pub verifier_key: String,
    #[schema(schema_with = timestamp_schema)]
    pub created_at: Timestamp,
}

/// An RFC 9162 inclusion proof, with the event it proves.
#[derive(Debug, Serialize, ToSchema)]
pub struct InclusionProofView {
    pub index: u64,
    pub size: u64,
    /// The leaf hash, base64: SHA-256 of 0x00 and the event's canonical bytes.
    pub leaf_hash: String,
    /// The audit path, base64, leaf side first.
    pub hashes: Vec<String>,
    pub event: EventView,
}

/// An RFC 9162 consistency proof.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsistencyProofView {
    pub from: u64,
    pub to: u64,
    /// Base64 hashes.
    pub hashes: Vec<String>,
}

/// A secret to fingerprint. It is hashed and forgotten: never stored, never logged.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HashRequest {
    #[schema(min_length = 1, max_length = 16384)]
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HashResponse {
    /// The name the secret has in the trail (`fingerprint` in event details).
    pub fingerprint: String,
}

// ---- decommissioning ----

/// A page of decommissioning workflows, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecommissionList {
    /// Each workflow: `id`, `nhi_id`, `step` (`revoke`, `tombstone`, `archive`, `notify` or
    /// `done`), `trigger`, `requested_by`, `reason`, `teardown` (what its steps did),
    /// `receipt` (the signed teardown receipt, once done), `failures`, `last_error`,
    /// `started_at`, `updated_at`, `finished_at`.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<custos_core::lifecycle::Decommission>,
    pub next_cursor: Option<String>,
}

// ---- behaviour ----

/// A page of findings, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct FindingList {
    /// Each finding: `id`, `kind`, `nhi_id`, `state`, `severity`, `score`, `summary`,
    /// `evidence` (`events` with the features that scored, and the `baseline` they departed
    /// from), `action`, `approval_id`, `occurrences`, `first_seen`, `last_seen`.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<custos_core::finding::Finding>,
    pub next_cursor: Option<String>,
}

/// Why a finding is acknowledged, dismissed or accepted. A dismissal needs a reason.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveFinding {
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, min_length = 1, max_length = 2000)]
    pub reason: Option<String>,
}

/// What to do when an NHI departs from its baseline after probation: `target` is `default`,
/// `nhi`, `team` or `kind` (with `id` the NHI's id, the team's name or id, or the NHI kind);
/// `action` is `record`, `alert`, `step_up` or `suspend`; below `min_severity` (default
/// `low`) a finding is only recorded. The NHI's own policy wins over its team's, over its
/// kind's, over the default one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewResponsePolicy {
    #[schema(pattern = "^(default|nhi|team|kind)$")]
    pub target: String,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, min_length = 1, max_length = 128)]
    pub id: Option<String>,
    #[schema(pattern = "^(record|alert|step_up|suspend)$")]
    pub action: String,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, pattern = "^(low|medium|high)$")]
    pub min_severity: Option<String>,
}

/// The response policies, revoked ones included, and the action when none applies.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResponsePolicyList {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<custos_core::finding::ResponsePolicy>,
    #[schema(value_type = String)]
    pub default_action: custos_core::finding::ResponseAction,
}

/// Events seen in a platform's own logs, for registered NHIs, oldest first.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservationBatch {
    #[schema(min_items = 1, max_items = 1000)]
    pub events: Vec<ObservedEvent>,
}

/// One observed event.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservedEvent {
    pub nhi_id: String,
    /// RFC 3339.
    pub at: String,
    #[schema(min_length = 1, max_length = 128)]
    pub service: String,
    #[schema(min_length = 1, max_length = 128)]
    pub operation: String,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, max_length = 1024)]
    pub resource: Option<String>,
    /// `allowed` (default), `denied` or `refused`.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, pattern = "^(allowed|denied|refused)$")]
    pub outcome: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub source_ip: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, max_length = 512)]
    pub user_agent: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, max_length = 64)]
    pub environment: Option<String>,
    /// The person the NHI acted for, when the log says (CloudTrail's `onBehalfOf.userId`).
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, min_length = 1, max_length = 256)]
    pub on_behalf_of: Option<String>,
}

/// How many events were fed to baselines, the findings they raised, and the NHI ids that
/// named no registered NHI (their events were skipped).
#[derive(Debug, Serialize, ToSchema)]
pub struct ObservationsAccepted {
    pub accepted: usize,
    pub findings: Vec<String>,
    pub unknown_nhis: Vec<String>,
}

//! Wire types of the management API. Domain types stay in the core; these say exactly what
//! goes over HTTP, refuse unknown fields, and describe themselves for the OpenAPI document.

use std::collections::BTreeMap;

use custos_core::{NhiKind, NhiStatus, Role, Scope, Timestamp};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};

/// The text form of a grant, as a JSON-schema pattern (documentation and fuzzing).
pub const GRANT_PATTERN: &str =
    r"^[a-z0-9][a-z0-9._-]{0,63}:(\*|[A-Za-z0-9._/-]{1,64})(:[!-~]{1,512})?$";
pub const SLUG_PATTERN: &str = r"^[a-z0-9][a-z0-9._-]{0,63}$";

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
pub fn scope_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(GRANT_PATTERN)),
        )
        .max_items(Some(custos_core::scope::MAX_GRANTS))
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
                .max_length(Some(256)),
        ))
        .max_properties(Some(custos_core::validate::MAX_TAGS))
}

/// Deserialises a field that may be absent (outer `None`), `null` (`Some(None)`) or a value.
pub fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

// ---- teams ----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Where to reach the team: an email address, a chat channel, a pager rota.
    #[schema(min_length = 1, max_length = 320)]
    pub contact: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamView {
    pub id: String,
    pub name: String,
    pub contact: String,
    #[schema(schema_with = timestamp_schema)]
    pub created_at: Timestamp,
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
    #[schema(min_length = 1, max_length = 100)]
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnerInput {
    /// The owner team's name or id.
    #[schema(min_length = 1)]
    pub team: String,
    #[schema(min_length = 1, max_length = 200)]
    pub application: Option<String>,
    #[schema(min_length = 1, max_length = 320)]
    pub contact: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNhi {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(schema_with = kind_schema)]
    pub kind: NhiKind,
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub platform: String,
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub environment: String,
    pub owner: OwnerInput,
    #[schema(min_length = 1, max_length = 2000)]
    pub purpose: String,
    #[serde(default)]
    #[schema(schema_with = timestamp_schema)]
    pub expires_at: Option<Timestamp>,
    /// The most this NHI may hold without a human saying yes.
    #[serde(default)]
    #[schema(schema_with = scope_schema)]
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
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(schema_with = kind_schema)]
    pub kind: Option<NhiKind>,
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub platform: Option<String>,
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub environment: Option<String>,
    pub owner: Option<OwnerInput>,
    #[schema(min_length = 1, max_length = 2000)]
    pub purpose: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = nullable_timestamp_schema)]
    pub expires_at: Option<Option<Timestamp>>,
    #[schema(schema_with = scope_schema)]
    pub scope_ceiling: Option<Scope>,
    #[schema(schema_with = labels_schema)]
    pub tags: Option<BTreeMap<String, String>>,
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
    /// Pass as `cursor` to get the next page; absent on the last page.
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
    /// `active`, `expired` or `revoked`.
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialList {
    pub items: Vec<CredentialView>,
    pub next_cursor: Option<String>,
}

// ---- events and identity ----

#[derive(Debug, Serialize, ToSchema)]
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
}

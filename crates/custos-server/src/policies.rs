//! Guardrail policies: the Cedar text and the resource catalogue it is validated against, kept
//! as numbered versions. A version is compiled before it is kept, so the one in force always
//! compiles; keeping it swaps it into the live state at once.

use custos_core::guardrails::{Catalogue, GuardrailError, Guardrails, TemplateLink, schema_text};
use custos_core::{EventKind, Role};
use custos_store::{PolicyVersion, Store};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::service::AppState;

/// The policies in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoliciesView {
    /// 0 before any version was kept (no guardrails: the scope alone decides).
    pub version: i64,
    /// Cedar policy text.
    pub policies: String,
    #[schema(value_type = Object)]
    pub catalogue: Catalogue,
    /// The links of the policy templates: each applies its template as a policy of its own.
    #[schema(value_type = Vec<Object>)]
    pub links: Vec<TemplateLink>,
    /// The name of every policy and template link, by `@id` or position.
    pub policy_ids: Vec<String>,
    #[schema(schema_with = crate::api::nullable_timestamp_schema)]
    pub created_at: Option<custos_core::Timestamp>,
    pub created_by: Option<String>,
}

/// A new version: Cedar text and, optionally, a new catalogue and new template links (the
/// current ones otherwise).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPolicies {
    pub policies: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub catalogue: Option<Catalogue>,
    /// Each binds a template's `?principal` (`{"nhi": id}` or `{"team": id}`) and `?resource`
    /// (`{"resource": {"service", "id"}}` or `{"service": name}`) under a `link_id` of its own.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub links: Option<Vec<TemplateLink>>,
}

fn invalid(error: GuardrailError) -> ApiError {
    ApiError::unprocessable(error.code(), error.to_string())
}

fn catalogue_of(version: &PolicyVersion) -> Result<Catalogue, GuardrailError> {
    serde_json::from_str(&version.catalogue)
        .map_err(|e| GuardrailError::Catalogue(format!("the stored catalogue: {e}")))
}

fn links_of(version: &PolicyVersion) -> Result<Vec<TemplateLink>, GuardrailError> {
    serde_json::from_str(&version.links).map_err(|e| GuardrailError::Link {
        link: String::new(),
        reason: format!("the stored links do not read: {e}"),
    })
}

/// The guardrails a store holds, compiled, with their version; none (version 0) if no
/// version was ever kept.
pub async fn load(store: &dyn Store) -> anyhow::Result<(i64, Guardrails)> {
    let Some(version) = store.latest_policies().await? else {
        return Ok((0, Guardrails::empty()));
    };
    let catalogue = catalogue_of(&version)?;
    let links = links_of(&version)?;
    let guardrails = Guardrails::compile_with_links(&version.policies, &links, &catalogue)?;
    Ok((version.version, guardrails))
}

pub async fn get(state: &AppState, who: &Principal) -> ApiResult<PoliciesView> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let view = match state.store.latest_policies().await? {
        None => PoliciesView {
            version: 0,
            policies: String::new(),
            catalogue: Catalogue::default(),
            links: Vec::new(),
            policy_ids: Vec::new(),
            created_at: None,
            created_by: None,
        },
        Some(version) => PoliciesView {
            catalogue: catalogue_of(&version).map_err(invalid)?,
            links: links_of(&version).map_err(invalid)?,
            policy_ids: state.live.guardrails().policy_ids(),
            version: version.version,
            policies: version.policies,
            created_at: Some(version.created_at),
            created_by: Some(version.created_by),
        },
    };
    Ok(view)
}

/// The Cedar schema the policies are validated against, for the current catalogue.
pub async fn schema(state: &AppState, who: &Principal) -> ApiResult<String> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let catalogue = match state.store.latest_policies().await? {
        None => Catalogue::default(),
        Some(version) => catalogue_of(&version).map_err(invalid)?,
    };
    Ok(schema_text(&catalogue))
}

/// Compiles and keeps a new version (admin). With `if_match`, only if the version in force is
/// still that one.
pub async fn put(
    state: &AppState,
    who: &Principal,
    input: PutPolicies,
    if_match: Option<i64>,
) -> ApiResult<PoliciesView> {
    who.require(&[Role::Admin])?;
    let current = state.store.latest_policies().await?;
    let current_version = current.as_ref().map_or(0, |v| v.version);
    if let Some(expected) = if_match
        && expected != current_version
    {
        return Err(custos_store::StoreError::VersionMismatch {
            current: current_version,
        }
        .into());
    }
    let catalogue = match (input.catalogue, &current) {
        (Some(catalogue), _) => catalogue,
        (None, Some(version)) => catalogue_of(version).map_err(invalid)?,
        (None, None) => Catalogue::default(),
    };
    let links = match (input.links, &current) {
        (Some(links), _) => links,
        (None, Some(version)) => links_of(version).map_err(invalid)?,
        (None, None) => Vec::new(),
    };
    let guardrails =
        Guardrails::compile_with_links(&input.policies, &links, &catalogue).map_err(invalid)?;
    let version = PolicyVersion {
        version: current_version + 1,
        policies: input.policies,
        catalogue: serde_json::to_string(&catalogue).unwrap_or_default(),
        links: serde_json::to_string(&links).unwrap_or_default(),
        created_at: state.now(),
        created_by: who.actor().to_string(),
    };
    let event = state
        .event(
            EventKind::PoliciesUpdated,
            who.actor(),
            format!("policies:{}", version.version),
        )
        .with("version", version.version.to_string())
        .with("policies", guardrails.policy_count().to_string())
        .with("links", links.len().to_string())
        .with("services", catalogue.services.len().to_string());
    state.store.put_policies(&version, &event).await?;
    let policy_ids = guardrails.policy_ids();
    state.live.set_guardrails(version.version, guardrails);
    Ok(PoliciesView {
        version: version.version,
        policies: version.policies,
        catalogue,
        links,
        policy_ids,
        created_at: Some(version.created_at),
        created_by: Some(version.created_by),
    })
}

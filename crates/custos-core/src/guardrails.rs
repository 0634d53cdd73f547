//! Guardrails: admin-written Cedar policies that can only take permissions away.
//!
//! A request that the credential's scope allows is then put to the guardrails. They are
//! evaluated together with an implicit base `permit(principal, action, resource);`, so only
//! `forbid` policies matter, and a `permit` written by an admin is refused when compiling: it
//! could not widen anything and would only mislead its reader. A satisfied forbid denies the
//! request; if every satisfied forbid carries the annotation `@approval_required` (with any
//! value) the request needs a human's approval instead, and a plain forbid wins over approval.
//! A policy whose evaluation fails (an integer overflow, say) counts as a plain forbid: Cedar on
//! its own would skip it, and a broken guardrail must not let a request through.
//!
//! Policies are named by their `@id("…")` annotation (1–64 characters of `A-Z a-z 0-9 _ . -`,
//! unique), or else `policy0`, `policy1`, … by position, templates included in the count.
//!
//! # The schema
//!
//! Everything lives in the namespace `Custos`; [`schema_text`] prints the schema for a catalogue.
//!
//! - `Custos::Nhi::"<nhi id>"`, a member of `Custos::Team::"<owner team id>"`, with the
//!   attributes of [`NhiFacts`].
//! - `Custos::Resource::"<service>:<resource id>"`, a member of `Custos::Service::"<service>"`,
//!   with the attributes `service`, `id` and `sensitivity` (the tags of the first catalogue
//!   pattern that matches the resource id, see [`Catalogue::sensitivity`]).
//! - `Custos::Action::"<service>:<operation>"` for every catalogued operation, a member of the
//!   groups `Custos::Action::"<service>:*"` (every operation of the service) and
//!   `Custos::Action::"*:<operation>"` (that operation on every service).
//! - The context `{ delegated, depth, hour, weekday, purpose }` of [`ActionFacts`].
//!
//! Templates may use `?principal` and `?resource`; a [`TemplateLink`] binds them to an NHI or a
//! team, and to a resource or a service, in the entity forms above.
//!
//! # Cost
//!
//! A check must not cost more as policies are added, so at compile time each policy is filed in
//! a *bucket* under two keys, each a necessary condition for the policy to be satisfied (or to
//! fail):
//!
//! - of the principal: an NHI or a team from its scope, or else from a leading condition
//!   `principal == Nhi::"x"`, `principal in Team::"t"` or `principal.<string attribute> == "v"`;
//! - of the action and resource: an action, a service or an operation group from its action or
//!   resource scope, or else from a leading condition on `action`, `resource.service == "s"` or
//!   `resource.sensitivity.contains("tag")`.
//!
//! "Leading" means that Cedar evaluates nothing before the condition that could fail (no
//! arithmetic, no extension function): if the condition is false the policy is simply not
//! satisfied, with no error to report. Any leading condition can serve, not only the first, and
//! of several principal conditions the narrowest does. A policy with neither key is evaluated
//! for every request.
//!
//! A request looks up the few buckets its principal, service, operation and resource tags name,
//! and only their policies are evaluated, each with Cedar's own evaluator as Cedar's authorizer
//! does; no bucket means no evaluation at all. The answer equals that of Cedar's authorizer on
//! the whole set (the tests check this on random policy sets and requests). The request's
//! entities are built directly in the shape the schema prescribes: the policies were validated
//! against it, and their hierarchy (an NHI in its team, a resource in its service, an action in
//! its two groups) is closed by construction, so neither check is repeated per request. Only
//! the parts of the request that the applicable policies can look at are built (a policy on
//! `context.depth` needs no resource), and what does not depend on the request (an NHI's entity,
//! a catalogued service's id, its resource patterns' tags, its actions) is built beforehand.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, OnceLock};

use cedar_policy::{
    ActionConstraint, Effect, EntityId, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet,
    PrincipalConstraint, ResourceConstraint, Schema, SlotId, Template, ValidationMode,
    ValidationWarning, Validator,
};
use cedar_policy_core::ast;
use cedar_policy_core::entities::{Entities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;
use serde::{Deserialize, Serialize};

use crate::scope::{Grant, glob_matches};

/// At most this many services in a catalogue.
pub const MAX_SERVICES: usize = 1_000;
/// At most this many operations per service.
pub const MAX_OPERATIONS: usize = 256;
/// At most this many resource patterns per service.
pub const MAX_RESOURCE_CLASSES: usize = 256;
/// At most this many sensitivity tags per resource pattern.
pub const MAX_TAGS: usize = 64;
/// At most this many policies, templates and template links together.
pub const MAX_POLICIES: usize = 10_000;
/// The annotation that turns a forbid into "needs a human's approval".
const APPROVAL_REQUIRED: &str = "approval_required";

/// Why a policy set, its template links or a catalogue was refused. `code` is stable; the
/// messages name the offending policy or item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardrailError {
    #[error("policies do not parse: {0}")]
    Parse(String),
    #[error("policies do not validate against the schema: {}", .0.join("; "))]
    Validation(Vec<String>),
    #[error(
        "policy {0:?} is a permit, but guardrails can only forbid: whatever the credential's scope allows is already permitted"
    )]
    PermitNotAllowed(String),
    #[error("policy id {0:?} must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'")]
    BadId(String),
    #[error("policy id {0:?} is used more than once")]
    DuplicateId(String),
    #[error("template link {link:?} is invalid: {reason}")]
    Link { link: String, reason: String },
    #[error("catalogue is invalid: {0}")]
    Catalogue(String),
    #[error("at most {MAX_POLICIES} policies, templates and template links are allowed, not {0}")]
    TooManyPolicies(usize),
}

impl GuardrailError {
    /// A stable, machine-readable name for the kind of error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Parse(_) => "policy_parse_error",
            Self::Validation(_) => "policy_invalid",
            Self::PermitNotAllowed(_) => "policy_permit_not_allowed",
            Self::BadId(_) => "policy_id_invalid",
            Self::DuplicateId(_) => "policy_id_duplicate",
            Self::Link { .. } => "policy_link_invalid",
            Self::Catalogue(_) => "catalogue_invalid",
            Self::TooManyPolicies(_) => "policy_too_many",
        }
    }
}

/// The services, their operations and the sensitivity of their resources: what the schema, and
/// so the policies, can name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    #[serde(default)]
    pub services: Vec<CatalogueService>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueService {
    /// A service name of the scope grammar.
    pub name: String,
    /// Operation names of the scope grammar; `*` is not an operation.
    pub operations: Vec<String>,
    /// Resource patterns in order; the first that matches a resource id gives its tags.
    #[serde(default)]
    pub resources: Vec<ResourceClass>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceClass {
    /// A resource glob of the scope grammar: `*` matches any run of characters.
    pub pattern: String,
    /// Tags of 1-64 characters of a-z, 0-9, '_', '-'.
    #[serde(default)]
    pub sensitivity: Vec<String>,
}

impl Catalogue {
    /// Checks names against the scope grammar, uniqueness and the size limits.
    pub fn validate(&self) -> Result<(), GuardrailError> {
        let invalid = |message: String| Err(GuardrailError::Catalogue(message));
        if self.services.len() > MAX_SERVICES {
            return invalid(format!(
                "at most {MAX_SERVICES} services are allowed, not {}",
                self.services.len()
            ));
        }
        let mut services = HashSet::new();
        for service in &self.services {
            let name = &service.name;
            Grant::new(name, "*", None).map_err(|e| GuardrailError::Catalogue(e.to_string()))?;
            if !services.insert(name) {
                return invalid(format!("service {name:?} is listed more than once"));
            }
            if service.operations.len() > MAX_OPERATIONS {
                return invalid(format!(
                    "service {name:?} has {} operations, at most {MAX_OPERATIONS} are allowed",
                    service.operations.len()
                ));
            }
            let mut operations = HashSet::new();
            for operation in &service.operations {
                // `*` would name the action group of the whole service, not an operation.
                if operation == "*" {
                    return invalid(format!(
                        "service {name:?} lists the operation \"*\", which is reserved for all of its operations"
                    ));
                }
                Grant::new(name, operation, None)
                    .map_err(|e| GuardrailError::Catalogue(e.to_string()))?;
                if !operations.insert(operation) {
                    return invalid(format!(
                        "service {name:?} lists the operation {operation:?} more than once"
                    ));
                }
            }
            if service.resources.len() > MAX_RESOURCE_CLASSES {
                return invalid(format!(
                    "service {name:?} has {} resource patterns, at most {MAX_RESOURCE_CLASSES} are allowed",
                    service.resources.len()
                ));
            }
            for class in &service.resources {
                Grant::new(name, "*", Some(&class.pattern))
                    .map_err(|e| GuardrailError::Catalogue(e.to_string()))?;
                if class.sensitivity.len() > MAX_TAGS {
                    return invalid(format!(
                        "resource pattern {:?} of service {name:?} has {} sensitivity tags, at most {MAX_TAGS} are allowed",
                        class.pattern,
                        class.sensitivity.len()
                    ));
                }
                if let Some(tag) = class.sensitivity.iter().find(|t| !is_valid_tag(t)) {
                    return invalid(format!(
                        "sensitivity tag {tag:?} must be 1-64 characters of a-z, 0-9, '_', '-'"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The sensitivity tags of a resource: those of the first of its service's patterns that
    /// matches the resource id, none if no pattern matches or the service is unknown.
    pub fn sensitivity(&self, service: &str, resource_id: &str) -> &[String] {
        self.services
            .iter()
            .find(|s| s.name == service)
            .map_or(&[], |s| first_match(&s.resources, resource_id))
    }
}

fn first_match<'a>(classes: &'a [ResourceClass], resource_id: &str) -> &'a [String] {
    classes
        .iter()
        .find(|c| glob_matches(c.pattern.as_bytes(), resource_id.as_bytes()))
        .map_or(&[], |c| &c.sensitivity)
}

fn is_valid_tag(tag: &str) -> bool {
    (1..=64).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// The fixed part of the schema; the actions follow from the catalogue.
const SCHEMA_ENTITIES: &str = "\
// The Custos guardrail schema, generated from the resource catalogue.
namespace Custos {
  entity Team;
  entity Nhi in [Team] = {
    name: String,
    kind: String,
    platform: String,
    environment: String,
    status: String,
    risk: Long,
    owner_team: String
  };
  entity Service;
  entity Resource in [Service] = {
    service: String,
    id: String,
    sensitivity: Set<String>
  };
  // hour: 0-23 UTC; weekday: 0 is Monday; depth: the delegation depth; purpose: the task's, or \"\".
  type RequestContext = {
    delegated: Bool,
    depth: Long,
    hour: Long,
    weekday: Long,
    purpose: String
  };
";

/// The schema that policies are validated against, in Cedar's schema syntax, for admins to
/// read. Names follow the scope grammar, so they never need escaping inside the quotes.
pub fn schema_text(catalogue: &Catalogue) -> String {
    // Writing to a `String` cannot fail, hence the ignored results below.
    let mut out = String::from(SCHEMA_ENTITIES);
    let operations: BTreeSet<&str> = catalogue
        .services
        .iter()
        .flat_map(|s| s.operations.iter().map(String::as_str))
        .collect();
    out.push_str(
        "\n  // Action groups: every operation of a service, and an operation on every service.\n",
    );
    for service in &catalogue.services {
        let _ = writeln!(out, "  action \"{}:*\";", service.name);
    }
    for operation in &operations {
        let _ = writeln!(out, "  action \"*:{operation}\";");
    }
    // Actions outside the catalogue are checked too, so every policy is typed against one
    // action that stands for them: without it an empty catalogue would leave the validator no
    // request to type a condition in, and it would pass a condition that reads a missing
    // attribute, which then fails, and so forbids, on every action. No real action is named
    // `*:*`: `evaluate` refuses a `*` service or operation.
    out.push_str(
        "\n  // Every action outside the catalogue.\n  action \"*:*\" appliesTo {\n    \
         principal: [Nhi],\n    resource: [Resource],\n    context: RequestContext\n  };\n",
    );
    for service in &catalogue.services {
        let _ = writeln!(out, "\n  // {}", service.name);
        for operation in &service.operations {
            let name = &service.name;
            let _ = writeln!(
                out,
                "  action \"{name}:{operation}\" in [\"{name}:*\", \"*:{operation}\"] appliesTo {{\n    \
                 principal: [Nhi],\n    resource: [Resource],\n    context: RequestContext\n  }};"
            );
        }
    }
    out.push_str("}\n");
    out
}

/// What the guardrails may know about an NHI. `owner_team` is the owner team's id.
#[derive(Clone, Copy, Debug)]
pub struct NhiFacts<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub kind: &'a str,
    pub platform: &'a str,
    pub environment: &'a str,
    pub status: &'a str,
    pub risk: i64,
    pub owner_team: &'a str,
}

/// One action to check. `resource` is the resource id within the service ("" for none),
/// `hour` is 0-23 UTC, `weekday` 0 (Monday) to 6, `purpose` the task's purpose or "".
#[derive(Clone, Copy, Debug)]
pub struct ActionFacts<'a> {
    pub service: &'a str,
    pub operation: &'a str,
    pub resource: &'a str,
    pub delegated: bool,
    pub depth: u32,
    pub hour: u8,
    pub weekday: u8,
    pub purpose: &'a str,
}

/// An NHI prepared for evaluation, once: the caller keeps it for as long as the NHI's facts hold.
#[derive(Clone, Debug)]
pub struct Principal {
    nhi: String,
    team: String,
    /// The values of `NHI_STRING_ATTRS`, in order.
    attrs: [String; NHI_STRING_ATTRS.len()],
    /// Shared, as the request takes it: no copy per check.
    uid: Arc<ast::EntityUID>,
    /// Cedar's entity store holding the NHI's entity alone: a check that reaches the principal
    /// starts from a copy of it rather than inserting the entity afresh. `None` if Cedar
    /// refused the entity (it cannot), and then every policy that reaches the principal forbids.
    entities: Option<Entities>,
}

/// The guardrails' answer for one action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardrailOutcome {
    Allow,
    /// Denied, by these policies (sorted). Empty only for an action whose service or operation
    /// names an action group (`*`) or whose service contains `:`, which is never allowed.
    Forbid {
        policies: Vec<String>,
    },
    /// Allowed once a human approves; every matching policy (sorted) asked for approval.
    ApprovalRequired {
        policies: Vec<String>,
    },
}

/// Binds a template's slots: `?principal` to an NHI or a team, `?resource` to a resource or a
/// service. The link is a policy named `link_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateLink {
    pub template_id: String,
    pub link_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<PrincipalSlot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceSlot>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalSlot {
    /// `Custos::Nhi::"<id>"`.
    Nhi(String),
    /// `Custos::Team::"<id>"`.
    Team(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceSlot {
    /// `Custos::Resource::"<service>:<id>"`.
    Resource { service: String, id: String },
    /// `Custos::Service::"<name>"`.
    Service(String),
}

/// The entity type names, parsed once.
struct Names {
    nhi: EntityTypeName,
    team: EntityTypeName,
    service: EntityTypeName,
    resource: EntityTypeName,
    action: EntityTypeName,
}

static NAMES: LazyLock<Names> = LazyLock::new(|| {
    let name = |text: &str| {
        EntityTypeName::from_str(text).expect("the constant entity type names are valid Cedar")
    };
    Names {
        nhi: name("Custos::Nhi"),
        team: name("Custos::Team"),
        service: name("Custos::Service"),
        resource: name("Custos::Resource"),
        action: name("Custos::Action"),
    }
});

fn uid(type_name: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
}

/// The same entity id in the form Cedar's evaluator takes.
fn core_uid(type_name: &EntityTypeName, id: &str) -> ast::EntityUID {
    let type_name: &ast::EntityType = type_name.as_ref();
    ast::EntityUID::from_components(type_name.clone(), ast::Eid::new(id), None)
}

impl PrincipalSlot {
    fn uid(&self) -> EntityUid {
        match self {
            Self::Nhi(id) => uid(&NAMES.nhi, id),
            Self::Team(id) => uid(&NAMES.team, id),
        }
    }
}

impl ResourceSlot {
    fn uid(&self) -> EntityUid {
        match self {
            Self::Resource { service, id } => uid(&NAMES.resource, &format!("{service}:{id}")),
            Self::Service(name) => uid(&NAMES.service, name),
        }
    }
}

/// The string attributes of an NHI that a condition may compare with a literal, in the order
/// `Principal::attrs` holds their values.
const NHI_STRING_ATTRS: [&str; 6] = [
    "name",
    "kind",
    "platform",
    "environment",
    "status",
    "owner_team",
];

/// What a policy requires of the principal, as far as the index can tell. `Any` is always
/// safe: such a policy is simply evaluated for every principal.
#[derive(Debug, PartialEq, Eq)]
enum PrincipalKey {
    Any,
    Nhi(String),
    Team(String),
    /// The attribute `NHI_STRING_ATTRS[.0]` equals `.1`.
    Attr(usize, String),
}

/// What a policy requires of the action and resource, with `Any` again always safe.
#[derive(Debug, PartialEq, Eq)]
enum ActionKey {
    Any,
    /// The action `"<.0>:<.1>"` itself: a policy pinned to `crm:delete` is not evaluated for
    /// `crm:read`.
    Action(String, String),
    Service(String),
    Operation(String),
    /// The resource's sensitivity contains the tag.
    Tag(String),
}

/// The index keys of a policy: one principal key, and action keys of which at least one holds
/// whenever the policy is satisfied (a policy listing several actions is filed under each).
/// Each key is a necessary condition for the policy to be satisfied *or to fail*: from its scope,
/// or from any condition that Cedar evaluates before anything that could fail (not only the
/// first: `resource.sensitivity.contains("pii") && principal.environment == "staging"` is filed
/// under both its tag and its environment, so it costs nothing for an NHI in production).
fn keys(policy: &Policy) -> (PrincipalKey, Vec<ActionKey>) {
    let json = policy.to_json().unwrap_or_default();
    let conjuncts = safe_conjuncts(&json);
    let principal = match principal_scope_key(policy.principal_constraint()) {
        // An NHI names one principal, a team or an attribute value possibly many: of several
        // principal conditions the policy is filed by the narrowest (the first if equally so).
        PrincipalKey::Any => conjuncts
            .iter()
            .filter_map(|c| principal_condition_key(c))
            .min_by_key(|key| !matches!(key, PrincipalKey::Nhi(_)))
            .unwrap_or(PrincipalKey::Any),
        key => key,
    };
    let actions = match action_scope_keys(policy) {
        keys if keys == [ActionKey::Any] => conjuncts
            .iter()
            .find_map(|c| action_condition_keys(c))
            .unwrap_or(keys),
        keys => keys,
    };
    (principal, actions)
}

fn principal_scope_key(constraint: PrincipalConstraint) -> PrincipalKey {
    match constraint {
        PrincipalConstraint::Eq(e) => principal_entity_key(&e, false),
        PrincipalConstraint::In(e) | PrincipalConstraint::IsIn(_, e) => {
            principal_entity_key(&e, true)
        }
        PrincipalConstraint::Any | PrincipalConstraint::Is(_) => PrincipalKey::Any,
    }
}

/// Only `Nhi`s are principals and an `Nhi`'s only ancestor is its team, so `principal ==
/// Nhi::"x"` and `principal in Nhi::"x"` both hold exactly for the NHI x, and `principal in
/// Team::"t"` for the members of t.
fn principal_entity_key(entity: &EntityUid, is_in: bool) -> PrincipalKey {
    let id = entity.id().unescaped().to_owned();
    if entity.type_name() == &NAMES.nhi {
        PrincipalKey::Nhi(id)
    } else if is_in && entity.type_name() == &NAMES.team {
        PrincipalKey::Team(id)
    } else {
        PrincipalKey::Any
    }
}

fn action_scope_keys(policy: &Policy) -> Vec<ActionKey> {
    let names = &*NAMES;
    // A resource is `Resource::"<service>:<id>"` in `Service::"<service>"`, so a resource scope
    // naming either fixes the service: a necessary condition on its own.
    let service = match policy.resource_constraint() {
        ResourceConstraint::Eq(e) | ResourceConstraint::In(e) | ResourceConstraint::IsIn(_, e)
            if e.type_name() == &names.resource =>
        {
            e.id()
                .unescaped()
                .split_once(':')
                .map(|(service, _)| service.to_owned())
        }
        ResourceConstraint::In(e) | ResourceConstraint::IsIn(_, e)
            if e.type_name() == &names.service =>
        {
            Some(e.id().unescaped().to_owned())
        }
        _ => None,
    };
    if let Some(service) = service {
        return vec![ActionKey::Service(service)];
    }
    match policy.action_constraint() {
        ActionConstraint::Any => vec![ActionKey::Any],
        ActionConstraint::Eq(action) => action_keys_of([action.id().unescaped()]),
        ActionConstraint::In(actions) => action_keys_of(actions.iter().map(|a| a.id().unescaped())),
    }
}

/// `"*:op"` is the group of an operation on every service, `"svc:*"` that of every operation of
/// one service, and `"svc:op"` one action, which no other action is in. An action named
/// otherwise (there is none in the schema) could be anything.
fn action_keys_of<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<ActionKey> {
    let keys: Vec<ActionKey> = ids
        .into_iter()
        .map(|id| {
            if let Some(operation) = id.strip_prefix("*:") {
                ActionKey::Operation(operation.to_owned())
            } else if let Some((service, operation)) = id.split_once(':') {
                // A service name has no `:`, so the first one ends it.
                if operation == "*" {
                    ActionKey::Service(service.to_owned())
                } else {
                    ActionKey::Action(service.to_owned(), operation.to_owned())
                }
            } else {
                ActionKey::Any
            }
        })
        .collect();
    if keys.contains(&ActionKey::Any) {
        vec![ActionKey::Any]
    } else {
        keys
    }
}

/// The conjuncts of a policy's `when` clauses (in Cedar's JSON policy format) that Cedar
/// evaluates before anything that could fail. Cedar evaluates the scope, then each clause, left
/// to right, stopping at the first false one; so if such a conjunct is false the policy is
/// neither satisfied nor failing, and the conjunct can serve as an index key. After the first
/// conjunct that might fail, nothing can: had the request not reached it, it might have failed.
fn safe_conjuncts(policy: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut safe = Vec::new();
    let conditions = policy["conditions"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for condition in conditions {
        let when = condition["kind"] == "when";
        let mut parts = Vec::new();
        if when {
            flatten_and(&condition["body"], &mut parts);
        } else {
            // An `unless` clause is one negated conjunct: never a key, but it may be passed.
            parts.push(&condition["body"]);
        }
        for part in parts {
            if !cannot_fail(part) {
                return safe;
            }
            if when {
                safe.push(part);
            }
        }
    }
    safe
}

fn flatten_and<'a>(expr: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    match expr.get("&&") {
        Some(and) => {
            flatten_and(&and["left"], out);
            flatten_and(&and["right"], out);
        }
        None => out.push(expr),
    }
}

/// Can this expression never fail, given that the policy passed strict validation? True for
/// literals, variables, the (always present) attributes of principal, resource and context, and
/// the comparisons, set tests, `like`, `has`, `is` and boolean operators over such operands:
/// strict validation guarantees their operand types. Arithmetic (which may overflow), extension
/// functions, conditionals and anything else are treated as possibly failing.
fn cannot_fail(expr: &serde_json::Value) -> bool {
    let Some((op, arg)) = expr.as_object().and_then(|o| o.iter().next()) else {
        return false;
    };
    let binary = || cannot_fail(&arg["left"]) && cannot_fail(&arg["right"]);
    match op.as_str() {
        "Value" | "Var" => true,
        "." => matches!(
            arg["left"].get("Var").and_then(|v| v.as_str()),
            Some("principal" | "resource" | "context")
        ),
        "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "contains" | "containsAll"
        | "containsAny" | "&&" | "||" => binary(),
        "!" => cannot_fail(&arg["arg"]),
        "like" | "has" | "is" => cannot_fail(&arg["left"]) && arg.get("in").is_none_or(cannot_fail),
        "Set" => arg
            .as_array()
            .is_some_and(|items| items.iter().all(cannot_fail)),
        _ => false,
    }
}

/// The two operands of `op` if the expression is that operator.
fn operands<'a>(
    expr: &'a serde_json::Value,
    op: &str,
) -> Option<(&'a serde_json::Value, &'a serde_json::Value)> {
    let arg = expr.get(op)?;
    Some((&arg["left"], &arg["right"]))
}

/// `var` if the expression is that variable.
fn is_var(expr: &serde_json::Value, var: &str) -> bool {
    expr.get("Var").and_then(|v| v.as_str()) == Some(var)
}

/// The attribute name if the expression is `var.attr`.
fn attr_of<'a>(expr: &'a serde_json::Value, var: &str) -> Option<&'a str> {
    let access = expr.get(".")?;
    is_var(&access["left"], var).then(|| access["attr"].as_str())?
}

fn string_literal(expr: &serde_json::Value) -> Option<&str> {
    expr.get("Value")?.as_str()
}

/// `(type, id)` if the expression is an entity literal.
fn entity_literal(expr: &serde_json::Value) -> Option<(&str, &str)> {
    let entity = expr.get("Value")?.get("__entity")?;
    Some((entity["type"].as_str()?, entity["id"].as_str()?))
}

/// Both orders of a commutative comparison.
fn either_way<'a, T>(
    (left, right): (&'a serde_json::Value, &'a serde_json::Value),
    f: impl Fn(&'a serde_json::Value, &'a serde_json::Value) -> Option<T>,
) -> Option<T> {
    f(left, right).or_else(|| f(right, left))
}

/// `principal == Nhi::"x"`, `principal in Team::"t"`, or `principal.<string attribute> == "v"`.
fn principal_condition_key(conjunct: &serde_json::Value) -> Option<PrincipalKey> {
    let entity = |is_in: bool| {
        move |var: &serde_json::Value, literal: &serde_json::Value| {
            let (type_name, id) = entity_literal(literal)?;
            let uid = uid(&EntityTypeName::from_str(type_name).ok()?, id);
            is_var(var, "principal").then(|| principal_entity_key(&uid, is_in))
        }
    };
    if let Some(key) = operands(conjunct, "==").and_then(|ops| either_way(ops, entity(false))) {
        return Some(key).filter(|k| *k != PrincipalKey::Any);
    }
    if let Some((left, right)) = operands(conjunct, "in") {
        return entity(true)(left, right).filter(|k| *k != PrincipalKey::Any);
    }
    either_way(operands(conjunct, "==")?, |attr, literal| {
        let position = NHI_STRING_ATTRS
            .iter()
            .position(|a| Some(*a) == attr_of(attr, "principal"))?;
        Some(PrincipalKey::Attr(
            position,
            string_literal(literal)?.to_owned(),
        ))
    })
}

/// `action == ...`, `action in ...`, `resource.service == "s"` or
/// `resource.sensitivity.contains("tag")`.
fn action_condition_keys(conjunct: &serde_json::Value) -> Option<Vec<ActionKey>> {
    let action_ids = |var: &serde_json::Value, literal: &serde_json::Value| {
        if !is_var(var, "action") {
            return None;
        }
        let items = match literal.get("Set") {
            Some(set) => set.as_array()?.iter().collect(),
            None => vec![literal],
        };
        let ids: Option<Vec<&str>> = items
            .into_iter()
            .map(|e| Some(entity_literal(e)?.1))
            .collect();
        Some(action_keys_of(ids?))
    };
    let keys = operands(conjunct, "==")
        .and_then(|ops| either_way(ops, action_ids))
        .or_else(|| {
            let (left, right) = operands(conjunct, "in")?;
            action_ids(left, right)
        })
        .or_else(|| {
            either_way(operands(conjunct, "==")?, |attr, literal| {
                let service = string_literal(literal)?;
                (attr_of(attr, "resource")? == "service")
                    .then(|| vec![ActionKey::Service(service.to_owned())])
            })
        })
        .or_else(|| {
            let (set, tag) = operands(conjunct, "contains")?;
            let tag = string_literal(tag)?;
            (attr_of(set, "resource")? == "sensitivity")
                .then(|| vec![ActionKey::Tag(tag.to_owned())])
        })?;
    Some(keys).filter(|k| *k != [ActionKey::Any])
}

/// Bucket ids by action key, for one principal key.
#[derive(Debug, Default)]
struct ActionBuckets {
    any: Option<u32>,
    /// By service, then operation.
    by_action: HashMap<String, HashMap<String, u32>>,
    by_service: HashMap<String, u32>,
    by_operation: HashMap<String, u32>,
    by_tag: HashMap<String, u32>,
}

/// Bucket ids by principal key, then action key.
#[derive(Debug, Default)]
struct SliceIndex {
    any: ActionBuckets,
    by_nhi: HashMap<String, ActionBuckets>,
    by_team: HashMap<String, ActionBuckets>,
    by_attr: [HashMap<String, ActionBuckets>; NHI_STRING_ATTRS.len()],
}

impl SliceIndex {
    /// The id of the bucket for the keys, made (empty) in `buckets` if it is new.
    fn bucket(
        &mut self,
        principal: &PrincipalKey,
        action: &ActionKey,
        buckets: &mut Vec<Vec<u32>>,
    ) -> usize {
        let by_action = match principal {
            PrincipalKey::Any => &mut self.any,
            PrincipalKey::Nhi(id) => self.by_nhi.entry(id.clone()).or_default(),
            PrincipalKey::Team(id) => self.by_team.entry(id.clone()).or_default(),
            PrincipalKey::Attr(i, value) => self.by_attr[*i].entry(value.clone()).or_default(),
        };
        let new = || {
            buckets.push(Vec::new());
            (buckets.len() - 1) as u32
        };
        let id = match action {
            ActionKey::Any => *by_action.any.get_or_insert_with(new),
            ActionKey::Action(s, o) => *by_action
                .by_action
                .entry(s.clone())
                .or_default()
                .entry(o.clone())
                .or_insert_with(new),
            ActionKey::Service(s) => *by_action.by_service.entry(s.clone()).or_insert_with(new),
            ActionKey::Operation(o) => *by_action.by_operation.entry(o.clone()).or_insert_with(new),
            ActionKey::Tag(t) => *by_action.by_tag.entry(t.clone()).or_insert_with(new),
        };
        id as usize
    }

    /// The ids of the buckets the request falls into.
    fn lookup(&self, principal: &Principal, action: &ActionFacts, tags: &[String]) -> Vec<u32> {
        let mut ids = Vec::new();
        let by_principal = [&self.any]
            .into_iter()
            .chain(self.by_nhi.get(&principal.nhi))
            .chain(self.by_team.get(&principal.team))
            .chain(
                self.by_attr
                    .iter()
                    .zip(&principal.attrs)
                    .filter_map(|(by_value, value)| by_value.get(value)),
            );
        for by_action in by_principal {
            ids.extend(by_action.any);
            ids.extend(
                by_action
                    .by_action
                    .get(action.service)
                    .and_then(|by_operation| by_operation.get(action.operation)),
            );
            ids.extend(by_action.by_service.get(action.service));
            ids.extend(by_action.by_operation.get(action.operation));
            ids.extend(tags.iter().filter_map(|t| by_action.by_tag.get(t)));
        }
        ids
    }
}

/// One evaluated policy (static or template link), prepared for the hot path.
#[derive(Debug)]
struct Compiled {
    id: String,
    approval_required: bool,
    /// The policy's scope and conditions as one expression, without its leading `true`s.
    /// Cedar's `Policy::condition` builds it afresh (a deep copy) on every call, so it is built
    /// once here.
    condition: ast::Expr,
    /// The template link's slot values; empty for a static policy.
    slots: ast::SlotEnv,
    /// What of the request the condition can look at.
    reach: Reach,
    /// The catalogued actions that the condition names outright, see `named_actions`.
    named_actions: Vec<Arc<ast::Entity>>,
}

/// The entities of the catalogued actions that a condition names outright, as in
/// `Custos::Action::"crm:read" in Custos::Action::"*:read"`. Cedar's authorizer, given the
/// schema, knows every action's groups, so the request's entities must hold these too whenever
/// the policy applies, not only the request's own action. (Groups have no groups of their own:
/// one absent from the entities answers as Cedar would.)
fn named_actions(
    condition: &ast::Expr,
    services: &HashMap<String, ServiceEntities>,
) -> Vec<Arc<ast::Entity>> {
    let action_type: &ast::EntityType = NAMES.action.as_ref();
    let mut named: Vec<Arc<ast::Entity>> = Vec::new();
    for expr in condition.subexpressions() {
        let ast::ExprKind::Lit(ast::Literal::EntityUID(uid)) = expr.expr_kind() else {
            continue;
        };
        if uid.entity_type() != action_type {
            continue;
        }
        // A service name has no `:`, so the first one ends it.
        let entity = <str>::split_once(uid.eid().as_ref(), ':')
            .and_then(|(service, operation)| services.get(service)?.action(service, operation));
        if let Some(entity) = entity
            && !named.iter().any(|e| e.uid() == entity.entity.uid())
        {
            named.push(Arc::clone(&entity.entity));
        }
    }
    named
}

/// The parts of a request that a policy's condition can look at. A request is built with only
/// what its applicable policies reach: a check that needs no resource builds none.
///
/// A variable is reached if the condition names it, and then its entity (attributes and
/// ancestors) too. So is the entity if the condition names any entity of its type, by a literal
/// or a template slot, for that might be the request's own. Nothing else can yield an entity: no
/// attribute of the schema and no field of the context is one. A variable left out is *unknown*
/// to Cedar's evaluator: a policy that used it after all would evaluate to a residual, which
/// counts as a failure and forbids. (An entity left out but named by a literal would not fail
/// so; the property test checks this analysis against Cedar's authorizer.)
#[derive(Clone, Copy, Debug, Default)]
struct Reach {
    principal: bool,
    action: bool,
    resource: bool,
    context: bool,
}

impl Reach {
    fn of(condition: &ast::Expr, slots: &ast::SlotEnv) -> Self {
        let mut reach = Self::default();
        for expr in condition.subexpressions() {
            match expr.expr_kind() {
                ast::ExprKind::Var(ast::Var::Principal) => reach.principal = true,
                ast::ExprKind::Var(ast::Var::Action) => reach.action = true,
                ast::ExprKind::Var(ast::Var::Resource) => reach.resource = true,
                ast::ExprKind::Var(ast::Var::Context) => reach.context = true,
                ast::ExprKind::Lit(ast::Literal::EntityUID(uid)) => reach.entity(uid),
                ast::ExprKind::Slot(slot) => match slots.get(slot) {
                    Some(uid) => reach.entity(uid),
                    // A link binds every slot of its template; were one unbound, assume all.
                    None => reach = reach.union(Self::all()),
                },
                _ => {}
            }
        }
        reach
    }

    fn all() -> Self {
        Self {
            principal: true,
            action: true,
            resource: true,
            context: true,
        }
    }

    /// An entity named outright: the request's own entity of its type, if any, is reached.
    fn entity(&mut self, uid: &ast::EntityUID) {
        let names = &*NAMES;
        let type_name = uid.entity_type();
        if type_name == AsRef::<ast::EntityType>::as_ref(&names.nhi) {
            self.principal = true;
        } else if type_name == AsRef::<ast::EntityType>::as_ref(&names.action) {
            self.action = true;
        } else if type_name == AsRef::<ast::EntityType>::as_ref(&names.resource) {
            self.resource = true;
        }
    }

    fn union(self, other: Self) -> Self {
        Self {
            principal: self.principal || other.principal,
            action: self.action || other.action,
            resource: self.resource || other.resource,
            context: self.context || other.context,
        }
    }
}

/// A catalogued service's part of the request's entities, built once so that a check only clones
/// it (reference counts, mostly) instead of formatting ids and allocating sets.
#[derive(Debug)]
struct ServiceEntities {
    /// `Custos::Service::"<service>"`, the parent of each of its resources.
    uid: ast::EntityUID,
    /// The resources' `service` attribute.
    name: ast::Value,
    /// The resource patterns, in order.
    classes: Vec<ResourceClass>,
    /// The `sensitivity` attribute of each pattern's resources, as a Cedar set, built when
    /// first asked for (as the actions are, below).
    sensitivity: Vec<OnceLock<ast::Value>>,
    /// The action entity of each catalogued operation, built when first asked for: a catalogue
    /// may list 256,000 actions, and each entity takes about a kilobyte.
    actions: HashMap<String, OnceLock<ActionEntity>>,
}

impl ServiceEntities {
    fn new(service: &CatalogueService) -> Self {
        let names = &*NAMES;
        Self {
            uid: core_uid(&names.service, &service.name),
            name: service.name.as_str().into(),
            classes: service.resources.clone(),
            sensitivity: service.resources.iter().map(|_| OnceLock::new()).collect(),
            actions: service
                .operations
                .iter()
                .map(|op| (op.clone(), OnceLock::new()))
                .collect(),
        }
    }

    /// The entity of the action `"<service>:<operation>"`, if the catalogue lists it; `service`
    /// is this service's name.
    fn action(&self, service: &str, operation: &str) -> Option<&ActionEntity> {
        let cell = self.actions.get(operation)?;
        Some(cell.get_or_init(|| ActionEntity::new(service, operation)))
    }

    /// The index of the first pattern matching the resource id.
    fn class(&self, resource_id: &str) -> Option<usize> {
        self.classes
            .iter()
            .position(|c| glob_matches(c.pattern.as_bytes(), resource_id.as_bytes()))
    }

    /// The `sensitivity` attribute of the resources of the pattern `class`.
    fn sensitivity(&self, class: usize) -> &ast::Value {
        self.sensitivity[class].get_or_init(|| sensitivity_value(&self.classes[class].sensitivity))
    }
}

fn sensitivity_value(tags: &[String]) -> ast::Value {
    ast::Value::set(tags.iter().map(|t| t.as_str().into()), None)
}

/// `Custos::Action::"<service>:<operation>"` in its groups `"<service>:*"` and `"*:<operation>"`.
#[derive(Debug)]
struct ActionEntity {
    uid: Arc<ast::EntityUID>,
    entity: Arc<ast::Entity>,
}

impl ActionEntity {
    fn new(service: &str, operation: &str) -> Self {
        let names = &*NAMES;
        let uid = core_uid(&names.action, &format!("{service}:{operation}"));
        let groups = HashSet::from([
            core_uid(&names.action, &format!("{service}:*")),
            core_uid(&names.action, &format!("*:{operation}")),
        ]);
        let entity =
            ast::Entity::new_with_attr_partial_value(uid.clone(), [], HashSet::new(), groups, []);
        Self {
            uid: Arc::new(uid),
            entity: Arc::new(entity),
        }
    }
}

/// Compiled guardrails: validated policies filed in buckets. Immutable, so cheap to share in an
/// `Arc` across threads.
#[derive(Debug)]
pub struct Guardrails {
    /// The static policies and links (what is evaluated), in order.
    policies: Vec<Compiled>,
    /// For each bucket, indices into `policies`, ascending.
    buckets: Vec<Vec<u32>>,
    index: SliceIndex,
    /// The catalogue's services, prepared for building requests.
    services: HashMap<String, ServiceEntities>,
}

impl Guardrails {
    /// Compiles policies without template links.
    pub fn compile(policies: &str, catalogue: &Catalogue) -> Result<Self, GuardrailError> {
        Self::compile_with_links(policies, &[], catalogue)
    }

    /// Parses the policies, names them, refuses permits, links the templates and validates
    /// everything strictly against the catalogue's schema.
    pub fn compile_with_links(
        policies: &str,
        links: &[TemplateLink],
        catalogue: &Catalogue,
    ) -> Result<Self, GuardrailError> {
        catalogue.validate()?;
        let parsed = PolicySet::from_str(policies).map_err(|errors| {
            let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
            GuardrailError::Parse(messages.join("; "))
        })?;
        let count = parsed.num_of_policies() + parsed.num_of_templates() + links.len();
        if count > MAX_POLICIES {
            return Err(GuardrailError::TooManyPolicies(count));
        }
        let set = link(name(&parsed)?, links)?;
        let (schema, _warnings) = Schema::from_cedarschema_str(&schema_text(catalogue))
            .map_err(|e| GuardrailError::Catalogue(format!("its schema does not build: {e}")))?;
        let result = Validator::new(schema).validate(&set, ValidationMode::Strict);
        if !result.validation_passed() {
            // Cedar names the policy in most messages but not all; name it in every one.
            let messages = result.validation_errors().map(|e| {
                let message = e.to_string();
                if message.starts_with("for policy ") {
                    message
                } else {
                    format!("for policy `{}`, {message}", e.policy_id())
                }
            });
            return Err(GuardrailError::Validation(messages.collect()));
        }
        // A policy that Cedar finds can never apply is a mistake, and a dangerous one: its
        // condition is typed for no action, so it may fail (and so forbid) on every action.
        let never_apply: Vec<String> = result
            .validation_warnings()
            .filter(|w| {
                matches!(
                    w,
                    ValidationWarning::ImpossiblePolicy(_)
                        | ValidationWarning::InvalidActionApplication(_)
                )
            })
            .map(ToString::to_string)
            .collect();
        if !never_apply.is_empty() {
            return Err(GuardrailError::Validation(never_apply));
        }
        Ok(Self::index(&set, catalogue))
    }

    /// Guardrails without policies: everything is allowed.
    pub fn empty() -> Self {
        Self::index(&PolicySet::new(), &Catalogue::default())
    }

    fn index(set: &PolicySet, catalogue: &Catalogue) -> Self {
        let services: HashMap<String, ServiceEntities> = catalogue
            .services
            .iter()
            .map(|s| (s.name.clone(), ServiceEntities::new(s)))
            .collect();
        let mut policies = Vec::new();
        let mut index = SliceIndex::default();
        let mut buckets: Vec<Vec<u32>> = Vec::new();
        for (i, policy) in set.policies().enumerate() {
            // At most MAX_POLICIES, so the index fits.
            let i = i as u32;
            let (principal, actions) = keys(policy);
            for action in &actions {
                let b = index.bucket(&principal, action, &mut buckets);
                let bucket = &mut buckets[b];
                // Several listed actions of one service land in the same bucket once.
                if bucket.last() != Some(&i) {
                    bucket.push(i);
                }
            }
            let ast: &ast::Policy = policy.as_ref();
            let condition = without_leading_true(ast.condition());
            let slots = ast.env().clone();
            policies.push(Compiled {
                id: policy.id().to_string(),
                approval_required: policy.annotation(APPROVAL_REQUIRED).is_some(),
                reach: Reach::of(&condition, &slots),
                named_actions: named_actions(&condition, &services),
                condition,
                slots,
            });
        }
        Self {
            policies,
            buckets,
            index,
            services,
        }
    }

    /// The sensitivity tags of a resource in the catalogue these guardrails were compiled with
    /// (see [`Catalogue::sensitivity`]).
    pub fn sensitivity(&self, service: &str, resource_id: &str) -> &[String] {
        self.services
            .get(service)
            .and_then(|s| Some(&s.classes[s.class(resource_id)?].sensitivity[..]))
            .unwrap_or(&[])
    }

    /// The number of evaluated policies: static policies and template links.
    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    /// The ids of the static policies and template links, in order (templates are not listed:
    /// they apply only through their links).
    pub fn policy_ids(&self) -> Vec<String> {
        self.policies.iter().map(|p| p.id.clone()).collect()
    }

    /// Prepares an NHI for evaluation. The result depends only on the facts, so the caller may
    /// keep it across recompilations of the guardrails.
    pub fn principal(&self, nhi: &NhiFacts) -> Principal {
        let names = &*NAMES;
        let uid = core_uid(&names.nhi, nhi.id);
        let attrs = [
            ("name", ast::Value::from(nhi.name)),
            ("kind", nhi.kind.into()),
            ("platform", nhi.platform.into()),
            ("environment", nhi.environment.into()),
            ("status", nhi.status.into()),
            ("risk", nhi.risk.into()),
            ("owner_team", nhi.owner_team.into()),
        ]
        .map(|(k, v)| (k.into(), v.into()));
        let parents = HashSet::from([core_uid(&names.team, nhi.owner_team)]);
        let entity = ast::Entity::new_with_attr_partial_value(
            uid.clone(),
            attrs,
            HashSet::new(),
            parents,
            [],
        );
        // Its only ancestor, its team, is not an entity: the hierarchy is closed as it is.
        let entities = Entities::new()
            .add_entities(
                [Arc::new(entity)],
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .ok();
        Principal {
            nhi: nhi.id.to_owned(),
            team: nhi.owner_team.to_owned(),
            attrs: [
                nhi.name,
                nhi.kind,
                nhi.platform,
                nhi.environment,
                nhi.status,
                nhi.owner_team,
            ]
            .map(str::to_owned),
            uid: Arc::new(uid),
            entities,
        }
    }

    /// Checks one action of the principal against the guardrails.
    pub fn evaluate(&self, principal: &Principal, action: &ActionFacts) -> GuardrailOutcome {
        // With `*` as its service or operation an action would be one of its own groups (a
        // cycle that Cedar's hierarchy cannot hold), and a `:` in the service would make its id
        // ambiguous. No such action can be catalogued; it is refused rather than misjudged.
        if action.service == "*" || action.operation == "*" || action.service.contains(':') {
            return GuardrailOutcome::Forbid {
                policies: Vec::new(),
            };
        }
        if self.policies.is_empty() {
            return GuardrailOutcome::Allow;
        }
        let service = self.services.get(action.service);
        let class = service.and_then(|s| Some((s, s.class(action.resource)?)));
        let tags = class.map_or(&[][..], |(s, c)| &s.classes[c].sensitivity[..]);
        let buckets = self.index.lookup(principal, action, tags);
        if buckets.is_empty() {
            return GuardrailOutcome::Allow;
        }
        // A policy with several action keys may sit in several of these buckets; evaluating it
        // twice is harmless, and the outcome lists each policy once.
        let applicable = || {
            buckets
                .iter()
                .flat_map(|&b| &self.buckets[b as usize])
                .map(|&i| &self.policies[i as usize])
        };
        let reach = applicable().fold(Reach::default(), |r, p| r.union(p.reach));
        let sensitivity = class.map(|(s, c)| s.sensitivity(c));
        let named_actions = applicable().flat_map(|p| p.named_actions.iter().cloned());
        let Some((request, entities)) = Self::request(
            principal,
            action,
            service,
            sensitivity,
            reach,
            named_actions,
        ) else {
            // Cedar refused the request's entities, which cannot happen for these; should it
            // ever, every policy that could have applied forbids.
            return GuardrailOutcome::Forbid {
                policies: sorted(applicable().map(|p| p.id.clone())),
            };
        };
        // Cedar's evaluator, as its authorizer uses it for every policy: one evaluation of each
        // condition, independent of the others.
        let evaluator = Evaluator::new(request, &entities, Extensions::all_available());
        let mut forbidding = Vec::new();
        let mut failed = false;
        let mut approval_only = true;
        for policy in applicable() {
            let value = evaluator.interpret(&policy.condition, &policy.slots);
            match value.as_ref().map(ast::Value::value_kind) {
                Ok(ast::ValueKind::Lit(ast::Literal::Bool(false))) => continue,
                Ok(ast::ValueKind::Lit(ast::Literal::Bool(true))) => {
                    approval_only &= policy.approval_required;
                }
                // Cedar would skip a policy that fails (or, as it never does once validated,
                // yields no boolean); a guardrail must not let that through. A residual (a part
                // of the request left out, see `Reach`) is such a failure.
                _ => failed = true,
            }
            forbidding.push(policy.id.clone());
        }
        if forbidding.is_empty() {
            GuardrailOutcome::Allow
        } else if approval_only && !failed {
            GuardrailOutcome::ApprovalRequired {
                policies: sorted(forbidding.into_iter()),
            }
        } else {
            GuardrailOutcome::Forbid {
                policies: sorted(forbidding.into_iter()),
            }
        }
    }

    /// The Cedar request and its entities, with only what the policies `reach`: the rest of
    /// the request is unknown to Cedar, and absent from the entities, which also hold the
    /// actions the policies name. `None` if Cedar refuses the entities.
    ///
    /// The entities are built directly in the schema's shape: the policies were validated
    /// against it, so nothing is checked again. A catalogued service's parts (its uid, its
    /// resources' `service` and `sensitivity`, its action entities) are built once, and the
    /// principal's entity comes with the `Principal`.
    fn request(
        principal: &Principal,
        action: &ActionFacts,
        service: Option<&ServiceEntities>,
        sensitivity: Option<&ast::Value>,
        reach: Reach,
        named_actions: impl Iterator<Item = Arc<ast::Entity>>,
    ) -> Option<(ast::Request, Entities)> {
        let names = &*NAMES;
        let known = |euid: Arc<ast::EntityUID>| ast::EntityUIDEntry::Known { euid, loc: None };
        let (action_entry, action_entity) = if reach.action {
            let cached = service.and_then(|s| s.action(action.service, action.operation));
            // An operation the catalogue does not list is still its service's.
            let built;
            let entity = match cached {
                Some(entity) => entity,
                None => {
                    built = ActionEntity::new(action.service, action.operation);
                    &built
                }
            };
            (
                known(Arc::clone(&entity.uid)),
                Some(Arc::clone(&entity.entity)),
            )
        } else {
            (ast::EntityUIDEntry::unknown(), None)
        };
        let (resource_entry, resource_entity) = if reach.resource {
            let uid = core_uid(
                &names.resource,
                &format!("{}:{}", action.service, action.resource),
            );
            let (service_uid, name) = match service {
                Some(s) => (s.uid.clone(), s.name.clone()),
                None => (
                    core_uid(&names.service, action.service),
                    action.service.into(),
                ),
            };
            let sensitivity = sensitivity
                .cloned()
                .unwrap_or_else(|| sensitivity_value(&[]));
            let attrs = [
                ("service", name),
                ("id", action.resource.into()),
                ("sensitivity", sensitivity),
            ]
            .map(|(k, v)| (k.into(), v.into()));
            let entity = ast::Entity::new_with_attr_partial_value(
                uid.clone(),
                attrs,
                HashSet::new(),
                HashSet::from([service_uid]),
                [],
            );
            (known(Arc::new(uid)), Some(Arc::new(entity)))
        } else {
            (ast::EntityUIDEntry::unknown(), None)
        };
        let context = reach.context.then(|| {
            // Inserted one by one, in key order: `BTreeMap::from` would first copy and sort.
            let mut record = BTreeMap::new();
            record.insert("delegated".into(), action.delegated.into());
            record.insert("depth".into(), i64::from(action.depth).into());
            record.insert("hour".into(), i64::from(action.hour).into());
            record.insert("purpose".into(), action.purpose.into());
            record.insert("weekday".into(), i64::from(action.weekday).into());
            ast::Context::Value(Arc::new(record))
        });
        // Each entity lists all of its ancestors (none of which is an entity here, so none has
        // ancestors of its own), and an action is never its own group (`evaluate` refuses it),
        // so the hierarchy is already transitively closed and acyclic: Cedar need not compute
        // it. An action both named and the request's own is the same entity, which Cedar
        // accepts twice.
        let base = if reach.principal {
            principal.entities.clone()?
        } else {
            Entities::new()
        };
        let mut others = [resource_entity, action_entity]
            .into_iter()
            .flatten()
            .chain(named_actions)
            .peekable();
        let entities = if others.peek().is_none() {
            base
        } else {
            base.add_entities(
                others,
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .ok()?
        };
        let principal_entry = if reach.principal {
            known(Arc::clone(&principal.uid))
        } else {
            ast::EntityUIDEntry::unknown()
        };
        let request =
            ast::Request::new_unchecked(principal_entry, action_entry, resource_entry, context);
        Some((request, entities))
    }
}

/// Cedar's condition is `principal-scope && (action-scope && (resource-scope && conditions))`,
/// with `true` for each unconstrained part. A leading `true &&` can neither fail nor change the
/// value, so dropping it gives the same answer with less to evaluate on every request.
fn without_leading_true(expr: ast::Expr) -> ast::Expr {
    let ast::ExprKind::And { left, right } = expr.expr_kind() else {
        return expr;
    };
    let right = without_leading_true(right.as_ref().clone());
    if matches!(
        left.expr_kind(),
        ast::ExprKind::Lit(ast::Literal::Bool(true))
    ) {
        right
    } else {
        ast::Expr::and(left.as_ref().clone(), right)
    }
}

fn sorted(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Renames every template and static policy by its `@id`, or keeps Cedar's `policyN`, and
/// refuses permits. Cedar numbers templates and policies together in order of appearance, so
/// sorting by that number checks them in the admin's order and reports the first offender.
fn name(parsed: &PolicySet) -> Result<PolicySet, GuardrailError> {
    enum Item<'a> {
        Policy(&'a Policy),
        Template(&'a Template),
    }
    let position = |id: &PolicyId| {
        AsRef::<str>::as_ref(id)
            .strip_prefix("policy")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    };
    let mut items: Vec<(usize, Item)> = parsed
        .policies()
        .map(|p| (position(p.id()), Item::Policy(p)))
        .chain(
            parsed
                .templates()
                .map(|t| (position(t.id()), Item::Template(t))),
        )
        .collect();
    items.sort_by_key(|(position, _)| *position);
    let mut set = PolicySet::new();
    let mut seen = HashSet::new();
    for (_, item) in items {
        let (generated, annotated, effect) = match &item {
            Item::Policy(p) => (p.id(), p.annotation("id"), p.effect()),
            Item::Template(t) => (t.id(), t.annotation("id"), t.effect()),
        };
        let id = match annotated {
            Some(id) if !is_valid_id(id) => return Err(GuardrailError::BadId(id.to_owned())),
            Some(id) => id.to_owned(),
            None => generated.to_string(),
        };
        if effect == Effect::Permit {
            return Err(GuardrailError::PermitNotAllowed(id));
        }
        if !seen.insert(id.clone()) {
            return Err(GuardrailError::DuplicateId(id));
        }
        let new_id = PolicyId::new(&id);
        let added = match item {
            Item::Policy(p) => set.add(p.new_id(new_id)),
            Item::Template(t) => set.add_template(t.new_id(new_id)),
        };
        // Ids were checked to be unique just above, which is all that adding can refuse.
        added.map_err(|_| GuardrailError::DuplicateId(id))?;
    }
    Ok(set)
}

/// Adds the template links, named by their `link_id`.
fn link(mut set: PolicySet, links: &[TemplateLink]) -> Result<PolicySet, GuardrailError> {
    for link in links {
        let id = &link.link_id;
        if !is_valid_id(id) {
            return Err(GuardrailError::BadId(id.clone()));
        }
        let new_id = PolicyId::new(id);
        if set.policy(&new_id).is_some() || set.template(&new_id).is_some() {
            return Err(GuardrailError::DuplicateId(id.clone()));
        }
        let mut values = HashMap::new();
        if let Some(principal) = &link.principal {
            values.insert(SlotId::principal(), principal.uid());
        }
        if let Some(resource) = &link.resource {
            values.insert(SlotId::resource(), resource.uid());
        }
        set.link(PolicyId::new(&link.template_id), new_id, values)
            .map_err(|e| GuardrailError::Link {
                link: id.clone(),
                reason: e.to_string(),
            })?;
    }
    Ok(set)
}

//! Guardrails: Cedar forbid policies over a schema generated from the resource catalogue.
//!
//! Feature tests of the semantics (forbids, approval, failing closed, naming, templates, the
//! errors an admin sees), and the oracle: for random policy sets, links and requests, the sliced
//! and cached evaluation must equal Cedar's own answer on the whole set plus the base permit,
//! with the request's entities built independently from JSON and checked against the schema.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Instant;

use cedar_policy::{
    AuthorizationError, Authorizer, Context, Effect, Entities, EntityUid, PolicyId, PolicySet,
    Request, Schema, SlotId,
};
use custos_core::guardrails::{
    ActionFacts, Catalogue, GuardrailError, GuardrailOutcome, Guardrails, NhiFacts, PrincipalSlot,
    ResourceSlot, TemplateLink, schema_text,
};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::json;

fn catalogue() -> Catalogue {
    serde_json::from_value(json!({"services": [
        {"name": "crm", "operations": ["read", "write", "delete"],
         "resources": [{"pattern": "customers/*", "sensitivity": ["pii"]}, {"pattern": "*", "sensitivity": []}]},
        {"name": "mail", "operations": ["send", "read"],
         "resources": [{"pattern": "inbox/*", "sensitivity": ["pii", "confidential"]}]},
        {"name": "s3", "operations": ["get", "delete", "list/all"],
         "resources": [{"pattern": "arn:aws:s3:::secrets/*", "sensitivity": ["secret"]}]}
    ]}))
    .unwrap()
}

fn compile(policies: &str) -> Guardrails {
    Guardrails::compile(policies, &catalogue()).unwrap_or_else(|e| panic!("{e}"))
}

fn compile_err(policies: &str) -> GuardrailError {
    Guardrails::compile(policies, &catalogue()).unwrap_err()
}

/// An NHI's facts, owned, so that tests can vary them.
#[derive(Clone, Debug)]
struct Nhi {
    id: String,
    environment: String,
    risk: i64,
    team: String,
}

impl Nhi {
    fn new(id: &str, team: &str, environment: &str) -> Self {
        Self {
            id: id.into(),
            environment: environment.into(),
            risk: 10,
            team: team.into(),
        }
    }

    fn facts(&self) -> NhiFacts<'_> {
        NhiFacts {
            id: &self.id,
            name: "agent",
            kind: "ai_agent",
            platform: "k8s",
            environment: &self.environment,
            status: "active",
            risk: self.risk,
            owner_team: &self.team,
        }
    }
}

fn act<'a>(service: &'a str, operation: &'a str, resource: &'a str) -> ActionFacts<'a> {
    ActionFacts {
        service,
        operation,
        resource,
        delegated: false,
        depth: 0,
        hour: 12,
        weekday: 2,
        purpose: "",
    }
}

fn forbid(ids: &[&str]) -> GuardrailOutcome {
    GuardrailOutcome::Forbid {
        policies: ids.iter().map(|s| s.to_string()).collect(),
    }
}

fn approval(ids: &[&str]) -> GuardrailOutcome {
    GuardrailOutcome::ApprovalRequired {
        policies: ids.iter().map(|s| s.to_string()).collect(),
    }
}

fn check(g: &Guardrails, nhi: &Nhi, action: &ActionFacts) -> GuardrailOutcome {
    g.evaluate(&g.principal(&nhi.facts()), action)
}

#[test]
fn forbids_prod_nhis_from_pii_by_attributes() {
    let g = compile(
        r#"forbid(principal, action, resource)
           when { principal.environment == "prod" && resource.sensitivity.contains("pii") };"#,
    );
    let prod = Nhi::new("n1", "t1", "prod");
    let dev = Nhi::new("n2", "t1", "dev");
    assert_eq!(
        check(&g, &prod, &act("crm", "read", "customers/42")),
        forbid(&["policy0"])
    );
    assert_eq!(
        check(&g, &prod, &act("mail", "send", "inbox/1")),
        forbid(&["policy0"])
    );
    assert_eq!(
        check(&g, &dev, &act("crm", "read", "customers/42")),
        GuardrailOutcome::Allow
    );
    assert_eq!(
        check(&g, &prod, &act("crm", "read", "orders/1")),
        GuardrailOutcome::Allow
    );
    // Unknown services and resources have no sensitivity.
    assert_eq!(
        check(&g, &prod, &act("erp", "read", "customers/42")),
        GuardrailOutcome::Allow
    );
}

#[test]
fn forbids_by_action_group() {
    let g = compile(
        r#"@id("no-deletes") forbid(principal, action in Custos::Action::"*:delete", resource);
           @id("mail-readonly") forbid(principal, action in Custos::Action::"mail:*", resource)
           unless { action == Custos::Action::"mail:read" };"#,
    );
    let nhi = Nhi::new("n1", "t1", "dev");
    assert_eq!(
        check(&g, &nhi, &act("crm", "delete", "customers/1")),
        forbid(&["no-deletes"])
    );
    assert_eq!(
        check(&g, &nhi, &act("s3", "delete", "x")),
        forbid(&["no-deletes"])
    );
    assert_eq!(
        check(&g, &nhi, &act("crm", "write", "x")),
        GuardrailOutcome::Allow
    );
    assert_eq!(
        check(&g, &nhi, &act("mail", "send", "x")),
        forbid(&["mail-readonly"])
    );
    assert_eq!(
        check(&g, &nhi, &act("mail", "read", "x")),
        GuardrailOutcome::Allow
    );
}

#[test]
fn forbids_by_context() {
    let g = compile(
        r#"@id("office-hours") forbid(principal, action, resource)
           when { context.hour < 7 || context.hour >= 19 || context.weekday >= 5 };
           @id("no-deep-delegation") forbid(principal, action, resource)
           when { context.delegated && context.depth > 2 };"#,
    );
    let nhi = Nhi::new("n1", "t1", "dev");
    let at = |hour, weekday| ActionFacts {
        hour,
        weekday,
        ..act("crm", "read", "x")
    };
    assert_eq!(check(&g, &nhi, &at(12, 0)), GuardrailOutcome::Allow);
    assert_eq!(check(&g, &nhi, &at(6, 0)), forbid(&["office-hours"]));
    assert_eq!(check(&g, &nhi, &at(19, 3)), forbid(&["office-hours"]));
    assert_eq!(check(&g, &nhi, &at(12, 6)), forbid(&["office-hours"]));
    let delegated = |depth| ActionFacts {
        delegated: true,
        depth,
        ..act("crm", "read", "x")
    };
    assert_eq!(check(&g, &nhi, &delegated(2)), GuardrailOutcome::Allow);
    assert_eq!(
        check(&g, &nhi, &delegated(3)),
        forbid(&["no-deep-delegation"])
    );
}

#[test]
fn approval_is_required_unless_a_plain_forbid_also_matches() {
    let g = compile(
        r#"@id("pii-needs-approval") @approval_required("customer data")
           forbid(principal, action, resource) when { resource.sensitivity.contains("pii") };
           @id("writes-need-approval") @approval_required
           forbid(principal, action in Custos::Action::"*:write", resource);
           @id("no-prod-writes") forbid(principal, action in Custos::Action::"*:write", resource)
           when { principal.environment == "prod" };"#,
    );
    let dev = Nhi::new("n1", "t1", "dev");
    let prod = Nhi::new("n2", "t1", "prod");
    assert_eq!(
        check(&g, &dev, &act("crm", "read", "customers/1")),
        approval(&["pii-needs-approval"])
    );
    assert_eq!(
        check(&g, &dev, &act("crm", "write", "customers/1")),
        approval(&["pii-needs-approval", "writes-need-approval"])
    );
    assert_eq!(
        check(&g, &prod, &act("crm", "write", "customers/1")),
        forbid(&[
            "no-prod-writes",
            "pii-needs-approval",
            "writes-need-approval"
        ])
    );
    assert_eq!(
        check(&g, &prod, &act("crm", "read", "orders/1")),
        GuardrailOutcome::Allow
    );
}

#[test]
fn a_policy_that_fails_to_evaluate_forbids() {
    // 2^62 times a depth of 2 or more overflows. Cedar on its own skips the erroring policy and
    // allows; the guardrail must forbid, even though the policy only asks for approval.
    let text = r#"@id("overflow") @approval_required
        forbid(principal, action, resource) when { context.depth * 4611686018427387904 > 0 };"#;
    let g = compile(text);
    let nhi = Nhi::new("n1", "t1", "dev");
    let depth = |depth| ActionFacts {
        depth,
        ..act("crm", "read", "x")
    };
    assert_eq!(check(&g, &nhi, &depth(0)), GuardrailOutcome::Allow);
    assert_eq!(check(&g, &nhi, &depth(1)), approval(&["overflow"]));
    assert_eq!(check(&g, &nhi, &depth(2)), forbid(&["overflow"]));

    let oracle = Oracle::new(text, &[]);
    let plain = Authorizer::new().is_authorized(
        &oracle.request(&nhi, &depth(2)),
        &oracle.set,
        &oracle.entities(&nhi, &depth(2)),
    );
    assert_eq!(plain.decision(), cedar_policy::Decision::Allow);
    assert_eq!(plain.diagnostics().errors().count(), 1);
}

#[test]
fn policies_are_named_by_id_or_position() {
    let g = Guardrails::compile_with_links(
        r#"forbid(principal, action == Custos::Action::"crm:read", resource);
           @id("team.t1_no-mail") forbid(principal in Custos::Team::"t1", action in Custos::Action::"mail:*", resource);
           @id("tpl") forbid(principal == ?principal, action, resource);
           forbid(principal, action == Custos::Action::"s3:get", resource);"#,
        &[link("tpl", "link-1", Some(PrincipalSlot::Nhi("n9".into())), None)],
        &catalogue(),
    )
    .unwrap();
    // Templates count in the positions but are not policies themselves.
    assert_eq!(
        g.policy_ids(),
        ["policy0", "team.t1_no-mail", "policy3", "link-1"]
    );
    assert_eq!(g.policy_count(), 4);
    let n9 = Nhi::new("n9", "t1", "dev");
    assert_eq!(
        check(&g, &n9, &act("mail", "send", "x")),
        forbid(&["link-1", "team.t1_no-mail"])
    );
    assert_eq!(
        check(&g, &n9, &act("s3", "get", "x")),
        forbid(&["link-1", "policy3"])
    );
}

#[test]
fn bad_and_duplicate_ids_are_refused() {
    for bad in ["", "has space", "a:b", "é", &"x".repeat(65)] {
        let err = compile_err(&format!(
            r#"@id("{bad}") forbid(principal, action, resource);"#
        ));
        assert_eq!(err, GuardrailError::BadId(bad.into()));
        assert_eq!(err.code(), "policy_id_invalid");
    }
    assert!(
        Guardrails::compile(
            &format!(
                r#"@id("{}") forbid(principal, action, resource);"#,
                "x".repeat(64)
            ),
            &catalogue()
        )
        .is_ok()
    );
    let err = compile_err(
        r#"@id("a") forbid(principal, action, resource);
           @id("a") forbid(principal, action, resource);"#,
    );
    assert_eq!(err, GuardrailError::DuplicateId("a".into()));
    assert_eq!(err.code(), "policy_id_duplicate");
    assert_eq!(err.to_string(), r#"policy id "a" is used more than once"#);
    // A chosen id may not take a position's default name either.
    assert_eq!(
        compile_err(
            r#"@id("policy1") forbid(principal, action, resource);
               forbid(principal, action, resource);"#
        ),
        GuardrailError::DuplicateId("policy1".into())
    );
    // Nor may a link take a policy's id, nor have a malformed one.
    let links = |id: &str| {
        Guardrails::compile_with_links(
            r#"@id("tpl") forbid(principal == ?principal, action, resource);"#,
            &[link("tpl", id, Some(PrincipalSlot::Nhi("n1".into())), None)],
            &catalogue(),
        )
        .unwrap_err()
    };
    assert_eq!(links("tpl"), GuardrailError::DuplicateId("tpl".into()));
    assert_eq!(links("a b"), GuardrailError::BadId("a b".into()));
}

#[test]
fn permits_are_refused() {
    let err = compile_err(
        r#"forbid(principal, action, resource);
           @id("allow-reads") permit(principal, action == Custos::Action::"crm:read", resource);"#,
    );
    assert_eq!(err, GuardrailError::PermitNotAllowed("allow-reads".into()));
    assert_eq!(err.code(), "policy_permit_not_allowed");
    assert!(err.to_string().contains("can only forbid"), "{err}");
    assert_eq!(
        compile_err("permit(principal == ?principal, action, resource);"),
        GuardrailError::PermitNotAllowed("policy0".into())
    );
}

#[test]
fn parse_and_validation_errors_name_the_problem() {
    let err = compile_err("forbid(principal action, resource);");
    assert_eq!(err.code(), "policy_parse_error");
    assert_eq!(
        err.to_string(),
        "policies do not parse: unexpected token `action`"
    );

    let cases = [
        (
            r#"forbid(principal, action, resource) when { principal.team == "t1" };"#,
            "team",
        ),
        (
            r#"forbid(principal, action == Custos::Action::"crm:purge", resource);"#,
            "crm:purge",
        ),
        (
            r#"forbid(principal == Custos::User::"alice", action, resource);"#,
            "Custos::User",
        ),
        (
            r#"forbid(principal, action, resource) when { context.hour == "noon" };"#,
            "Long",
        ),
    ];
    for (text, named) in cases {
        let err = compile_err(text);
        assert_eq!(err.code(), "policy_invalid", "{text}");
        let GuardrailError::Validation(messages) = &err else {
            panic!("{err}")
        };
        assert!(
            messages.iter().any(|m| m.contains(named)),
            "{named} not in {messages:?}"
        );
        assert!(
            messages
                .iter()
                .all(|m| m.starts_with("for policy `policy0`, ")),
            "{messages:?}"
        );
    }
}

fn link(
    template: &str,
    id: &str,
    principal: Option<PrincipalSlot>,
    resource: Option<ResourceSlot>,
) -> TemplateLink {
    TemplateLink {
        template_id: template.into(),
        link_id: id.into(),
        principal,
        resource,
    }
}

#[test]
fn templates_link_to_nhis_teams_resources_and_services() {
    let text = r#"
        @id("quarantine") forbid(principal == ?principal, action, resource);
        @id("team-off-service") @approval_required
        forbid(principal in ?principal, action, resource in ?resource);
    "#;
    let links = [
        link(
            "quarantine",
            "q-n1",
            Some(PrincipalSlot::Nhi("n1".into())),
            None,
        ),
        link(
            "team-off-service",
            "payments-s3",
            Some(PrincipalSlot::Team("payments".into())),
            Some(ResourceSlot::Service("s3".into())),
        ),
        link(
            "team-off-service",
            "n2-customer-1",
            Some(PrincipalSlot::Nhi("n2".into())),
            Some(ResourceSlot::Resource {
                service: "crm".into(),
                id: "customers/1".into(),
            }),
        ),
    ];
    let g = Guardrails::compile_with_links(text, &links, &catalogue()).unwrap();
    assert_eq!(g.policy_ids(), ["q-n1", "payments-s3", "n2-customer-1"]);
    let n1 = Nhi::new("n1", "payments", "dev");
    let n2 = Nhi::new("n2", "sales", "dev");
    let n3 = Nhi::new("n3", "payments", "dev");
    assert_eq!(check(&g, &n1, &act("crm", "read", "x")), forbid(&["q-n1"]));
    assert_eq!(
        check(&g, &n1, &act("s3", "get", "x")),
        forbid(&["payments-s3", "q-n1"])
    );
    assert_eq!(
        check(&g, &n3, &act("s3", "get", "x")),
        approval(&["payments-s3"])
    );
    assert_eq!(
        check(&g, &n3, &act("crm", "read", "x")),
        GuardrailOutcome::Allow
    );
    assert_eq!(
        check(&g, &n2, &act("crm", "write", "customers/1")),
        approval(&["n2-customer-1"])
    );
    assert_eq!(
        check(&g, &n2, &act("crm", "write", "customers/2")),
        GuardrailOutcome::Allow
    );

    // Links to a missing template or to a static policy, and links missing a slot or with one
    // the template does not have.
    let refused = |links: &[TemplateLink]| {
        Guardrails::compile_with_links(
            &format!("{text} @id(\"static\") forbid(principal, action, resource);"),
            links,
            &catalogue(),
        )
        .unwrap_err()
    };
    for bad in [
        link("nope", "l", Some(PrincipalSlot::Nhi("n1".into())), None),
        link("static", "l", Some(PrincipalSlot::Nhi("n1".into())), None),
        link(
            "team-off-service",
            "l",
            Some(PrincipalSlot::Nhi("n1".into())),
            None,
        ),
        link(
            "quarantine",
            "l",
            Some(PrincipalSlot::Nhi("n1".into())),
            Some(ResourceSlot::Service("s3".into())),
        ),
    ] {
        let err = refused(std::slice::from_ref(&bad));
        assert_eq!(err.code(), "policy_link_invalid", "{bad:?}: {err}");
        assert!(err.to_string().contains(r#"template link "l""#), "{err}");
    }
    // The API only names NHIs and teams as principals, resources and services as resources.
    // A team where the template compares with `==` can never match, since principals are
    // NHIs; Cedar's validator finds no action such a link applies to, and it is refused.
    let err = Guardrails::compile_with_links(
        text,
        &[link(
            "quarantine",
            "l",
            Some(PrincipalSlot::Team("payments".into())),
            None,
        )],
        &catalogue(),
    )
    .unwrap_err();
    assert_eq!(err.code(), "policy_invalid", "{err}");
    assert!(err.to_string().contains("for policy `l`"), "{err}");
}

#[test]
fn the_catalogue_is_validated() {
    let refused = |value: serde_json::Value| {
        let catalogue: Catalogue = serde_json::from_value(value).unwrap();
        let err = catalogue.validate().unwrap_err();
        assert_eq!(err.code(), "catalogue_invalid");
        assert_eq!(
            Guardrails::compile("", &catalogue).unwrap_err(),
            err,
            "compiling validates the catalogue too"
        );
        err.to_string()
    };
    let service = |name: &str, ops: &[&str]| json!({"name": name, "operations": ops});
    assert!(
        refused(json!({"services": [service("crm", &[]), service("crm", &[])]}))
            .contains("more than once")
    );
    assert!(refused(json!({"services": [service("CRM", &[])]})).contains(r#""CRM""#));
    assert!(
        refused(json!({"services": [service("crm", &["read", "read"])]}))
            .contains(r#""read" more than once"#)
    );
    assert!(refused(json!({"services": [service("crm", &["*"])]})).contains("reserved"));
    assert!(refused(json!({"services": [service("crm", &["re ad"])]})).contains(r#""re ad""#));
    let too_many_ops: Vec<String> = (0..257).map(|i| format!("op{i}")).collect();
    assert!(
        refused(json!({"services": [{"name": "crm", "operations": too_many_ops}]}))
            .contains("at most 256")
    );
    let too_many_services: Vec<_> = (0..1001).map(|i| service(&format!("s{i}"), &[])).collect();
    assert!(refused(json!({"services": too_many_services})).contains("at most 1000"));
    let tagged = |tag: &str| json!({"services": [{"name": "crm", "operations": [], "resources": [{"pattern": "*", "sensitivity": [tag]}]}]});
    assert!(refused(tagged("PII")).contains(r#""PII""#));
    assert!(refused(tagged("")).contains("sensitivity tag"));
    assert!(refused(tagged(&"x".repeat(65))).contains("sensitivity tag"));
    let pattern =
        json!({"services": [{"name": "crm", "operations": [], "resources": [{"pattern": "a b"}]}]});
    assert!(refused(pattern).contains(r#""a b""#));
    // Unknown fields are refused rather than ignored.
    assert!(serde_json::from_value::<Catalogue>(json!({"services": [], "extra": 1})).is_err());
    catalogue().validate().unwrap();
    Catalogue::default().validate().unwrap();
}

#[test]
fn sensitivity_comes_from_the_first_matching_pattern() {
    let c = catalogue();
    assert_eq!(c.sensitivity("crm", "customers/42"), ["pii"]);
    assert!(c.sensitivity("crm", "orders/1").is_empty());
    assert_eq!(c.sensitivity("mail", "inbox/x"), ["pii", "confidential"]);
    assert!(c.sensitivity("mail", "outbox/x").is_empty());
    assert!(c.sensitivity("erp", "customers/42").is_empty());
}

#[test]
fn the_schema_is_readable_cedar_with_both_action_groups() {
    let text = schema_text(&catalogue());
    let (schema, _) = Schema::from_cedarschema_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(
        text.contains(r#"action "crm:read" in ["crm:*", "*:read"]"#),
        "{text}"
    );
    assert!(
        text.contains(r#"action "s3:list/all" in ["s3:*", "*:list/all"]"#),
        "{text}"
    );
    assert!(text.contains("entity Nhi in [Team]"), "{text}");
    // Groups for each service and for each operation name, once across services.
    let groups: Vec<String> = schema
        .action_groups()
        .map(|g| g.id().unescaped().to_owned())
        .collect();
    for group in ["crm:*", "mail:*", "s3:*", "*:read", "*:delete"] {
        assert_eq!(
            groups.iter().filter(|g| *g == group).count(),
            1,
            "{group} in {groups:?}"
        );
    }
    // Eight operations, three service groups, six operation groups and `*:*`.
    assert_eq!(schema.actions().count(), 8 + 3 + 6 + 1);
    let (_empty, _) = Schema::from_cedarschema_str(&schema_text(&Catalogue::default())).unwrap();
}

#[test]
fn without_policies_everything_is_allowed() {
    let nhi = Nhi::new("n1", "t1", "prod");
    for g in [Guardrails::empty(), compile("")] {
        assert_eq!(g.policy_count(), 0);
        assert!(g.policy_ids().is_empty());
        assert_eq!(
            check(&g, &nhi, &act("crm", "delete", "customers/1")),
            GuardrailOutcome::Allow
        );
    }
    // Policies that cannot apply to the request are not consulted at all.
    let g = compile(
        r#"forbid(principal == Custos::Nhi::"n2", action in Custos::Action::"mail:*", resource);"#,
    );
    assert_eq!(
        check(&g, &nhi, &act("mail", "send", "")),
        GuardrailOutcome::Allow
    );
    let n2 = Nhi::new("n2", "t1", "prod");
    assert_eq!(
        check(&g, &n2, &act("mail", "send", "")),
        forbid(&["policy0"])
    );
}

#[test]
fn actions_named_like_action_groups_are_forbidden() {
    let nhi = Nhi::new("n1", "t1", "dev");
    for g in [
        Guardrails::empty(),
        compile(
            r#"forbid(principal, action in Custos::Action::"crm:*", resource) when { context.hour > 30 };"#,
        ),
    ] {
        for (service, operation) in [("crm", "*"), ("*", "read"), ("a:b", "read")] {
            assert_eq!(
                check(&g, &nhi, &act(service, operation, "x")),
                forbid(&[]),
                "{service}:{operation}"
            );
        }
        assert_eq!(
            check(&g, &nhi, &act("crm", "read", "x")),
            GuardrailOutcome::Allow
        );
    }
    // An uncatalogued operation is still a member of its service's group.
    let g = compile(r#"forbid(principal, action in Custos::Action::"crm:*", resource);"#);
    assert_eq!(
        check(&g, &nhi, &act("crm", "purge", "x")),
        forbid(&["policy0"])
    );
}

#[test]
fn actions_named_outright_keep_their_groups() {
    // Cedar's authorizer, given the schema, knows the groups of every action, not only of the
    // request's: a condition on another action must see them too.
    let text = r#"@id("named") forbid(principal, action, resource)
        when { Custos::Action::"crm:write" in Custos::Action::"*:write" && context.delegated };
        @id("group") forbid(principal, action, resource)
        when { Custos::Action::"crm:*" in Custos::Action::"*:write" };"#;
    // The second can never hold, so Cedar's validator finds it impossible and it is refused;
    // the oracle, which is Cedar's authorizer, takes it, and both must agree on the rest.
    assert_eq!(compile_err(text).code(), "policy_invalid");
    let g = compile(&text[..text.find("@id(\"group\")").unwrap()]);
    let oracle = Oracle::new(text, &[]);
    let nhi = Nhi::new("n1", "t1", "dev");
    for (action, expected) in [
        (act("mail", "send", "x"), GuardrailOutcome::Allow),
        (
            ActionFacts {
                delegated: true,
                ..act("mail", "send", "x")
            },
            forbid(&["named"]),
        ),
        (
            ActionFacts {
                delegated: true,
                ..act("crm", "write", "customers/1")
            },
            forbid(&["named"]),
        ),
    ] {
        assert_eq!(check(&g, &nhi, &action), expected, "{action:?}");
        assert_eq!(oracle.evaluate(&nhi, &action), expected, "{action:?}");
    }
}

#[test]
fn guardrails_are_shareable_across_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Guardrails>();
    shareable::<custos_core::guardrails::Principal>();
}

#[test]
fn template_links_have_a_json_form() {
    let links: Vec<TemplateLink> = serde_json::from_value(json!([
        {"template_id": "t", "link_id": "a", "principal": {"nhi": "n1"}},
        {"template_id": "t", "link_id": "b", "principal": {"team": "payments"},
         "resource": {"resource": {"service": "crm", "id": "customers/1"}}},
        {"template_id": "t", "link_id": "c", "resource": {"service": "s3"}}
    ]))
    .unwrap();
    assert_eq!(
        links[0],
        link("t", "a", Some(PrincipalSlot::Nhi("n1".into())), None)
    );
    assert_eq!(
        links[1].resource,
        Some(ResourceSlot::Resource {
            service: "crm".into(),
            id: "customers/1".into()
        })
    );
    assert_eq!(links[2].resource, Some(ResourceSlot::Service("s3".into())));
    assert!(
        serde_json::from_value::<TemplateLink>(json!({"template_id": "t", "link_id": "a", "x": 1}))
            .is_err()
    );
}

/// The reference: Cedar's `Authorizer` on the whole set plus the base permit, with entities and
/// context parsed from JSON and checked against the schema, then the documented reading of its
/// response (errors forbid; approval only if every satisfied forbid asks for it).
struct Oracle {
    schema: Schema,
    set: PolicySet,
    catalogue: Catalogue,
}

impl Oracle {
    fn new(text: &str, links: &[TemplateLink]) -> Self {
        let catalogue = catalogue();
        let (schema, _) = Schema::from_cedarschema_str(&schema_text(&catalogue)).unwrap();
        let parsed = PolicySet::from_str(text).unwrap();
        let renamed = |generated: &PolicyId, annotated: Option<&str>| {
            annotated.map_or_else(|| generated.clone(), PolicyId::new)
        };
        let mut set = PolicySet::new();
        for p in parsed.policies() {
            set.add(p.new_id(renamed(p.id(), p.annotation("id"))))
                .unwrap();
        }
        for t in parsed.templates() {
            set.add_template(t.new_id(renamed(t.id(), t.annotation("id"))))
                .unwrap();
        }
        for l in links {
            let mut values = HashMap::new();
            if let Some(p) = &l.principal {
                let (kind, id) = match p {
                    PrincipalSlot::Nhi(id) => ("Custos::Nhi", id.clone()),
                    PrincipalSlot::Team(id) => ("Custos::Team", id.clone()),
                };
                values.insert(SlotId::principal(), euid(kind, &id));
            }
            if let Some(r) = &l.resource {
                let (kind, id) = match r {
                    ResourceSlot::Resource { service, id } => {
                        ("Custos::Resource", format!("{service}:{id}"))
                    }
                    ResourceSlot::Service(name) => ("Custos::Service", name.clone()),
                };
                values.insert(SlotId::resource(), euid(kind, &id));
            }
            set.link(
                PolicyId::new(&l.template_id),
                PolicyId::new(&l.link_id),
                values,
            )
            .unwrap();
        }
        let base = cedar_policy::Policy::parse(
            Some(PolicyId::new("base permit")),
            "permit(principal, action, resource);",
        )
        .unwrap();
        set.add(base).unwrap();
        Self {
            schema,
            set,
            catalogue,
        }
    }

    fn entities(&self, nhi: &Nhi, action: &ActionFacts) -> Entities {
        let entities = json!([
            {"uid": {"type": "Custos::Nhi", "id": nhi.id},
             "attrs": {"name": "agent", "kind": "ai_agent", "platform": "k8s",
                       "environment": nhi.environment, "status": "active", "risk": nhi.risk,
                       "owner_team": nhi.team},
             "parents": [{"type": "Custos::Team", "id": nhi.team}]},
            {"uid": {"type": "Custos::Resource", "id": format!("{}:{}", action.service, action.resource)},
             "attrs": {"service": action.service, "id": action.resource,
                       "sensitivity": self.catalogue.sensitivity(action.service, action.resource)},
             "parents": [{"type": "Custos::Service", "id": action.service}]}
        ]);
        Entities::from_json_value(entities, Some(&self.schema)).unwrap()
    }

    fn request(&self, nhi: &Nhi, action: &ActionFacts) -> Request {
        let action_uid = euid(
            "Custos::Action",
            &format!("{}:{}", action.service, action.operation),
        );
        let context = Context::from_json_value(
            json!({"delegated": action.delegated, "depth": action.depth, "hour": action.hour,
                   "weekday": action.weekday, "purpose": action.purpose}),
            Some((&self.schema, &action_uid)),
        )
        .unwrap();
        Request::new(
            euid("Custos::Nhi", &nhi.id),
            action_uid,
            euid(
                "Custos::Resource",
                &format!("{}:{}", action.service, action.resource),
            ),
            context,
            Some(&self.schema),
        )
        .unwrap()
    }

    fn evaluate(&self, nhi: &Nhi, action: &ActionFacts) -> GuardrailOutcome {
        let response = Authorizer::new().is_authorized(
            &self.request(nhi, action),
            &self.set,
            &self.entities(nhi, action),
        );
        let diagnostics = response.diagnostics();
        let failed: Vec<String> = diagnostics
            .errors()
            .map(|AuthorizationError::PolicyEvaluationError(e)| e.policy_id().to_string())
            .collect();
        let forbids: Vec<String> = diagnostics
            .reason()
            .filter(|id| self.set.policy(id).unwrap().effect() == Effect::Forbid)
            .map(ToString::to_string)
            .collect();
        if failed.is_empty() && forbids.is_empty() {
            assert_eq!(response.decision(), cedar_policy::Decision::Allow);
            return GuardrailOutcome::Allow;
        }
        let approval = failed.is_empty()
            && forbids.iter().all(|id| {
                self.set
                    .policy(&PolicyId::new(id))
                    .unwrap()
                    .annotation("approval_required")
                    .is_some()
            });
        let mut policies: Vec<String> = failed.into_iter().chain(forbids).collect();
        policies.sort();
        policies.dedup();
        if approval {
            GuardrailOutcome::ApprovalRequired { policies }
        } else {
            GuardrailOutcome::Forbid { policies }
        }
    }
}

fn euid(kind: &str, id: &str) -> EntityUid {
    EntityUid::from_json(json!({"type": kind, "id": id})).unwrap()
}

/// Generators of catalogue-consistent policy sets and requests over small alphabets, so that
/// scopes, conditions and requests meet often.
mod oracle {
    use super::*;

    const NHIS: &[&str] = &["n1", "n2", "n3", "n4", "n5"];
    const TEAMS: &[&str] = &["t1", "t2", "t3", "t4"];
    const ACTIONS: &[(&str, &str)] = &[
        ("crm", "read"),
        ("crm", "write"),
        ("crm", "delete"),
        ("mail", "send"),
        ("mail", "read"),
        ("s3", "get"),
        ("s3", "delete"),
        ("s3", "list/all"),
    ];
    const RESOURCE_IDS: &[&str] = &[
        "customers/1",
        "customers/2",
        "orders/9",
        "",
        "inbox/x",
        "arn:aws:s3:::secrets/k",
        "arn:aws:s3:::public/a",
    ];
    const PRINCIPALS: &[&str] = &[
        "principal",
        r#"principal == Custos::Nhi::"n1""#,
        r#"principal == Custos::Nhi::"n2""#,
        r#"principal in Custos::Team::"t1""#,
        r#"principal in Custos::Team::"t2""#,
        "principal is Custos::Nhi",
        r#"principal is Custos::Nhi in Custos::Team::"t3""#,
        r#"principal in Custos::Nhi::"n3""#,
    ];
    const ACTION_SCOPES: &[&str] = &[
        "action",
        r#"action == Custos::Action::"crm:read""#,
        r#"action in Custos::Action::"crm:*""#,
        r#"action in Custos::Action::"*:delete""#,
        r#"action in [Custos::Action::"mail:send", Custos::Action::"*:read"]"#,
        r#"action in [Custos::Action::"crm:write", Custos::Action::"crm:delete"]"#,
        r#"action == Custos::Action::"s3:list/all""#,
    ];
    const RESOURCES: &[&str] = &[
        "resource",
        r#"resource == Custos::Resource::"crm:customers/1""#,
        r#"resource in Custos::Service::"mail""#,
        "resource is Custos::Resource",
        r#"resource is Custos::Resource in Custos::Service::"s3""#,
        r#"resource in Custos::Resource::"s3:arn:aws:s3:::secrets/k""#,
    ];
    const CONDITIONS: &[&str] = &[
        "",
        r#"when { resource.sensitivity.contains("pii") }"#,
        "when { context.hour < 6 }",
        r#"when { principal.environment == "prod" }"#,
        "unless { context.delegated }",
        "when { principal.risk > 50 }",
        // Overflows, and so errors, from a depth of 2.
        "when { context.depth * 4611686018427387904 > 0 }",
        r#"when { principal in Custos::Team::"t1" && context.weekday >= 5 }"#,
        r#"when { resource.id like "customers/*" }"#,
        r#"when { context.purpose == "backup" }"#,
        r#"when { principal.owner_team == "t2" && resource.service == "crm" }"#,
        r#"when { action in Custos::Action::"*:read" }"#,
        // Conditions the index files policies by, alone and next to ones that may fail.
        r#"when { principal.kind == "ai_agent" }"#,
        r#"when { principal.platform == "bare-metal" }"#,
        r#"when { context.depth * 4611686018427387904 > 0 && principal.environment == "prod" }"#,
        r#"when { principal.environment == "prod" && context.depth * 4611686018427387904 > 0 }"#,
        r#"when { context.depth * 4611686018427387904 > 0 } when { resource.sensitivity.contains("pii") }"#,
        r#"when { context.hour < 12 && resource.sensitivity.contains("secret") }"#,
        r#"when { resource.service == "mail" && context.delegated }"#,
        r#"when { principal == Custos::Nhi::"n4" }"#,
        r#"when { principal in Custos::Team::"t3" && context.delegated }"#,
        r#"unless { context.weekday < 5 } when { "t3" == principal.owner_team }"#,
        r#"unless { context.depth * 4611686018427387904 < 0 } when { principal.environment == "dev" }"#,
        r#"when { "prod" == principal.environment || resource.sensitivity.contains("pii") }"#,
        r#"when { action in [Custos::Action::"s3:get", Custos::Action::"*:send"] && principal.risk > 20 }"#,
        // Filed by a later conjunct: a principal key after a tag (the decision bench's group
        // policies), after conditions that cannot fail, and across `when` clauses; an NHI key
        // preferred to an attribute one; and a key after a conjunct that may fail, which must
        // not be used.
        r#"when { resource.sensitivity.contains("pii") && principal.environment == "prod" }"#,
        r#"when { resource.sensitivity.contains("secret") && principal.environment == "staging" }"#,
        r#"when { context.hour < 12 && context.delegated && principal == Custos::Nhi::"n2" }"#,
        r#"when { principal.risk > 50 && principal in Custos::Team::"t2" && resource.service == "s3" }"#,
        r#"when { context.weekday >= 5 } when { principal.platform == "k8s" && resource.sensitivity.contains("pii") }"#,
        r#"when { principal.kind == "ai_agent" && principal == Custos::Nhi::"n3" }"#,
        r#"when { resource.id like "customers/*" && context.depth * 4611686018427387904 > 0 && principal.environment == "dev" }"#,
        // What a policy reaches of the request: entities named by literals, which may be the
        // request's own or absent, and conditions on one part only.
        r#"when { Custos::Nhi::"n1".environment == "prod" }"#,
        r#"when { Custos::Resource::"crm:customers/1".sensitivity.contains("pii") && context.hour < 12 }"#,
        r#"when { Custos::Nhi::"n2" in Custos::Team::"t2" }"#,
        "when { context.depth > 2 }",
        r#"when { principal.status != "active" }"#,
        r#"when { Custos::Action::"crm:write" in Custos::Action::"*:write" && context.delegated }"#,
    ];
    const ANNOTATIONS: &[&str] = &[
        "",
        "@approval_required ",
        r#"@approval_required("ask a human") "#,
    ];

    /// How a template uses a slot.
    #[derive(Clone, Copy, Debug)]
    enum Slot {
        Static,
        Eq,
        In,
    }

    fn slot() -> impl Strategy<Value = Slot> {
        prop_oneof![Just(Slot::Static), Just(Slot::Eq), Just(Slot::In)]
    }

    /// Half the time the unconstrained scope (the list's first entry), so that policies are
    /// often filed by their conditions rather than their scope.
    fn scope(list: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
        prop_oneof![Just(list[0]), select(list)]
    }

    fn head() -> impl Strategy<Value = (&'static str, &'static str, &'static str)> {
        (
            select(ANNOTATIONS),
            scope(ACTION_SCOPES),
            select(CONDITIONS),
        )
    }

    fn static_policy() -> impl Strategy<Value = String> {
        (head(), scope(PRINCIPALS), scope(RESOURCES), any::<bool>()).prop_map(
            |((annotation, action, condition), principal, resource, named)| {
                // Some policies get an @id; the index makes it unique (filled in by the caller).
                let id = if named { "@id(\"ID\") " } else { "" };
                format!("{id}{annotation}forbid({principal}, {action}, {resource}) {condition};")
            },
        )
    }

    /// What one link binds the template's slots to.
    type Binding = (Option<PrincipalSlot>, Option<ResourceSlot>);

    /// A template with at least one slot, and its links.
    fn template() -> impl Strategy<Value = (String, Vec<Binding>)> {
        (head(), slot(), scope(PRINCIPALS), slot(), scope(RESOURCES)).prop_flat_map(
            |((annotation, action, condition), p_slot, principal, r_slot, resource)| {
                let p_slot = match (p_slot, r_slot) {
                    (Slot::Static, Slot::Static) => Slot::In,
                    _ => p_slot,
                };
                let principal = match p_slot {
                    Slot::Static => principal.to_owned(),
                    Slot::Eq => "principal == ?principal".to_owned(),
                    Slot::In => "principal in ?principal".to_owned(),
                };
                let resource = match r_slot {
                    Slot::Static => resource.to_owned(),
                    Slot::Eq => "resource == ?resource".to_owned(),
                    Slot::In => "resource in ?resource".to_owned(),
                };
                let text = format!(
                    "@id(\"ID\") {annotation}forbid({principal}, {action}, {resource}) {condition};"
                );
                let target = (
                    any::<bool>(),
                    select(NHIS),
                    select(TEAMS),
                    any::<bool>(),
                    select(ACTIONS),
                    select(RESOURCE_IDS),
                )
                    .prop_map(
                        move |(team, nhi, t, service_only, (service, _), id)| {
                            let principal = match p_slot {
                                Slot::Static => None,
                                Slot::In if team => Some(PrincipalSlot::Team(t.into())),
                                _ => Some(PrincipalSlot::Nhi(nhi.into())),
                            };
                            let resource = match r_slot {
                                Slot::Static => None,
                                Slot::In if service_only => {
                                    Some(ResourceSlot::Service(service.into()))
                                }
                                _ => Some(ResourceSlot::Resource {
                                    service: service.into(),
                                    id: id.into(),
                                }),
                            };
                            (principal, resource)
                        },
                    );
                (Just(text), proptest::collection::vec(target, 1..4))
            },
        )
    }

    /// Policy text and links: statics and templates in random order, ids filled in.
    /// Whether a policy (or a template, with or without one link) can ever apply. Guardrails
    /// refuse the policies Cedar's validator finds never apply, so the generator leaves them out;
    /// any other refusal is a fault of the generator.
    fn can_apply(text: &str, links: &[TemplateLink]) -> bool {
        match Guardrails::compile_with_links(text, links, &catalogue()) {
            Ok(_) => true,
            Err(GuardrailError::Validation(messages))
                if messages.iter().all(|m| {
                    m.contains("policy is impossible")
                        || m.contains("unable to find an applicable action")
                }) =>
            {
                false
            }
            Err(e) => panic!("the generator made an invalid policy: {e}\n{text}\n{links:?}"),
        }
    }

    pub fn policy_set() -> impl Strategy<Value = (String, Vec<TemplateLink>)> {
        (
            proptest::collection::vec(static_policy(), 0..12),
            proptest::collection::vec(template(), 0..3),
            any::<u64>(),
        )
            .prop_map(|(statics, templates, seed)| {
                let mut texts: Vec<String> = statics
                    .into_iter()
                    .enumerate()
                    .map(|(i, text)| text.replace("\"ID\"", &format!("\"p{i}\"")))
                    .filter(|text| can_apply(text, &[]))
                    .collect();
                let mut links = Vec::new();
                for (k, (text, targets)) in templates.into_iter().enumerate() {
                    let text = text.replace("\"ID\"", &format!("\"tpl{k}\""));
                    if !can_apply(&text, &[]) {
                        continue;
                    }
                    let position = (seed as usize >> (k * 4)) % (texts.len() + 1);
                    for (j, (principal, resource)) in targets.into_iter().enumerate() {
                        let link = TemplateLink {
                            template_id: format!("tpl{k}"),
                            link_id: format!("tpl{k}-link{j}"),
                            principal,
                            resource,
                        };
                        if can_apply(&text, std::slice::from_ref(&link)) {
                            links.push(link);
                        }
                    }
                    texts.insert(position, text);
                }
                (texts.join("\n"), links)
            })
    }

    #[derive(Clone, Debug)]
    pub struct Req {
        pub nhi: Nhi,
        pub service: &'static str,
        pub operation: &'static str,
        pub resource: &'static str,
        pub delegated: bool,
        pub depth: u32,
        pub hour: u8,
        pub weekday: u8,
        pub purpose: &'static str,
    }

    impl Req {
        pub fn facts(&self) -> ActionFacts<'_> {
            ActionFacts {
                service: self.service,
                operation: self.operation,
                resource: self.resource,
                delegated: self.delegated,
                depth: self.depth,
                hour: self.hour,
                weekday: self.weekday,
                purpose: self.purpose,
            }
        }
    }

    pub fn request() -> impl Strategy<Value = Req> {
        (
            (
                select(NHIS),
                select(TEAMS),
                select(&["prod", "dev"][..]),
                0..100i64,
            ),
            select(ACTIONS),
            select(RESOURCE_IDS),
            (
                any::<bool>(),
                0..4u32,
                0..24u8,
                0..7u8,
                select(&["", "backup"][..]),
            ),
        )
            .prop_map(
                |((id, team, environment, risk), (service, operation), resource, context)| {
                    let (delegated, depth, hour, weekday, purpose) = context;
                    Req {
                        nhi: Nhi {
                            risk,
                            ..Nhi::new(id, team, environment)
                        },
                        service,
                        operation,
                        resource,
                        delegated,
                        depth,
                        hour,
                        weekday,
                        purpose,
                    }
                },
            )
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Slicing is exact: the sliced, cached evaluation answers every request as Cedar does on
    /// the whole set with the base permit. Each request is asked twice, so that both a freshly
    /// composed slice and a cached one are checked.
    #[test]
    fn sliced_evaluation_equals_cedar_on_the_whole_set(
        (text, links) in oracle::policy_set(),
        requests in proptest::collection::vec(oracle::request(), 32),
    ) {
        let g = Guardrails::compile_with_links(&text, &links, &catalogue())
            .unwrap_or_else(|e| panic!("{e}\n{text}\n{links:?}"));
        let reference = Oracle::new(&text, &links);
        prop_assert_eq!(g.policy_count() + 1, reference.set.policies().count());
        for request in &requests {
            let expected = reference.evaluate(&request.nhi, &request.facts());
            let principal = g.principal(&request.nhi.facts());
            for _ in 0..2 {
                prop_assert_eq!(&g.evaluate(&principal, &request.facts()), &expected, "{:?}\n{}", request, text);
            }
        }
    }
}

/// A deterministic stream of numbers for the measurement (xorshift).
struct Numbers(u64);

impl Numbers {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// `n` policies: four in five scoped to an NHI (explicitly or by a template link), a team, a
/// service or an operation; one in five global, with conditions on the principal's environment,
/// the resource's sensitivity and the time, a quarter of these on the time alone.
fn timing_policies(n: usize) -> (String, Vec<TemplateLink>) {
    let mut text = String::from(
        "@id(\"quarantine\") forbid(principal == ?principal, action, resource) when { context.delegated };\n",
    );
    let mut links = Vec::new();
    for i in 0..n {
        let policy = match i % 10 {
            0 => format!(
                r#"forbid(principal, action, resource) when {{ principal.environment == "env{i}" && resource.sensitivity.contains("pii") }};"#
            ),
            5 if i % 20 == 5 => format!(
                r#"@approval_required forbid(principal, action, resource) when {{ context.hour == {} && resource.sensitivity.contains("secret") }};"#,
                i % 24
            ),
            // Nothing here narrows who or what: evaluated for every request.
            5 => format!(
                r#"forbid(principal, action, resource) when {{ context.weekday == 6 && context.hour < {} }};"#,
                i % 6
            ),
            1 | 6 => {
                links.push(link(
                    "quarantine",
                    &format!("q{i}"),
                    Some(PrincipalSlot::Nhi(format!("n{}", (i * 7) % 1000))),
                    None,
                ));
                continue;
            }
            2 | 7 => format!(
                r#"forbid(principal in Custos::Team::"team{}", action in Custos::Action::"svc{}:*", resource) when {{ context.hour > 20 }};"#,
                i % 50,
                i % 20
            ),
            3 => format!(
                r#"forbid(principal, action in Custos::Action::"svc{}:delete", resource) when {{ principal.environment == "prod" }};"#,
                i % 20
            ),
            8 => format!(
                r#"forbid(principal, action, resource in Custos::Service::"svc{}") when {{ context.weekday >= 5 && principal.risk > 80 }};"#,
                i % 20
            ),
            _ => format!(
                r#"@approval_required forbid(principal == Custos::Nhi::"n{i}", action in Custos::Action::"*:admin", resource);"#
            ),
        };
        text.push_str(&policy);
        text.push('\n');
    }
    (text, links)
}

/// Medians of `evaluate` for 0, 50 and 500 policies over 20 services of 8 operations, 1,000
/// NHIs in 50 teams and varied requests. Run it in release:
/// `cargo test -p custos-core --release --test it guardrail_timing -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check: run it in release with --ignored --nocapture"]
fn guardrail_timing() {
    const OPERATIONS: [&str; 8] = [
        "read", "write", "delete", "list", "get", "put", "send", "admin",
    ];
    let services: Vec<serde_json::Value> = (0..20)
        .map(|i| {
            json!({"name": format!("svc{i}"), "operations": OPERATIONS, "resources": [
                {"pattern": "customers/*", "sensitivity": ["pii"]},
                {"pattern": "secrets/*", "sensitivity": ["secret"]}]})
        })
        .collect();
    let catalogue: Catalogue = serde_json::from_value(json!({ "services": services })).unwrap();
    let nhis: Vec<Nhi> = (0..1000)
        .map(|i| Nhi {
            risk: (i * 37 % 100) as i64,
            ..Nhi::new(
                &format!("n{i}"),
                &format!("team{}", i % 50),
                ["prod", "dev"][i % 2],
            )
        })
        .collect();
    let services: Vec<String> = (0..20).map(|i| format!("svc{i}")).collect();
    for n in [0, 50, 500] {
        let (text, links) = timing_policies(n);
        let started = Instant::now();
        let g = Guardrails::compile_with_links(&text, &links, &catalogue).unwrap();
        let compile = started.elapsed();
        let started = Instant::now();
        let principals: Vec<_> = nhis.iter().map(|nhi| g.principal(&nhi.facts())).collect();
        let principal_each = started.elapsed() / nhis.len() as u32;
        let mut numbers = Numbers(0x9e37_79b9_7f4a_7c15);
        let mut requests = Vec::new();
        for _ in 0..4096 {
            let resource = ["customers/1", "secrets/k", "orders/7", "x"][numbers.below(4)];
            requests.push((
                numbers.below(nhis.len()),
                ActionFacts {
                    service: &services[numbers.below(services.len())],
                    operation: OPERATIONS[numbers.below(OPERATIONS.len())],
                    resource,
                    delegated: numbers.below(4) == 0,
                    depth: numbers.below(3) as u32,
                    hour: numbers.below(24) as u8,
                    weekday: numbers.below(7) as u8,
                    purpose: "",
                },
            ));
        }
        let mut outcomes = [0usize; 3];
        // Warm the slice cache, as a running server would have.
        for (nhi, action) in &requests {
            g.evaluate(&principals[*nhi], action);
        }
        let mut samples = Vec::with_capacity(requests.len() * 10);
        for _ in 0..10 {
            for (nhi, action) in &requests {
                let started = Instant::now();
                let outcome = std::hint::black_box(g.evaluate(&principals[*nhi], action));
                samples.push(started.elapsed());
                outcomes[match outcome {
                    GuardrailOutcome::Allow => 0,
                    GuardrailOutcome::Forbid { .. } => 1,
                    GuardrailOutcome::ApprovalRequired { .. } => 2,
                }] += 1;
            }
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
        println!(
            "{n:>3} policies ({} evaluated, {} links): evaluate median {:?}, p90 {:?}, p99 {:?}; \
             principal() {principal_each:?}; compile {compile:?}; allow/forbid/approval {outcomes:?}",
            g.policy_count(),
            links.len(),
            at(0.5),
            at(0.9),
            at(0.99),
        );
    }
}

/// `custos-server`'s `guardrail_policies(count, agents)` (benches/common/mod.rs), as an admin
/// writes them: two policies that apply to every request, every fifth pinned to a service's
/// action group with a condition on the resource's sensitivity and the agent's environment, and
/// the rest pinned to one agent and one action.
fn bench_policies(count: usize, agents: &[String]) -> String {
    let mut text = String::new();
    if count == 0 {
        return text;
    }
    text.push_str("@id(\"no-suspended\")\nforbid(principal, action, resource) when { principal.status != \"active\" };\n");
    text.push_str("@id(\"no-deep-delegation\")\nforbid(principal, action, resource) when { context.depth > 3 };\n");
    for i in 2..count {
        if i % 5 == 0 {
            let (group, tag) = if i % 2 == 0 {
                ("s3:*", "secret")
            } else {
                ("crm:*", "pii")
            };
            text.push_str(&format!(
                "@id(\"g{i}\")\nforbid(principal, action in Custos::Action::\"{group}\", resource) \
                 when {{ resource.sensitivity.contains(\"{tag}\") && principal.environment == \"staging-{i}\" }};\n"
            ));
        } else {
            let agent = &agents[i % agents.len()];
            let action = ["crm:delete", "crm:export", "s3:put", "mail:send"][i % 4];
            text.push_str(&format!(
                "@id(\"a{i}\")\nforbid(principal == Custos::Nhi::\"{agent}\", action == Custos::Action::\"{action}\", resource);\n"
            ));
        }
    }
    text
}

/// Median, p90, p99 and mean of the samples, sorting them.
fn spread(samples: &mut [std::time::Duration]) -> String {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    let mean = samples.iter().sum::<std::time::Duration>() / samples.len() as u32;
    format!(
        "median {:?}, p90 {:?}, p99 {:?}, mean {mean:?}",
        at(0.5),
        at(0.9),
        at(0.99)
    )
}

/// The decision bench's guardrail part exactly: `bench_policies` over its catalogue, 1,000 NHIs
/// in production, each asking `crm:read` on `customers/42` (sensitivity `pii`), undelegated;
/// then one global policy that is false, for the fixed cost of evaluating anything at all. Run
/// it with `guardrail_timing` (the filter names both).
#[test]
#[ignore = "a measurement, not a check: run it in release with --ignored --nocapture"]
fn guardrail_timing_bench_mix() {
    let catalogue: Catalogue = serde_json::from_value(json!({"services": [
        {"name": "crm", "operations": ["read", "write", "delete", "export"],
         "resources": [{"pattern": "customers/*", "sensitivity": ["pii"]}, {"pattern": "*", "sensitivity": []}]},
        {"name": "mail", "operations": ["send"]},
        {"name": "s3", "operations": ["get", "put"],
         "resources": [{"pattern": "secrets/*", "sensitivity": ["secret"]}]}
    ]}))
    .unwrap();
    let agents: Vec<String> = (0..1000)
        .map(|i| format!("0190c0de-0000-7000-8000-{i:012}"))
        .collect();
    let nhis: Vec<Nhi> = agents
        .iter()
        .map(|id| Nhi::new(id, "team-bench", "production"))
        .collect();
    let action = act("crm", "read", "customers/42");
    let time = |g: &Guardrails, label: &str| {
        let principals: Vec<_> = nhis.iter().map(|nhi| g.principal(&nhi.facts())).collect();
        let mut outcomes = [0usize; 3];
        for p in &principals {
            g.evaluate(p, &action);
        }
        let mut samples = Vec::with_capacity(principals.len() * 50);
        for _ in 0..50 {
            for p in &principals {
                let started = Instant::now();
                let outcome = std::hint::black_box(g.evaluate(p, std::hint::black_box(&action)));
                samples.push(started.elapsed());
                outcomes[match outcome {
                    GuardrailOutcome::Allow => 0,
                    GuardrailOutcome::Forbid { .. } => 1,
                    GuardrailOutcome::ApprovalRequired { .. } => 2,
                }] += 1;
            }
        }
        println!(
            "bench mix, {label} ({} policies): evaluate {}; allow/forbid/approval {outcomes:?}",
            g.policy_count(),
            spread(&mut samples)
        );
    };
    for n in [0, 50, 500] {
        let g = Guardrails::compile(&bench_policies(n, &agents), &catalogue).unwrap();
        time(&g, &format!("{n} policies"));
    }
    // One policy that applies to every request and is false: the fixed cost of evaluating.
    let g = Guardrails::compile(
        r#"forbid(principal, action, resource) when { context.depth > 3 };"#,
        &catalogue,
    )
    .unwrap();
    time(&g, "one global policy, false");
}

#[test]
fn without_a_catalogue_a_condition_is_still_typed() {
    // With no catalogued action Cedar's validator once had no request to type a condition in,
    // and it passed one that reads a missing attribute; that policy then failed, and so forbade,
    // every action, Custos's own `custos:evaluate` included.
    let empty = Catalogue::default();
    let err = Guardrails::compile(
        r#"forbid(principal, action, resource) when { principal.team == "t1" };"#,
        &empty,
    )
    .unwrap_err();
    assert_eq!(err.code(), "policy_invalid");
    assert!(err.to_string().contains("team"), "{err}");

    // A condition on what exists compiles, and applies to actions outside the catalogue.
    let g = Guardrails::compile(
        r#"forbid(principal, action, resource) when { principal.environment == "prod" };"#,
        &empty,
    )
    .unwrap();
    let action = act("github", "read", "repos/x");
    assert_eq!(
        check(&g, &Nhi::new("n1", "t1", "prod"), &action),
        forbid(&["policy0"])
    );
    assert_eq!(
        check(&g, &Nhi::new("n2", "t1", "dev"), &action),
        GuardrailOutcome::Allow
    );
}

#[test]
fn a_policy_that_can_never_apply_is_refused() {
    for text in [
        "forbid(principal, action, resource) when { false };",
        // An action group compared with `==`: no request's action is ever a group.
        r#"forbid(principal, action == Custos::Action::"crm:*", resource);"#,
    ] {
        let err = compile_err(text);
        assert_eq!(err.code(), "policy_invalid", "{text}");
        assert!(
            err.to_string().contains("for policy `policy0`"),
            "{text}: {err}"
        );
    }
    for text in ["", "forbid(principal, action, resource) when { false };"] {
        let empty = Guardrails::compile(text, &Catalogue::default());
        assert_eq!(empty.is_ok(), text.is_empty(), "{text}");
    }
}

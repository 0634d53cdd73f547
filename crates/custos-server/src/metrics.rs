//! Prometheus metrics: request counts and latencies per route, and store latency.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls (several servers in one test process)
/// share it.
pub fn install() {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).ok().map(|()| handle)
    });
}

pub fn render() -> String {
    HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

pub async fn track_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("custos_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("custos_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

use std::sync::Arc;

use crate::live::{Change, LiveState};
use async_trait::async_trait;
use custos_core::discovery::logical::{LogicalAgent, Member};
use custos_core::discovery::observed::{ObservedFilter, ObservedIdentity};
use custos_core::event::StoredEvent;
use custos_core::finding::{Finding, FindingFilter, FindingState, ResponsePolicy};
use custos_core::issuance::{Approval, StandingRule, Task, Vote};
use custos_core::lifecycle::{Decommission, DecommissionStep};
use custos_core::{Credential, DomainEvent, Nhi, NhiFilter, Operator, Page, Team, Timestamp};
use custos_store::{
    ApprovalFilter, AuditHead, EventQuery, PolicyVersion, Result as StoreResult, Retirement,
    Revocation, SigningKeyRecord, Store, StoredCheckpoint, Use,
};
use custos_store::{DecommissionFilter, DeploymentHook, FindingOpened, JobLock};
use custos_store::{
    DeliveryFilter, DeliveryOutcome, DueEscalation, NotificationChannel, NotificationDelivery,
    UiSession,
};

/// The store as the server uses it: every call timed into `custos_store_duration_seconds{op}`,
/// and every write that can change an access decision reported to the live state once it has
/// committed (the `=> |out| [changes]` arms below), so that no write path can forget to.
pub struct MeteredStore {
    pub inner: Arc<dyn Store>,
    pub live: Arc<LiveState>,
}

macro_rules! metered {
    ($( fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty $(=> |$out:pat_param| $changes:expr)?; )*) => {
        #[async_trait]
        impl Store for MeteredStore {
            fn backend(&self) -> &'static str {
                self.inner.backend()
            }
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    let started = Instant::now();
                    let result = self.inner.$name($($arg),*).await;
                    metrics::histogram!("custos_store_duration_seconds", "op" => stringify!($name))
                        .record(started.elapsed().as_secs_f64());
                    $(
                        if let Ok($out) = &result {
                            for change in $changes {
                                self.live.after_write(change);
                            }
                        }
                    )?
                    result
                }
            )*
        }
    };
}

metered! {
    fn ping(&self) -> StoreResult<()>;
    fn meta_get(&self, key: &str) -> StoreResult<Option<String>>;
    fn meta_init(&self, key: &str, value: &str) -> StoreResult<String>;
    fn bootstrap_admin(&self, admin: &Operator, token_hash: &[u8], event: &DomainEvent) -> StoreResult<bool>;
    fn create_team(&self, team: &Team, event: &DomainEvent) -> StoreResult<()>;
    fn update_team(&self, team: &Team, event: &DomainEvent) -> StoreResult<()>;
    fn get_team(&self, id_or_name: &str) -> StoreResult<Option<Team>>;
    fn list_teams(&self) -> StoreResult<Vec<Team>>;
    fn create_operator(&self, operator: &Operator, token_hash: &[u8], event: &DomainEvent) -> StoreResult<()>;
    fn get_operator(&self, id: &str) -> StoreResult<Option<Operator>>;
    fn find_operator_by_token(&self, token_hash: &[u8]) -> StoreResult<Option<(Operator, Vec<u8>)>>;
    fn list_operators(&self, team_id: Option<&str>) -> StoreResult<Vec<Operator>>;
    fn revoke_operator(&self, id: &str, at: Timestamp, event: &DomainEvent) -> StoreResult<()>;
    fn create_ui_session(&self, session: &UiSession, event: &DomainEvent) -> StoreResult<()>;
    fn get_ui_session(&self, id_hash: &[u8]) -> StoreResult<Option<UiSession>>;
    fn end_ui_session(&self, id_hash: &[u8], at: Timestamp, event: &DomainEvent) -> StoreResult<bool>;
    fn create_nhis(&self, nhis: &[(Nhi, DomainEvent)]) -> StoreResult<()>;
    fn get_nhi(&self, id: &str) -> StoreResult<Option<Nhi>>;
    fn update_nhi(&self, nhi: &Nhi, expected_version: i64, event: &DomainEvent) -> StoreResult<()> => |_| [Change::Nhi(&nhi.id)];
    fn list_nhis(&self, filter: &NhiFilter, page: &Page) -> StoreResult<Vec<Nhi>>;
    // Discovery: observed identities and logical agents inform people, not decisions.
    fn registered_names(&self, names: &[(String, String)]) -> StoreResult<Vec<(String, String)>>;
    fn find_nhi_by_external_id(&self, platform: &str, external_id: &str) -> StoreResult<Option<Nhi>>;
    fn record_observed(&self, identities: &[ObservedIdentity], event: &DomainEvent) -> StoreResult<Vec<ObservedIdentity>>;
    fn get_observed(&self, platform: &str, principal: &str) -> StoreResult<Option<ObservedIdentity>>;
    fn list_observed(&self, filter: &ObservedFilter, page: &Page) -> StoreResult<Vec<ObservedIdentity>>;
    fn create_logical_agent(&self, agent: &LogicalAgent, event: &DomainEvent) -> StoreResult<()>;
    fn get_logical_agent(&self, id: &str) -> StoreResult<Option<LogicalAgent>>;
    fn list_logical_agents(&self, page: &Page) -> StoreResult<Vec<LogicalAgent>>;
    fn link_logical_agent(&self, agent_id: &str, member: &Member, event: &DomainEvent) -> StoreResult<()>;
    fn unlink_logical_agent(&self, agent_id: &str, nhi_id: &str, event: &DomainEvent) -> StoreResult<bool>;
    fn linked_nhis(&self) -> StoreResult<Vec<String>>;
    fn create_credential(&self, credential: &Credential, event: &DomainEvent) -> StoreResult<()>;
    fn get_credential(&self, id: &str) -> StoreResult<Option<Credential>>;
    fn find_credential_by_hash(&self, secret_hash: &[u8]) -> StoreResult<Option<Credential>>;
    fn list_credentials(&self, nhi_id: Option<&str>, page: &Page) -> StoreResult<Vec<Credential>>;
    fn credential_chain(&self, id: &str) -> StoreResult<Vec<Credential>>;
    fn revoke_credentials(&self, target: Revocation<'_>, at: Timestamp, event: &DomainEvent) -> StoreResult<Vec<String>> => |ids| [Change::Revoked(ids)];
    fn rotate_credential(&self, old_id: &str, old_expires_at: Timestamp, new: &Credential, sealed_secret: Option<&[u8]>, event: &DomainEvent) -> StoreResult<()> => |_| [Change::Credential(old_id)];
    fn aging_static_keys(&self, issued_before: Timestamp, now: Timestamp, page: &Page) -> StoreResult<Vec<Credential>>;
    fn collect_rotated_secret(&self, old_id: &str, at: Timestamp, event: &DomainEvent) -> StoreResult<Option<(String, Vec<u8>)>>;
    fn create_task(&self, task: &Task, approval: Option<&Approval>, credential: Option<&Credential>, events: &[DomainEvent], deliveries: &[NotificationDelivery]) -> StoreResult<()>;
    fn get_task(&self, id: &str) -> StoreResult<Option<Task>>;
    fn list_tasks(&self, nhi_id: &str, limit: u32) -> StoreResult<Vec<Task>>;
    fn mint_task_credential(&self, task_id: &str, credential: &Credential, event: &DomainEvent) -> StoreResult<bool> => |_| [Change::Task(task_id)];
    fn expired_tasks(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<Task>>;
    fn close_expired_task(&self, task_id: &str, now: Timestamp, event: &DomainEvent) -> StoreResult<bool> => |_| [Change::Task(task_id)];
    fn end_task(&self, task_id: &str, at: Timestamp, event: &DomainEvent) -> StoreResult<Vec<String>> => |ids| [Change::Revoked(ids), Change::Task(task_id)];
    fn get_approval(&self, id: &str) -> StoreResult<Option<Approval>>;
    fn list_approvals(&self, filter: &ApprovalFilter, page: &Page) -> StoreResult<Vec<Approval>>;
    fn file_review(&self, approval: &Approval, events: &[DomainEvent], deliveries: &[NotificationDelivery]) -> StoreResult<()>;
    fn decide_approval(&self, approval: &Approval, task: Option<&Task>, event: &DomainEvent, deliveries: &[NotificationDelivery]) -> StoreResult<()> => |_| task.map(|t| Change::Task(&t.id)).into_iter();
    fn record_vote(&self, approval_id: &str, vote: &Vote, event: &DomainEvent, deliveries: &[NotificationDelivery]) -> StoreResult<()>;
    fn list_votes(&self, approval_ids: &[&str]) -> StoreResult<std::collections::BTreeMap<String, Vec<Vote>>>;
    fn create_rule(&self, rule: &StandingRule, event: &DomainEvent) -> StoreResult<()>;
    fn get_rule(&self, id: &str) -> StoreResult<Option<StandingRule>>;
    fn list_rules(&self, nhi_id: Option<&str>, active_at: Option<Timestamp>) -> StoreResult<Vec<StandingRule>>;
    fn revoke_rule(&self, id: &str, at: Timestamp, event: &DomainEvent) -> StoreResult<bool>;
    fn expire_approval(&self, approval: &Approval, at: Timestamp, event: &DomainEvent, deliveries: &[NotificationDelivery]) -> StoreResult<bool> => |_| approval.task_id.as_deref().map(Change::Task).into_iter();
    fn due_escalations(&self, now: Timestamp, default_after_seconds: u32, limit: u32) -> StoreResult<Vec<DueEscalation>>;
    fn escalate_approval(&self, approval_id: &str, to_team: &str, at: Timestamp, event: &DomainEvent, deliveries: &[NotificationDelivery]) -> StoreResult<bool>;
    fn add_signing_key(&self, key: &SigningKeyRecord, retire: Option<Retirement<'_>>, event: &DomainEvent) -> StoreResult<()>;
    fn list_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    fn append_events(&self, events: &[DomainEvent]) -> StoreResult<()>;
    fn audit_head(&self) -> StoreResult<AuditHead>;
    fn unsealed_events(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<StoredEvent>>;
    fn seal_audit(&self, expected_size: u64, leaves: &[(u64, i64)], nodes: &[(u32, u64, Vec<u8>)], head: &AuditHead) -> StoreResult<()>;
    fn audit_nodes(&self, ids: &[(u32, u64)]) -> StoreResult<Vec<Option<Vec<u8>>>>;
    fn audit_event(&self, leaf_index: u64) -> StoreResult<Option<StoredEvent>>;
    fn audit_events(&self, from: u64, to: u64) -> StoreResult<Vec<(u64, StoredEvent)>>;
    fn audit_events_of(&self, subject: &str, from: u64, limit: u32) -> StoreResult<Vec<(u64, StoredEvent)>>;
    fn audit_leaf_hashes(&self, from: u64, to: u64) -> StoreResult<Vec<(u64, Vec<u8>)>>;
    fn add_checkpoint(&self, checkpoint: &StoredCheckpoint) -> StoreResult<()>;
    fn latest_checkpoint(&self) -> StoreResult<Option<StoredCheckpoint>>;
    fn use_client_assertion(&self, client_id: &str, jti: &str, expires_at: Timestamp, now: Timestamp) -> StoreResult<bool>;
    fn list_events(&self, query: &EventQuery) -> StoreResult<Vec<StoredEvent>>;
    fn put_policies(&self, policies: &PolicyVersion, event: &DomainEvent) -> StoreResult<()>;
    fn latest_policies(&self) -> StoreResult<Option<PolicyVersion>>;
    fn record_uses(&self, uses: &[Use]) -> StoreResult<()>;
    fn create_notification_channel(&self, channel: &NotificationChannel, event: &DomainEvent) -> StoreResult<()>;
    fn get_notification_channel(&self, id: &str) -> StoreResult<Option<NotificationChannel>>;
    fn list_notification_channels(&self) -> StoreResult<Vec<NotificationChannel>>;
    fn disable_notification_channel(&self, id: &str, at: Timestamp, event: &DomainEvent) -> StoreResult<bool>;
    fn enqueue_notifications(&self, deliveries: &[NotificationDelivery]) -> StoreResult<()>;
    fn claim_notifications(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> StoreResult<Vec<NotificationDelivery>>;
    fn finish_notification(&self, id: &str, attempt: u32, outcome: &DeliveryOutcome<'_>) -> StoreResult<bool>;
    fn list_notification_deliveries(&self, filter: &DeliveryFilter, page: &Page) -> StoreResult<Vec<NotificationDelivery>>;
    // Behaviour baselining: findings and profiles inform responses but change no decision
    // themselves (a response that does, such as a suspension, goes through its own write).
    fn save_baselines(&self, profiles: &[(String, Vec<u8>, Timestamp)]) -> StoreResult<()>;
    fn get_baseline(&self, nhi_id: &str) -> StoreResult<Option<(Vec<u8>, Timestamp)>>;
    fn open_finding(&self, finding: &Finding, event: &DomainEvent, deliveries: &[NotificationDelivery]) -> StoreResult<FindingOpened>;
    fn set_finding_approval(&self, id: &str, approval_id: &str) -> StoreResult<()>;
    fn get_finding(&self, id: &str) -> StoreResult<Option<Finding>>;
    fn list_findings(&self, filter: &FindingFilter, page: &Page) -> StoreResult<Vec<Finding>>;
    fn resolve_finding(&self, id: &str, state: FindingState, by: &str, reason: &str, at: Timestamp, event: &DomainEvent) -> StoreResult<Option<Finding>>;
    fn create_response_policy(&self, policy: &ResponsePolicy, event: &DomainEvent) -> StoreResult<()>;
    fn list_response_policies(&self, include_revoked: bool) -> StoreResult<Vec<ResponsePolicy>>;
    fn revoke_response_policy(&self, id: &str, at: Timestamp, event: &DomainEvent) -> StoreResult<bool>;
    // Decommissioning: a workflow's steps change decisions through their own writes (the
    // suspension, the revocation, the tombstone), not through the workflow's record.
    fn create_deployment_hook(&self, hook: &DeploymentHook, event: &DomainEvent) -> StoreResult<()>;
    fn get_deployment_hook(&self, id: &str) -> StoreResult<Option<DeploymentHook>>;
    fn list_deployment_hooks(&self) -> StoreResult<Vec<DeploymentHook>>;
    fn disable_deployment_hook(&self, id: &str, at: Timestamp, event: &DomainEvent) -> StoreResult<bool>;
    fn lock_job(&self, job: &str) -> StoreResult<Option<JobLock>>;
    fn start_decommission(&self, workflow: &Decommission, event: &DomainEvent) -> StoreResult<Option<Decommission>>;
    fn advance_decommission(&self, from: DecommissionStep, next: &Decommission, events: &[DomainEvent], deliveries: &[NotificationDelivery]) -> StoreResult<bool>;
    fn record_decommission_failure(&self, id: &str, error: &str, at: Timestamp) -> StoreResult<()>;
    fn get_decommission(&self, id: &str) -> StoreResult<Option<Decommission>>;
    fn list_decommissions(&self, filter: &DecommissionFilter, page: &Page) -> StoreResult<Vec<Decommission>>;
    // Risk and posture reports: reads only.
    fn nhi_facts(&self, nhis: Vec<Nhi>, now: Timestamp) -> StoreResult<Vec<custos_core::discovery::risk::NhiFacts>>;
    fn credential_descendants(&self, roots: &[String], limit: u32) -> StoreResult<Vec<Credential>>;
}

/// Counts a notification attempt by channel kind and outcome (`delivered`, `retry`, `failed`).
pub fn notification_attempt(kind: &str, outcome: &'static str) {
    metrics::counter!("custos_notifications_total", "kind" => kind.to_owned(), "outcome" => outcome)
        .increment(1);
}

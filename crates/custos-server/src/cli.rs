//! The `custos` command line: `serve`, and an admin client of the HTTP API.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use comfy_table::Table;
use reqwest::Method;
use serde_json::{Value, json};

use custos_core::baseline::simulate::SimulationConfig;

use crate::config::{Config, ServeArgs};

#[derive(Parser)]
#[command(
    name = "custos",
    version,
    about = "Governance for non-human identities"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
enum Output {
    #[default]
    Table,
    Json,
}

#[derive(clap::Args, Clone)]
struct Client {
    /// The server's base URL
    #[arg(
        long,
        env = "CUSTOS_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// An operator token
    #[arg(long, env = "CUSTOS_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// How to print results
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server
    Serve(ServeArgs),
    /// The NHI inventory
    Nhi {
        #[command(subcommand)]
        command: NhiCommand,
        #[command(flatten)]
        client: Client,
    },
    /// Owner teams
    Team {
        #[command(subcommand)]
        command: TeamCommand,
        #[command(flatten)]
        client: Client,
    },
    /// Operators and their tokens
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
        #[command(flatten)]
        client: Client,
    },
    /// Static keys and client keys of NHIs
    Credential {
        #[command(subcommand)]
        command: CredentialCommand,
        #[command(flatten)]
        client: Client,
    },
    /// The server's token-signing keys
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        #[command(flatten)]
        client: Client,
    },
    /// Approval requests for tasks beyond an NHI's ceiling
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
        #[command(flatten)]
        client: Client,
    },
    /// What the lifecycle has coming: expirations, idle NHIs due a review, running workflows
    Lifecycle {
        #[command(subcommand)]
        command: LifecycleCommand,
        #[command(flatten)]
        client: Client,
    },
    /// Decommissioning workflows: the running ones (and the stuck), the done ones with their
    /// teardown receipts
    Decommissions {
        #[command(subcommand)]
        command: DecommissionsCommand,
        #[command(flatten)]
        client: Client,
    },
    /// Findings of behaviour baselining and other detectors: list, inspect and resolve them
    Findings {
        #[command(subcommand)]
        command: FindingsCommand,
        #[command(flatten)]
        client: Client,
    },
    /// What a departure from a baseline after probation brings: record, alert, step_up or
    /// suspend, for an NHI, a team's NHIs, a kind of NHI, or by default
    ResponsePolicies {
        #[command(subcommand)]
        command: ResponsePoliciesCommand,
        #[command(flatten)]
        client: Client,
    },
    /// Find secrets in files: Custos keys (live or revoked, asked of the server when a token is
    /// given) and provider keys; reuse across services. Exit status: 0 nothing found, 4 a live
    /// Custos secret, 5 secrets none known to be live, 1 an error
    Scan(crate::scan::ScanArgs),
    /// Feed events seen in a platform's own logs to the NHIs' baselines (admin): FILE holds
    /// `{"events": [...]}` or a JSON array of events, oldest first ("-" reads stdin); they are
    /// posted in order, in batches of at most 1,000 events within the server's body limit
    Observe {
        /// Each event: nhi_id, at (RFC 3339), service, operation, and optionally resource,
        /// outcome (allowed, denied or refused), source_ip, user_agent, environment
        file: std::path::PathBuf,
        #[command(flatten)]
        client: Client,
    },
    /// Import a file of a discovery format (admin): an inventory to register, or a platform's
    /// listing or logs to find every identity in, shadow NHIs among them. Streams each FILE
    /// (gzip or not; "-" reads stdin) with a progress bar, then prints what it did
    Import {
        /// inventory-csv, inventory-json, aws-iam-credential-report, k8s-serviceaccounts,
        /// cloudtrail, k8s-audit, github-audit or okta-system-log
        format: String,
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// The name to record each file under; its path if absent
        #[arg(long)]
        source: Option<String>,
        #[command(flatten)]
        client: Client,
    },
    /// Identities the imports have seen: people, machines and the platforms' own services
    Discovery {
        #[command(subcommand)]
        command: DiscoveryCommand,
        #[command(flatten)]
        client: Client,
    },
    /// Logical agents: one agent's NHIs on several platforms, linked
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
        #[command(flatten)]
        client: Client,
    },
    /// Evaluate behaviour baselining offline: a simulated fleet with injected attacks, scored
    /// by the detector; prints recall per attack type and false alerts per 1,000 NHI-days
    Simulate {
        /// NHIs in the simulated fleet
        #[arg(long, default_value_t = SimulationConfig::default().nhis)]
        nhis: usize,
        /// Days evaluated after the warm-up
        #[arg(long, default_value_t = SimulationConfig::default().days)]
        days: u32,
        /// Days of warm-up before the evaluation
        #[arg(long, default_value_t = SimulationConfig::default().warmup_days)]
        warmup_days: u32,
        /// The share of NHIs attacked once in the evaluated days (0 to 1)
        #[arg(long, default_value_t = SimulationConfig::default().attack_share)]
        attack_share: f64,
        /// The seed of the simulation: the same seed gives the same report
        #[arg(long, default_value_t = SimulationConfig::default().seed)]
        seed: u64,
        /// How to print the report
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Exit non-zero, saying what fell short, unless every attack type's recall is at
        /// least 0.95 and there is at most one false alert per 1,000 NHI-days
        #[arg(long)]
        check: bool,
    },
    /// Notification channels of the review inbox (webhooks, email) and their deliveries
    Notifications {
        #[command(subcommand)]
        command: NotificationsCommand,
        #[command(flatten)]
        client: Client,
    },
    /// Per-task credentials
    Task {
        #[command(subcommand)]
        command: TaskCommand,
        #[command(flatten)]
        client: Client,
    },
    /// The tamper-evident audit log: checkpoints, exports and their verification
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
        #[command(flatten)]
        client: Client,
    },
    /// Reports: the OWASP NHI Top 10 posture, the riskiest NHIs
    Report {
        #[command(subcommand)]
        command: ReportCommand,
        #[command(flatten)]
        client: Client,
    },
    /// Show who the token belongs to
    Whoami {
        #[command(flatten)]
        client: Client,
    },
    /// Ask whether an agent's credential may do an operation now (AuthZEN evaluation). The
    /// --token is the enforcement point's own credential, holding custos:evaluate. Exits 0 if
    /// allowed, 3 if refused (the reason is printed), 1 on any error.
    Check {
        /// The agent's access token or static key (or CUSTOS_CHECK_CREDENTIAL)
        #[arg(long, env = "CUSTOS_CHECK_CREDENTIAL", hide_env_values = true)]
        credential: String,
        /// The service (AuthZEN resource.type)
        service: String,
        /// The operation (AuthZEN action.name)
        operation: String,
        /// The resource id, if the operation is on one
        #[arg(default_value = "")]
        resource: String,
        /// The NHI the caller believes it is talking to (id or name)
        #[arg(long, default_value = "")]
        subject: String,
        #[command(flatten)]
        client: Client,
    },
}

/// How long `custos check` waits for a decision. Longer than an enforcement point's default: a
/// person or a script at a prompt would rather wait for a cold server than see an error.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A refusal from `custos check`: not an error of the tool, and told apart by its exit code.
#[derive(Debug, thiserror::Error)]
#[error("refused: {0}")]
struct Refused(String);

#[derive(Subcommand)]
enum NhiCommand {
    /// Register an NHI
    Create {
        #[arg(long)]
        name: String,
        /// ai_agent, service_account, workload, api_key, automation or oauth_app
        #[arg(long)]
        kind: String,
        #[arg(long)]
        platform: String,
        #[arg(long)]
        environment: String,
        /// Owner team name or id
        #[arg(long)]
        team: String,
        #[arg(long)]
        purpose: String,
        #[arg(long)]
        application: Option<String>,
        #[arg(long)]
        contact: Option<String>,
        /// A grant of the scope ceiling, e.g. crm:read:customers/* (repeatable)
        #[arg(long = "scope")]
        scope: Vec<String>,
        /// key=value (repeatable)
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// RFC 3339 time after which the NHI expires
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List NHIs
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        platform: Option<String>,
        #[arg(long)]
        environment: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// key or key:value (repeatable)
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        expires_before: Option<String>,
        #[arg(long)]
        unused_since: Option<String>,
        /// Free-text search in names
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
        /// Follow every page
        #[arg(long)]
        all: bool,
    },
    /// Show one NHI
    Get { id: String },
    /// Change fields of an NHI (only those given)
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        purpose: Option<String>,
        #[arg(long)]
        environment: Option<String>,
        /// Move to another owner team
        #[arg(long)]
        team: Option<String>,
        /// Replace the scope ceiling (repeatable)
        #[arg(long = "scope")]
        scope: Vec<String>,
        /// Replace the tags, key=value (repeatable)
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// RFC 3339 time, or "none" to clear
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Suspend an NHI
    Suspend {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a suspended NHI
    Resume {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show what an NHI's behaviour baseline has learnt: probation, what it knows, its
    /// busiest operations
    Baseline { id: String },
    /// Decommission an NHI for good: suspend it and revoke every credential (delegated ones
    /// too), make it a tombstone, archive its trail with proofs, tell its owner team, and
    /// sign a teardown receipt. Running it again shows the NHI's workflow
    Decommission {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// Wait until the workflow is done (or this many seconds have passed, then fail)
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "60")]
        wait: Option<u64>,
        /// Staged: suspend the NHI, keep its credentials and watch this many days (1 to 90)
        /// what it would have been refused, then revoke and the rest
        #[arg(long, value_name = "DAYS", conflicts_with = "wait")]
        staged_days: Option<u32>,
    },
    /// Give an NHI to another owner team, saying why (kept in the trail)
    Transfer {
        id: String,
        /// The new owner team (name or id)
        #[arg(long)]
        team: String,
        /// The new owner contact
        #[arg(long)]
        contact: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// What an NHI's live credentials and their delegated descendants can reach, and who
    /// depends on it
    BlastRadius { id: String },
}

#[derive(Subcommand)]
enum TeamCommand {
    /// Create a team
    Create {
        name: String,
        #[arg(long)]
        contact: String,
    },
    /// List teams
    List,
    /// Show a team and its members
    Get { id: String },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Create an operator; prints its token once
    Create {
        #[arg(long)]
        name: String,
        /// admin, reviewer or auditor (repeatable)
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Team name or id the operator reviews for (repeatable)
        #[arg(long = "team")]
        teams: Vec<String>,
    },
    /// List operators
    List,
    /// Show one operator
    Get { id: String },
    /// Revoke an operator's token
    Revoke { id: String },
}

#[derive(Subcommand)]
enum CredentialCommand {
    /// Issue a static key for an NHI; prints the secret once
    Issue {
        nhi_id: String,
        #[arg(long)]
        ttl_seconds: Option<i64>,
    },
    /// List credentials (fingerprints only)
    List {
        #[arg(long)]
        nhi_id: Option<String>,
    },
    /// Rotate a static key: prints the new secret once; the old one works for the grace period
    Rotate { id: String },
    /// Collect the key the scheduler put in place of an aging one, once: run as the NHI, with
    /// the old static key as --token (it works until the grace period ends)
    Collect,
    /// Revoke a credential and everything delegated from it
    Revoke { id: String },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// List the signing keys and their state
    List,
    /// Replace the active signing key; the old one stays published while its tokens live
    Rotate {
        /// ES256, EdDSA or RS256 (default: the active key's)
        #[arg(long)]
        alg: Option<String>,
    },
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// List approval requests
    List {
        /// pending, approved, denied or expired
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        nhi_id: Option<String>,
        /// scope_escalation or policy_approval
        #[arg(long)]
        kind: Option<String>,
        /// low, medium or high
        #[arg(long)]
        risk: Option<String>,
    },
    /// Show one request: the scope beyond the ceiling, its risk and why, the approvals counted
    #[command(alias = "get")]
    Show { id: String },
    /// Approve, optionally narrower
    Approve {
        id: String,
        #[arg(long)]
        reason: String,
        /// A grant to approve instead of everything asked (repeatable)
        #[arg(long = "scope")]
        scope: Vec<String>,
        #[arg(long)]
        ttl_seconds: Option<u32>,
    },
    /// Deny, with a reason
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Standing rules: an NHI's requests within a scope approved without a reviewer, for a while
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// List the standing rules in force (with --all, revoked and expired ones too)
    List {
        /// Only this NHI's rules
        #[arg(long, visible_alias = "nhi-id")]
        nhi: Option<String>,
        /// Revoked and expired rules too
        #[arg(long)]
        all: bool,
    },
    /// Set a standing rule (admin); high-risk requests still wait for a reviewer
    #[command(group(clap::ArgGroup::new("lifetime").args(["days", "ttl_seconds"])))]
    Add {
        /// The NHI whose requests the rule approves
        #[arg(long, visible_alias = "nhi-id")]
        nhi: String,
        /// A grant the rule approves, e.g. crm:read:customers/* (repeatable)
        #[arg(long = "scope", required = true)]
        scope: Vec<String>,
        /// How long the rule lasts, in days (default 7, at most 90)
        #[arg(long)]
        days: Option<u32>,
        /// How long the rule lasts, in seconds (60 to 7776000)
        #[arg(long)]
        ttl_seconds: Option<u32>,
        #[arg(long)]
        reason: String,
    },
    /// Revoke a standing rule: its requests wait for a reviewer again
    Revoke { id: String },
}

#[derive(Subcommand)]
enum NotificationsCommand {
    /// Where notifications go: webhooks (signed JSON or Slack) and email over SMTP
    Channels {
        #[command(subcommand)]
        command: ChannelsCommand,
    },
    /// Notifications queued for the channels, with their attempts and last error
    Deliveries {
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum WebhookFormat {
    Json,
    Slack,
}

#[derive(Clone, Copy, ValueEnum)]
enum SmtpTls {
    None,
    Starttls,
    Tls,
}

#[derive(Subcommand)]
enum ChannelsCommand {
    /// List every channel, disabled ones too (secrets are never shown)
    List,
    /// Add a webhook (--webhook) or an email (--email) channel; a webhook's signing secret is
    /// printed once
    #[command(group(clap::ArgGroup::new("target").required(true).args(["webhook", "email"])))]
    Add {
        /// A name unique among channels
        #[arg(long)]
        name: String,
        /// Only requests about this team's NHIs (name or id); every team's when left out
        #[arg(long)]
        team: Option<String>,
        /// Webhook: the http(s) URL to post to
        #[arg(long)]
        webhook: Option<String>,
        /// Webhook: our signed JSON document, or a Slack incoming-webhook message
        #[arg(long, value_enum, requires = "webhook")]
        format: Option<WebhookFormat>,
        /// Email: the recipients, comma-separated or repeated (at most 20)
        #[arg(long, value_delimiter = ',', requires_all = ["smtp_host", "from"])]
        email: Vec<String>,
        /// Email: the SMTP server
        #[arg(long, requires = "email")]
        smtp_host: Option<String>,
        /// Email: the SMTP port (default 25, 587 with STARTTLS, 465 with TLS)
        #[arg(long, requires = "email")]
        smtp_port: Option<u16>,
        /// Email: how to speak to the SMTP server
        #[arg(long, value_enum, default_value = "starttls", requires = "email")]
        smtp_tls: SmtpTls,
        /// Email: the SMTP user name
        #[arg(long, requires = "email")]
        smtp_username: Option<String>,
        /// Email: the SMTP password (or CUSTOS_SMTP_PASSWORD); kept sealed, sent only over TLS
        #[arg(
            long,
            env = "CUSTOS_SMTP_PASSWORD",
            hide_env_values = true,
            requires = "email"
        )]
        smtp_password: Option<String>,
        /// Email: the sender, `address` or `Name <address>`
        #[arg(long, requires = "email")]
        from: Option<String>,
    },
    /// Disable a channel; what it had pending is given up
    Disable { id: String },
    /// Queue a test notification to a channel, sent and retried like any other
    Test { id: String },
}

#[derive(Subcommand)]
enum DeliveriesCommand {
    /// List deliveries, oldest first
    List {
        /// pending, delivered or failed
        #[arg(long)]
        state: Option<String>,
        /// Only this channel's (its id)
        #[arg(long)]
        channel: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print the latest signed checkpoint (keep it: `verify --checkpoint` checks that the log
    /// still extends it)
    Checkpoint,
    /// Write a self-contained export to stdout: a slice of the log, or one NHI's events
    Export {
        #[arg(long)]
        from: Option<u64>,
        #[arg(long)]
        to: Option<u64>,
        #[arg(long, conflicts_with_all = ["from", "to"])]
        nhi: Option<String>,
    },
    /// Verify an export file offline or, without a file, the whole live log of the server at
    /// --url; exits non-zero and names the first bad index on any failure
    Verify {
        /// An export written by `custos audit export` or GET /v1/audit/export
        file: Option<std::path::PathBuf>,
        /// A checkpoint kept earlier (a signed note file): the log must still extend it
        #[arg(long)]
        checkpoint: Option<std::path::PathBuf>,
        /// The log's verifier key to trust (default: the one the export or server gives)
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Subcommand)]
enum LifecycleCommand {
    /// NHIs expiring soon (soonest first), NHIs unused long enough to be reviewed (longest idle
    /// first), and the decommissions still running
    Upcoming {
        /// Expiring within this many days [default: 30]
        #[arg(long)]
        within_days: Option<u32>,
        /// Unused this many days [default: the server's lifecycle_idle_days]
        #[arg(long)]
        idle_days: Option<u32>,
        /// At most this many of each
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Run the lifecycle jobs now (admin): expired NHIs, aging keys, tasks past their lifetime,
    /// idle NHIs' decommission reviews, orphans and owner attestations; says what was done
    Run,
}

#[derive(Subcommand)]
enum DecommissionsCommand {
    /// List decommissioning workflows, newest first
    List {
        /// Only this NHI's
        #[arg(long, visible_alias = "nhi-id")]
        nhi: Option<String>,
        /// running or done
        #[arg(long)]
        state: Option<String>,
        /// At most this many (1 to 500)
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one workflow: its step, what each step did, and its signed teardown receipt
    #[command(alias = "get")]
    Show { id: String },
    /// Stop a staged decommission during its watch: the NHI is resumed
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum FindingsCommand {
    /// List findings, newest first
    List {
        /// Only this NHI's
        #[arg(long, visible_alias = "nhi-id")]
        nhi: Option<String>,
        /// anomaly, credential_stuffing, environment_crossing, interactive_use,
        /// delegation_fan_out, ...
        #[arg(long)]
        kind: Option<String>,
        /// open, acknowledged, dismissed, accepted, or unresolved (open or acknowledged)
        #[arg(long)]
        state: Option<String>,
        /// At most this many (1 to 500)
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one finding with its evidence: the events seen and the baseline they departed from
    #[command(alias = "get")]
    Show { id: String },
    /// Acknowledge an open finding: someone is on it
    #[command(alias = "acknowledge")]
    Ack {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Dismiss a finding, with the reason: not a problem, and not the new normal either
    Dismiss {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Accept a finding as the new normal: the events it holds are folded into the NHI's
    /// baseline, so the same behaviour no longer departs from it
    Accept {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Adopt the shadow NHI a shadow_nhi finding is about: register it, suspended, under an
    /// owner, and ask that team in its inbox; approving activates it
    Adopt {
        id: String,
        /// ai_agent, service_account, workload, api_key, automation or oauth_app
        #[arg(long)]
        kind: String,
        /// The owner team's name or id
        #[arg(long)]
        owner_team: String,
        #[arg(long)]
        owner_application: Option<String>,
        #[arg(long)]
        owner_contact: Option<String>,
        #[arg(long)]
        purpose: String,
        /// The NHI's name; the identity's name on its platform if absent
        #[arg(long)]
        name: Option<String>,
        /// production, staging, ...
        #[arg(long)]
        environment: String,
        /// A grant of the scope ceiling (repeatable)
        #[arg(long = "scope")]
        scope_ceiling: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum PolicyTarget {
    Default,
    Nhi,
    Team,
    Kind,
}

#[derive(Clone, Copy, ValueEnum)]
enum PolicyAction {
    Record,
    Alert,
    #[value(name = "step_up", alias = "step-up")]
    StepUp,
    Suspend,
}

#[derive(Clone, Copy, ValueEnum)]
enum PolicySeverity {
    Low,
    Medium,
    High,
}

#[derive(Subcommand)]
enum ResponsePoliciesCommand {
    /// List the response policies in force and the action when none applies (with --all,
    /// revoked ones too)
    List {
        /// Revoked policies too
        #[arg(long)]
        all: bool,
    },
    /// Set a response policy (admin). The NHI's own policy wins over its team's, over its
    /// kind's, over the default one
    Add {
        /// What the policy is for
        #[arg(long, value_enum)]
        target: PolicyTarget,
        /// The NHI's id, the team's name or id, or the NHI kind (not for the default)
        #[arg(long, required_if_eq_any = [("target", "nhi"), ("target", "team"), ("target", "kind")])]
        id: Option<String>,
        /// What a departure brings
        #[arg(long, value_enum)]
        action: PolicyAction,
        /// Below this severity a finding is only recorded (default low)
        #[arg(long, value_enum)]
        min_severity: Option<PolicySeverity>,
    },
    /// Revoke a response policy: the next most specific one applies again
    Revoke { id: String },
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Show a task
    Get { id: String },
    /// End a task, revoking its credentials
    End { id: String },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("custos: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<crate::scan::Found>().is_some() => ExitCode::from(
            e.downcast_ref::<crate::scan::Found>()
                .map_or(1, |found| found.0),
        ),
        Err(e) if e.downcast_ref::<Refused>().is_some() => {
            eprintln!("custos: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("custos: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => crate::serve::run(Config::resolve(&args)?).await,
        Command::Nhi { command, client } => nhi(&client, command).await,
        Command::Team { command, client } => team(&client, command).await,
        Command::Operator { command, client } => operator(&client, command).await,
        Command::Credential { command, client } => credential(&client, command).await,
        Command::Keys { command, client } => keys(&client, command).await,
        Command::Approvals { command, client } => approvals(&client, command).await,
        Command::Findings { command, client } => findings(&client, command).await,
        Command::Decommissions { command, client } => decommissions(&client, command).await,
        Command::Lifecycle { command, client } => lifecycle(&client, command).await,
        Command::ResponsePolicies { command, client } => response_policies(&client, command).await,
        Command::Scan(args) => crate::scan::run(args).await,
        Command::Observe { file, client } => observe(&client, &file).await,
        Command::Import {
            format,
            files,
            source,
            client,
        } => import(&client, &format, &files, source.as_deref()).await,
        Command::Discovery { command, client } => discovery(&client, command).await,
        Command::Agents { command, client } => agents(&client, command).await,
        Command::Simulate {
            nhis,
            days,
            warmup_days,
            attack_share,
            seed,
            output,
            check,
        } => simulate(
            &SimulationConfig {
                nhis,
                days,
                warmup_days,
                attack_share,
                seed,
            },
            output,
            check,
        ),
        Command::Notifications { command, client } => notifications(&client, command).await,
        Command::Task { command, client } => task(&client, command).await,
        Command::Audit { command, client } => audit(&client, command).await,
        Command::Report { command, client } => report(&client, command).await,
        Command::Whoami { client } => {
            let me = get(&client, "/v1/whoami").await?;
            print_one(&client, &me, &["kind", "id", "name", "roles", "teams"])
        }
        Command::Check {
            credential,
            service,
            operation,
            resource,
            subject,
            client,
        } => {
            let token = client
                .token
                .as_deref()
                .context("no token: pass --token or set CUSTOS_TOKEN")?;
            let evaluator = custos_enforce::Client::builder(&client.url, token)
                .timeout(CHECK_TIMEOUT)
                .build()?;
            let mut question = custos_enforce::Question::new(credential, service, operation)
                .with_resource(resource);
            if !subject.is_empty() {
                question = question.with_subject(subject);
            }
            let decision = evaluator.evaluate(&question).await?;
            // The answer as the endpoint gave it: `--output json` prints it whole.
            let answer = json!({"decision": decision.allowed, "context": decision.context});
            print_one(
                &client,
                &answer,
                &[
                    "decision",
                    "context.reason",
                    "context.nhi",
                    "context.policies",
                    "context.approval_id",
                ],
            )?;
            if decision.allowed {
                Ok(())
            } else {
                Err(Refused(decision.reason).into())
            }
        }
    }
}

/// What a rotation shows: the new key, its secret once, and how long the old one lives.
const ROTATED_FIELDS: &[&str] = &[
    "key.id",
    "key.fingerprint",
    "key.expires_at",
    "key.secret",
    "previous_id",
    "previous_expires_at",
];

/// One API call. Problem documents become errors that say the code and the detail.
async fn request(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, String)],
) -> anyhow::Result<(reqwest::header::HeaderMap, Value)> {
    let token = client
        .token
        .as_deref()
        .context("no token: pass --token or set CUSTOS_TOKEN")?;
    let url = format!("{}{}", client.url.trim_end_matches('/'), path);
    let mut req = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(token);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let response = req
        .send()
        .await
        .with_context(|| format!("cannot reach {}", client.url))?;
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.context("reading the response")?;
    let value: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    if !status.is_success() {
        let code = value.get("code").and_then(Value::as_str).unwrap_or("error");
        let detail = value
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or(""));
        bail!("{} {code}: {detail}", status.as_u16());
    }
    Ok((headers, value))
}

/// A GET whose response body is all the caller needs.
/// `path` with the query parameters that are set, each value percent-encoded.
fn with_query<const N: usize>(path: &str, params: [(&str, Option<String>); N]) -> String {
    let query: Vec<String> = params
        .into_iter()
        .filter_map(|(name, value)| Some(format!("{name}={}", enc(&value?))))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

async fn get(client: &Client, path: &str) -> anyhow::Result<Value> {
    Ok(request(client, Method::GET, path, None, &[]).await?.1)
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn field<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(value, |v, key| v.get(key).unwrap_or(&Value::Null))
}

fn print_one(client: &Client, value: &Value, fields: &[&str]) -> anyhow::Result<()> {
    if client.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(value)?);
        return Ok(());
    }
    let mut table = Table::new();
    for f in fields {
        table.add_row(vec![f.to_string(), cell(field(value, f))]);
    }
    println!("{table}");
    Ok(())
}

fn print_list(client: &Client, items: &[Value], columns: &[&str]) -> anyhow::Result<()> {
    if client.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(items)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.set_header(columns.iter().map(|c| c.to_uppercase()));
    for item in items {
        table.add_row(columns.iter().map(|c| cell(field(item, c))));
    }
    println!("{table}");
    Ok(())
}

fn labels(pairs: &[String]) -> anyhow::Result<Value> {
    let mut map = serde_json::Map::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("tag {pair:?} must be key=value"))?;
        map.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(Value::Object(map))
}

fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

const NHI_FIELDS: &[&str] = &[
    "id",
    "name",
    "kind",
    "platform",
    "environment",
    "status",
    "owner.team",
    "owner.application",
    "owner.contact",
    "purpose",
    "scope_ceiling",
    "tags",
    "external_ids",
    "created_at",
    "updated_at",
    "expires_at",
    "last_used_at",
    "version",
];

async fn nhi(client: &Client, command: NhiCommand) -> anyhow::Result<()> {
    match command {
        NhiCommand::Create {
            name,
            kind,
            platform,
            environment,
            team,
            purpose,
            application,
            contact,
            scope,
            tags,
            expires_at,
        } => {
            let mut body = json!({
                "name": name, "kind": kind, "platform": platform, "environment": environment,
                "owner": {"team": team}, "purpose": purpose, "scope_ceiling": scope, "tags": labels(&tags)?,
            });
            if let Some(a) = application {
                body["owner"]["application"] = json!(a);
            }
            if let Some(c) = contact {
                body["owner"]["contact"] = json!(c);
            }
            if let Some(e) = expires_at {
                body["expires_at"] = json!(e);
            }
            let created = request(client, Method::POST, "/v1/nhis", Some(body), &[])
                .await?
                .1;
            print_one(client, &created, NHI_FIELDS)
        }
        NhiCommand::List {
            status,
            kind,
            platform,
            environment,
            team,
            tags,
            expires_before,
            unused_since,
            search,
            limit,
            cursor,
            all,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            for (name, value) in [
                ("status", status),
                ("kind", kind),
                ("platform", platform),
                ("environment", environment),
                ("team", team),
                ("expires_before", expires_before),
                ("unused_since", unused_since),
                ("q", search),
            ] {
                if let Some(v) = value {
                    query.push((name, v));
                }
            }
            query.extend(tags.into_iter().map(|t| ("tag", t)));
            let mut items = Vec::new();
            let mut next = cursor;
            loop {
                let mut params: Vec<String> = query
                    .iter()
                    .map(|(k, v)| format!("{k}={}", enc(v)))
                    .collect();
                if let Some(c) = &next {
                    params.push(format!("cursor={}", enc(c)));
                }
                let page = get(client, &format!("/v1/nhis?{}", params.join("&"))).await?;
                items.extend(page["items"].as_array().cloned().unwrap_or_default());
                next = page["next_cursor"].as_str().map(str::to_owned);
                if !all || next.is_none() {
                    break;
                }
            }
            print_list(
                client,
                &items,
                &[
                    "id",
                    "name",
                    "kind",
                    "platform",
                    "environment",
                    "status",
                    "owner.team",
                ],
            )?;
            if let (Some(c), Output::Table) = (&next, client.output) {
                eprintln!("more: --cursor {c}");
            }
            Ok(())
        }
        NhiCommand::Get { id } => {
            let found = get(client, &format!("/v1/nhis/{}", enc(&id))).await?;
            print_one(client, &found, NHI_FIELDS)
        }
        NhiCommand::Update {
            id,
            name,
            purpose,
            environment,
            team,
            scope,
            tags,
            expires_at,
        } => {
            let path = format!("/v1/nhis/{}", enc(&id));
            let (headers, _) = request(client, Method::GET, &path, None, &[]).await?;
            let etag = headers
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("*")
                .to_owned();
            let mut body = serde_json::Map::new();
            for (key, value) in [
                ("name", name),
                ("purpose", purpose),
                ("environment", environment),
            ] {
                if let Some(v) = value {
                    body.insert(key.into(), json!(v));
                }
            }
            if let Some(t) = team {
                body.insert("owner".into(), json!({"team": t}));
            }
            if !scope.is_empty() {
                body.insert("scope_ceiling".into(), json!(scope));
            }
            if !tags.is_empty() {
                body.insert("tags".into(), labels(&tags)?);
            }
            if let Some(e) = expires_at {
                body.insert(
                    "expires_at".into(),
                    if e == "none" { Value::Null } else { json!(e) },
                );
            }
            if body.is_empty() {
                bail!("nothing to change: give at least one field");
            }
            let updated = request(
                client,
                Method::PATCH,
                &path,
                Some(Value::Object(body)),
                &[("if-match", etag)],
            )
            .await?
            .1;
            print_one(client, &updated, NHI_FIELDS)
        }
        NhiCommand::Suspend { id, reason } => status_change(client, &id, "suspend", reason).await,
        NhiCommand::Resume { id, reason } => status_change(client, &id, "resume", reason).await,
        NhiCommand::Baseline { id } => {
            let baseline = get(client, &format!("/v1/nhis/{}/baseline", enc(&id))).await?;
            print_baseline(client, &baseline)
        }
        NhiCommand::Transfer {
            id,
            team,
            contact,
            reason,
        } => {
            let body = json!({"owner": {"team": team, "contact": contact}, "reason": reason});
            let path = format!("/v1/nhis/{}/transfer", enc(&id));
            let (_, nhi) = request(client, Method::POST, &path, Some(body), &[]).await?;
            print_one(
                client,
                &nhi,
                &["id", "name", "owner.team_id", "owner.contact"],
            )
        }
        NhiCommand::Decommission {
            id,
            reason,
            wait,
            staged_days,
        } => {
            let body = (reason.is_some() || staged_days.is_some())
                .then(|| json!({ "reason": reason, "staged_days": staged_days }));
            let path = format!("/v1/nhis/{}/decommission", enc(&id));
            let mut workflow = request(client, Method::POST, &path, body, &[]).await?.1;
            if let Some(seconds) = wait {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
                let path = format!(
                    "/v1/decommissions/{}",
                    enc(workflow["id"].as_str().unwrap_or(""))
                );
                while workflow["step"] != "done" {
                    if std::time::Instant::now() >= deadline {
                        print_decommission(client, &workflow)?;
                        anyhow::bail!(
                            "the decommission is still at step {} after {seconds} s",
                            workflow["step"].as_str().unwrap_or("?")
                        );
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    workflow = get(client, &path).await?;
                }
            }
            print_decommission(client, &workflow)
        }
        NhiCommand::BlastRadius { id } => {
            let blast = get(client, &format!("/v1/nhis/{}/blast-radius", enc(&id))).await?;
            print_blast_radius(client, &blast)
        }
    }
}

/// A baseline as a person reads it: where probation stands, how much it knows, and its
/// busiest operations; `--output json` prints it whole.
fn print_baseline(client: &Client, baseline: &Value) -> anyhow::Result<()> {
    if client.output == Output::Json {
        return print_one(client, baseline, &[]);
    }
    let events = format!(
        "{}{}",
        cell(&baseline["events"]),
        match baseline["events_needed"].as_u64() {
            Some(needed) if needed > 0 => format!(" ({needed} more needed to end probation)"),
            _ => String::new(),
        }
    );
    let probation = format!(
        "{} days and {} events; ends at {} at the earliest",
        cell(&baseline["probation"]["days"]),
        cell(&baseline["probation"]["events"]),
        cell(&baseline["probation_ends_at"]),
    );
    let hours = baseline["active_hours_of_week"]
        .as_array()
        .map_or(0, Vec::len);
    let refusal_rate = baseline["refusal_rate"]
        .as_f64()
        .map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_default();
    let mut table = Table::new();
    for (name, value) in [
        ("nhi_id", cell(&baseline["nhi_id"])),
        ("status", cell(&baseline["status"])),
        ("events", events),
        ("probation", probation),
        ("started_at", cell(&baseline["started_at"])),
        ("last_event_at", cell(&baseline["last_event_at"])),
        ("departures", cell(&baseline["departures"])),
        ("services", cell(&baseline["services"])),
        ("operations_known", cell(&baseline["operations_known"])),
        ("resource_prefixes", cell(&baseline["resource_prefixes"])),
        ("source_networks", cell(&baseline["source_networks"])),
        ("user_agents", cell(&baseline["user_agents"])),
        ("client_classes", cell(&baseline["client_classes"])),
        ("people", cell(&baseline["people"])),
        ("for_person_share", cell(&baseline["for_person_share"])),
        ("active_hours_of_week", format!("{hours} of 168")),
        ("refusal_rate", refusal_rate),
        ("alert_bits", cell(&baseline["alert_bits"])),
        ("bytes", cell(&baseline["bytes"])),
    ] {
        table.add_row(vec![name.to_owned(), value]);
    }
    println!("{table}");
    let operations = baseline["operations"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if !operations.is_empty() {
        println!("busiest operations:");
        print_list(
            client,
            operations,
            &["operation", "events", "hourly_rate", "busiest_hour"],
        )?;
    }
    Ok(())
}

async fn status_change(
    client: &Client,
    id: &str,
    action: &str,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let body = reason.map(|r| json!({ "reason": r }));
    let path = format!("/v1/nhis/{}/{action}", enc(id));
    let changed = request(client, Method::POST, &path, body, &[]).await?.1;
    print_one(client, &changed, &["id", "name", "status", "version"])
}

async fn team(client: &Client, command: TeamCommand) -> anyhow::Result<()> {
    match command {
        TeamCommand::Create { name, contact } => {
            let created = request(
                client,
                Method::POST,
                "/v1/teams",
                Some(json!({"name": name, "contact": contact})),
                &[],
            )
            .await?
            .1;
            print_one(client, &created, &["id", "name", "contact", "created_at"])
        }
        TeamCommand::List => {
            let list = get(client, "/v1/teams").await?;
            print_list(
                client,
                list["items"].as_array().map_or(&[], Vec::as_slice),
                &["id", "name", "contact", "created_at"],
            )
        }
        TeamCommand::Get { id } => {
            let found = get(client, &format!("/v1/teams/{}", enc(&id))).await?;
            if client.output == Output::Json {
                return print_one(client, &found, &[]);
            }
            print_one(client, &found, &["id", "name", "contact", "created_at"])?;
            print_list(
                client,
                found["members"].as_array().map_or(&[], Vec::as_slice),
                &["id", "name", "roles", "active"],
            )
        }
    }
}

async fn operator(client: &Client, command: OperatorCommand) -> anyhow::Result<()> {
    const FIELDS: &[&str] = &[
        "id",
        "name",
        "roles",
        "teams",
        "token_hint",
        "active",
        "created_at",
        "revoked_at",
    ];
    match command {
        OperatorCommand::Create { name, roles, teams } => {
            let body = json!({"name": name, "roles": roles, "teams": teams});
            let created = request(client, Method::POST, "/v1/operators", Some(body), &[])
                .await?
                .1;
            print_one(client, &created, &["id", "name", "roles", "teams", "token"])?;
            if client.output == Output::Table {
                eprintln!("the token is shown once: store it now");
            }
            Ok(())
        }
        OperatorCommand::List => {
            let list = get(client, "/v1/operators").await?;
            print_list(
                client,
                list["items"].as_array().map_or(&[], Vec::as_slice),
                &["id", "name", "roles", "teams", "active"],
            )
        }
        OperatorCommand::Get { id } => {
            let found = get(client, &format!("/v1/operators/{}", enc(&id))).await?;
            print_one(client, &found, FIELDS)
        }
        OperatorCommand::Revoke { id } => {
            let revoked = request(
                client,
                Method::POST,
                &format!("/v1/operators/{}/revoke", enc(&id)),
                None,
                &[],
            )
            .await?
            .1;
            print_one(client, &revoked, FIELDS)
        }
    }
}

const CREDENTIAL_COLUMNS: &[&str] = &[
    "id",
    "nhi_id",
    "kind",
    "fingerprint",
    "status",
    "expires_at",
];

async fn credential(client: &Client, command: CredentialCommand) -> anyhow::Result<()> {
    match command {
        CredentialCommand::Issue {
            nhi_id,
            ttl_seconds,
        } => {
            let body = ttl_seconds.map(|t| json!({"ttl_seconds": t}));
            let (_, key) = request(
                client,
                Method::POST,
                &format!("/v1/nhis/{nhi_id}/credentials"),
                body,
                &[],
            )
            .await?;
            print_one(
                client,
                &key,
                &["id", "nhi_id", "fingerprint", "expires_at", "secret"],
            )
        }
        CredentialCommand::List { nhi_id } => {
            let path = match nhi_id {
                Some(id) => format!("/v1/credentials?nhi_id={}", enc(&id)),
                None => "/v1/credentials".to_owned(),
            };
            let page = get(client, &path).await?;
            print_page(client, &page, CREDENTIAL_COLUMNS)
        }
        CredentialCommand::Rotate { id } => {
            let (_, rotated) = request(
                client,
                Method::POST,
                &format!("/v1/credentials/{}/rotate", enc(&id)),
                None,
                &[],
            )
            .await?;
            print_one(client, &rotated, ROTATED_FIELDS)
        }
        CredentialCommand::Collect => {
            let (_, rotated) =
                request(client, Method::POST, "/v1/credentials/rotated", None, &[]).await?;
            print_one(client, &rotated, ROTATED_FIELDS)
        }
        CredentialCommand::Revoke { id } => {
            let (_, revoked) = request(
                client,
                Method::POST,
                &format!("/v1/credentials/{}/revoke", enc(&id)),
                None,
                &[],
            )
            .await?;
            print_one(client, &revoked, CREDENTIAL_COLUMNS)
        }
    }
}

const KEY_COLUMNS: &[&str] = &["kid", "alg", "status", "created_at", "publish_until"];

async fn keys(client: &Client, command: KeysCommand) -> anyhow::Result<()> {
    let list = match command {
        KeysCommand::List => get(client, "/v1/keys").await?,
        KeysCommand::Rotate { alg } => {
            let body = alg.map(|alg| json!({"alg": alg}));
            request(client, Method::POST, "/v1/keys/rotate", body, &[])
                .await?
                .1
        }
    };
    print_page(client, &list, KEY_COLUMNS)
}

const APPROVAL_FIELDS: &[&str] = &[
    "id",
    "kind",
    "state",
    "risk",
    "risk_factors",
    "required_approvals",
    "approvals",
    "expires_at",
    "policies",
    "nhi_id",
    "task_id",
    "requested_by",
    "purpose",
    "requested_scope",
    "excess",
    "requested_ttl_seconds",
    "decided_by",
    "reason",
    "granted_scope",
    "granted_ttl_seconds",
];

async fn approvals(client: &Client, command: ApprovalsCommand) -> anyhow::Result<()> {
    match command {
        ApprovalsCommand::List {
            state,
            nhi_id,
            kind,
            risk,
        } => {
            let path = with_query(
                "/v1/approvals",
                [
                    ("state", state),
                    ("nhi_id", nhi_id),
                    ("kind", kind),
                    ("risk", risk),
                ],
            );
            let page = get(client, &path).await?;
            print_page(
                client,
                &page,
                &[
                    "id",
                    "state",
                    "kind",
                    "risk",
                    "nhi_id",
                    "purpose",
                    "excess",
                    "expires_at",
                ],
            )
        }
        ApprovalsCommand::Show { id } => {
            let approval = get(client, &format!("/v1/approvals/{}", enc(&id))).await?;
            print_one(client, &approval, APPROVAL_FIELDS)
        }
        ApprovalsCommand::Approve {
            id,
            reason,
            scope,
            ttl_seconds,
        } => {
            let mut body = json!({"reason": reason});
            if !scope.is_empty() {
                body["scope"] = json!(scope);
            }
            if let Some(ttl) = ttl_seconds {
                body["ttl_seconds"] = json!(ttl);
            }
            let (_, approval) = request(
                client,
                Method::POST,
                &format!("/v1/approvals/{}/approve", enc(&id)),
                Some(body),
                &[],
            )
            .await?;
            print_one(client, &approval, APPROVAL_FIELDS)
        }
        ApprovalsCommand::Deny { id, reason } => {
            let (_, approval) = request(
                client,
                Method::POST,
                &format!("/v1/approvals/{}/deny", enc(&id)),
                Some(json!({"reason": reason})),
                &[],
            )
            .await?;
            print_one(client, &approval, APPROVAL_FIELDS)
        }
        ApprovalsCommand::Rules { command } => rules(client, command).await,
    }
}

const RULE_FIELDS: &[&str] = &[
    "id",
    "nhi_id",
    "scope",
    "active",
    "reason",
    "created_by",
    "created_at",
    "expires_at",
    "revoked_at",
];

async fn rules(client: &Client, command: RulesCommand) -> anyhow::Result<()> {
    match command {
        RulesCommand::List { nhi, all } => {
            let path = match nhi {
                Some(id) => format!("/v1/approvals/rules?nhi_id={}", enc(&id)),
                None => "/v1/approvals/rules".to_owned(),
            };
            let mut list = get(client, &path).await?;
            if !all && let Some(items) = list["items"].as_array_mut() {
                items.retain(|rule| rule["active"] == true);
            }
            print_page(
                client,
                &list,
                &["id", "nhi_id", "scope", "active", "expires_at", "reason"],
            )
        }
        RulesCommand::Add {
            nhi,
            scope,
            days,
            ttl_seconds,
            reason,
        } => {
            let mut body = json!({"nhi_id": nhi, "scope": scope, "reason": reason});
            if let Some(days) = days {
                // The server says what is too long; a count of days too large even to ask
                // with is said here.
                let seconds = days
                    .checked_mul(24 * 3600)
                    .context("--days: at most 90 days")?;
                body["ttl_seconds"] = json!(seconds);
            }
            if let Some(ttl) = ttl_seconds {
                body["ttl_seconds"] = json!(ttl);
            }
            let (_, rule) =
                request(client, Method::POST, "/v1/approvals/rules", Some(body), &[]).await?;
            print_one(client, &rule, RULE_FIELDS)
        }
        RulesCommand::Revoke { id } => {
            let (_, rule) = request(
                client,
                Method::POST,
                &format!("/v1/approvals/rules/{}/revoke", enc(&id)),
                None,
                &[],
            )
            .await?;
            print_one(client, &rule, RULE_FIELDS)
        }
    }
}

const CHANNEL_FIELDS: &[&str] = &[
    "id",
    "name",
    "kind",
    "team_id",
    "format",
    "url",
    "email.smtp_host",
    "email.smtp_port",
    "email.tls",
    "email.username",
    "email.from",
    "email.to",
    "password_set",
    "enabled",
    "created_at",
    "disabled_at",
];

/// A channel's fields worth a row: a webhook has no email settings, an email channel no URL.
fn channel_fields(channel: &Value) -> Vec<&'static str> {
    let webhook = channel["kind"] == "webhook";
    CHANNEL_FIELDS
        .iter()
        .copied()
        .filter(|f| {
            if webhook {
                !f.starts_with("email.") && *f != "password_set"
            } else {
                *f != "url"
            }
        })
        .collect()
}

const DELIVERY_FIELDS: &[&str] = &[
    "id",
    "channel_id",
    "subject",
    "state",
    "attempts",
    "next_attempt_at",
    "last_attempt_at",
    "last_error",
    "created_at",
    "delivered_at",
];

async fn notifications(client: &Client, command: NotificationsCommand) -> anyhow::Result<()> {
    match command {
        NotificationsCommand::Channels { command } => channels(client, command).await,
        NotificationsCommand::Deliveries {
            command:
                DeliveriesCommand::List {
                    state,
                    channel,
                    limit,
                    cursor,
                },
        } => {
            let path = with_query(
                "/v1/notifications/deliveries",
                [
                    ("state", state),
                    ("channel", channel),
                    ("limit", limit.map(|l| l.to_string())),
                    ("cursor", cursor),
                ],
            );
            let page = get(client, &path).await?;
            print_page(
                client,
                &page,
                &[
                    "id",
                    "channel_id",
                    "subject",
                    "state",
                    "attempts",
                    "last_error",
                    "created_at",
                ],
            )
        }
    }
}

async fn channels(client: &Client, command: ChannelsCommand) -> anyhow::Result<()> {
    match command {
        ChannelsCommand::List => {
            let list = get(client, "/v1/notifications/channels").await?;
            print_page(
                client,
                &list,
                &["id", "name", "kind", "format", "url", "email.to", "enabled"],
            )
        }
        ChannelsCommand::Add {
            name,
            team,
            webhook,
            format,
            email,
            smtp_host,
            smtp_port,
            smtp_tls,
            smtp_username,
            smtp_password,
            from,
        } => {
            let mut body = json!({"name": name});
            if let Some(team) = team {
                body["team"] = json!(team);
            }
            if let Some(url) = webhook {
                body["kind"] = json!("webhook");
                body["url"] = json!(url);
                if let Some(format) = format {
                    body["format"] = json!(match format {
                        WebhookFormat::Json => "json",
                        WebhookFormat::Slack => "slack",
                    });
                }
            } else {
                let mut settings = json!({
                    "smtp_host": smtp_host.context("--smtp-host: an email channel needs it")?,
                    "tls": match smtp_tls {
                        SmtpTls::None => "none",
                        SmtpTls::Starttls => "starttls",
                        SmtpTls::Tls => "tls",
                    },
                    "from": from.context("--from: an email channel needs it")?,
                    "to": email,
                });
                for (key, value) in [
                    ("smtp_port", smtp_port.map(|p| json!(p))),
                    ("username", smtp_username.map(|u| json!(u))),
                    ("password", smtp_password.map(|p| json!(p))),
                ] {
                    if let Some(value) = value {
                        settings[key] = value;
                    }
                }
                body["kind"] = json!("email");
                body["email"] = settings;
            }
            let (_, created) = request(
                client,
                Method::POST,
                "/v1/notifications/channels",
                Some(body),
                &[],
            )
            .await?;
            let has_secret = created["secret"].is_string();
            let mut fields = channel_fields(&created);
            if has_secret {
                fields.push("secret");
            }
            print_one(client, &created, &fields)?;
            if has_secret && client.output == Output::Table {
                eprintln!(
                    "the webhook's signing secret is shown once: store it now (receivers check \
                     Custos-Signature with it)"
                );
            }
            Ok(())
        }
        ChannelsCommand::Disable { id } => {
            let (_, channel) = request(
                client,
                Method::DELETE,
                &format!("/v1/notifications/channels/{}", enc(&id)),
                None,
                &[],
            )
            .await?;
            print_one(client, &channel, &channel_fields(&channel))
        }
        ChannelsCommand::Test { id } => {
            let (_, delivery) = request(
                client,
                Method::POST,
                &format!("/v1/notifications/channels/{}/test", enc(&id)),
                None,
                &[],
            )
            .await?;
            print_one(client, &delivery, DELIVERY_FIELDS)
        }
    }
}

const FINDING_FIELDS: &[&str] = &[
    "id",
    "kind",
    "nhi_id",
    "state",
    "severity",
    "score",
    "summary",
    "action",
    "approval_id",
    "occurrences",
    "first_seen",
    "last_seen",
    "created_at",
    "acknowledged_at",
    "acknowledged_by",
    "resolved_at",
    "resolved_by",
    "resolution",
];

/// A summary cut to `max` characters, with an ellipsis when cut.
fn truncated(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((end, _)) if text.chars().count() > max => format!("{}…", &text[..end]),
        _ => text.to_owned(),
    }
}

async fn lifecycle(client: &Client, command: LifecycleCommand) -> anyhow::Result<()> {
    let (within_days, idle_days, limit) = match command {
        LifecycleCommand::Run => {
            let (_, report) = request(client, Method::POST, "/v1/lifecycle/run", None, &[]).await?;
            return print_one(
                client,
                &report,
                &[
                    "decommissions_started",
                    "decommission_reviews",
                    "keys_rotated",
                    "keys_flagged",
                    "tasks_closed",
                    "orphans",
                    "attestations",
                ],
            );
        }
        LifecycleCommand::Upcoming {
            within_days,
            idle_days,
            limit,
        } => (within_days, idle_days, limit),
    };
    let path = with_query(
        "/v1/lifecycle/upcoming",
        [
            ("within_days", within_days.map(|d| d.to_string())),
            ("idle_days", idle_days.map(|d| d.to_string())),
            ("limit", limit.map(|l| l.to_string())),
        ],
    );
    let upcoming = get(client, &path).await?;
    if client.output == Output::Json {
        return print_one(client, &upcoming, &[]);
    }
    let items = |name: &str| upcoming[name].as_array().map_or(&[][..], Vec::as_slice);
    println!(
        "Expiring within {} days:",
        upcoming["within_days"].as_u64().unwrap_or_default()
    );
    print_list(
        client,
        items("expiring"),
        &["id", "name", "status", "expires_at"],
    )?;
    println!(
        "Unused for {} days or more (due a decommission review):",
        upcoming["idle_days"].as_u64().unwrap_or_default()
    );
    print_list(
        client,
        items("unused"),
        &["id", "name", "last_used_at", "created_at"],
    )?;
    println!("Decommissions running:");
    let running: Vec<Value> = items("running").iter().map(decommission_row).collect();
    print_list(
        client,
        &running,
        &[
            "id",
            "nhi_id",
            "step",
            "failures",
            "last_error",
            "started_at",
        ],
    )?;
    if upcoming["truncated"] == true {
        println!("(more than listed: narrow the window or raise --limit)");
    }
    Ok(())
}

async fn decommissions(client: &Client, command: DecommissionsCommand) -> anyhow::Result<()> {
    match command {
        DecommissionsCommand::List {
            nhi,
            state,
            limit,
            cursor,
        } => {
            let path = with_query(
                "/v1/decommissions",
                [
                    ("nhi_id", nhi),
                    ("state", state),
                    ("limit", limit.map(|l| l.to_string())),
                    ("cursor", cursor),
                ],
            );
            let mut page = get(client, &path).await?;
            if client.output == Output::Table
                && let Some(items) = page["items"].as_array_mut()
            {
                for item in items {
                    *item = decommission_row(item);
                }
            }
            print_page(
                client,
                &page,
                &[
                    "id",
                    "nhi_id",
                    "step",
                    "trigger",
                    "revoked",
                    "failures",
                    "started_at",
                    "finished_at",
                ],
            )
        }
        DecommissionsCommand::Show { id } => {
            let workflow = get(client, &format!("/v1/decommissions/{}", enc(&id))).await?;
            print_decommission(client, &workflow)
        }
        DecommissionsCommand::Cancel { id, reason } => {
            let body = reason.map(|r| json!({ "reason": r }));
            let path = format!("/v1/decommissions/{}/cancel", enc(&id));
            let (_, workflow) = request(client, Method::POST, &path, body, &[]).await?;
            print_decommission(client, &workflow)
        }
    }
}

/// A workflow flattened for a table: what its teardown holds, counted.
fn decommission_row(workflow: &Value) -> Value {
    let mut row = workflow.clone();
    let teardown = &workflow["teardown"];
    row["watch_until"] = teardown["watch"]["until"].clone();
    row["refused_during_watch"] = teardown["watch"]["refused_calls"].clone();
    row["revoked"] = json!(
        teardown["revoked_credentials"]
            .as_array()
            .map_or(0, Vec::len)
    );
    row["archive"] = json!(
        teardown["archive"]["files"]
            .as_array()
            .map(|files| {
                files
                    .iter()
                    .filter_map(|f| f["file"].as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    );
    row["refused_after_ms"] = teardown["last_refused_after_ms"].clone();
    row["notifications"] = teardown["notifications"].clone();
    if workflow["receipt"].is_string() {
        row["receipt"] = json!("signed (the JWS is in --output json)");
    }
    row
}

fn print_decommission(client: &Client, workflow: &Value) -> anyhow::Result<()> {
    if client.output != Output::Table {
        return print_one(client, workflow, &[]);
    }
    print_one(
        client,
        &decommission_row(workflow),
        &[
            "id",
            "nhi_id",
            "step",
            "trigger",
            "requested_by",
            "reason",
            "watch_until",
            "refused_during_watch",
            "revoked",
            "refused_after_ms",
            "archive",
            "notifications",
            "failures",
            "last_error",
            "started_at",
            "finished_at",
            "receipt",
        ],
    )
}

async fn findings(client: &Client, command: FindingsCommand) -> anyhow::Result<()> {
    match command {
        FindingsCommand::List {
            nhi,
            kind,
            state,
            limit,
            cursor,
        } => {
            let path = with_query(
                "/v1/findings",
                [
                    ("nhi_id", nhi),
                    ("kind", kind),
                    ("state", state),
                    ("limit", limit.map(|l| l.to_string())),
                    ("cursor", cursor),
                ],
            );
            let mut page = get(client, &path).await?;
            if client.output == Output::Table
                && let Some(items) = page["items"].as_array_mut()
            {
                for item in items {
                    if let Some(score) = item["score"].as_f64() {
                        item["score"] = json!(format!("{score:.1}"));
                    }
                    if let Some(summary) = item["summary"].as_str() {
                        item["summary"] = json!(truncated(summary, 60));
                    }
                }
            }
            print_page(
                client,
                &page,
                &[
                    "id",
                    "kind",
                    "severity",
                    "state",
                    "nhi_id",
                    "score",
                    "occurrences",
                    "last_seen",
                    "summary",
                ],
            )
        }
        FindingsCommand::Show { id } => {
            let finding = get(client, &format!("/v1/findings/{}", enc(&id))).await?;
            print_finding(client, &finding)
        }
        FindingsCommand::Ack { id, reason } => {
            resolve_finding(client, &id, "acknowledge", reason).await
        }
        FindingsCommand::Dismiss { id, reason } => {
            resolve_finding(client, &id, "dismiss", Some(reason)).await
        }
        FindingsCommand::Accept { id, reason } => {
            resolve_finding(client, &id, "accept", reason).await
        }
        FindingsCommand::Adopt {
            id,
            kind,
            owner_team,
            owner_application,
            owner_contact,
            purpose,
            name,
            environment,
            scope_ceiling,
        } => {
            let mut owner = json!({"team": owner_team});
            if let Some(application) = owner_application {
                owner["application"] = json!(application);
            }
            if let Some(contact) = owner_contact {
                owner["contact"] = json!(contact);
            }
            let mut body = json!({
                "kind": kind,
                "owner": owner,
                "purpose": purpose,
                "environment": environment,
                "scope_ceiling": scope_ceiling,
            });
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            let (_, adopted) = request(
                client,
                Method::POST,
                &format!("/v1/findings/{}/adopt", enc(&id)),
                Some(body),
                &[],
            )
            .await?;
            print_one(
                client,
                &adopted,
                &[
                    "nhi.id",
                    "nhi.name",
                    "nhi.platform",
                    "nhi.status",
                    "approval_id",
                    "finding_id",
                ],
            )
        }
    }
}

/// A finding's fields, then its evidence as pretty JSON; `--output json` prints it whole.
fn print_finding(client: &Client, finding: &Value) -> anyhow::Result<()> {
    print_one(client, finding, FINDING_FIELDS)?;
    if client.output == Output::Table && !finding["evidence"].is_null() {
        println!("evidence:");
        println!("{}", serde_json::to_string_pretty(&finding["evidence"])?);
    }
    Ok(())
}

async fn resolve_finding(
    client: &Client,
    id: &str,
    action: &str,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let body = reason.map(|r| json!({ "reason": r }));
    let (_, finding) = request(
        client,
        Method::POST,
        &format!("/v1/findings/{}/{action}", enc(id)),
        body,
        &[],
    )
    .await?;
    print_one(client, &finding, FINDING_FIELDS)
}

const RESPONSE_POLICY_FIELDS: &[&str] = &[
    "id",
    "target.type",
    "target.id",
    "action",
    "min_severity",
    "created_by",
    "created_at",
    "revoked_at",
];

async fn response_policies(
    client: &Client,
    command: ResponsePoliciesCommand,
) -> anyhow::Result<()> {
    match command {
        ResponsePoliciesCommand::List { all } => {
            let mut list = get(client, "/v1/response-policies").await?;
            if !all && let Some(items) = list["items"].as_array_mut() {
                items.retain(|policy| policy["revoked_at"].is_null());
            }
            print_page(
                client,
                &list,
                &[
                    "id",
                    "target.type",
                    "target.id",
                    "action",
                    "min_severity",
                    "created_at",
                    "revoked_at",
                ],
            )?;
            if client.output == Output::Table {
                println!("when no policy applies: {}", cell(&list["default_action"]));
            }
            Ok(())
        }
        ResponsePoliciesCommand::Add {
            target,
            id,
            action,
            min_severity,
        } => {
            let mut body = json!({
                "target": match target {
                    PolicyTarget::Default => "default",
                    PolicyTarget::Nhi => "nhi",
                    PolicyTarget::Team => "team",
                    PolicyTarget::Kind => "kind",
                },
                "action": match action {
                    PolicyAction::Record => "record",
                    PolicyAction::Alert => "alert",
                    PolicyAction::StepUp => "step_up",
                    PolicyAction::Suspend => "suspend",
                },
            });
            if let Some(id) = id {
                body["id"] = json!(id);
            }
            if let Some(severity) = min_severity {
                body["min_severity"] = json!(match severity {
                    PolicySeverity::Low => "low",
                    PolicySeverity::Medium => "medium",
                    PolicySeverity::High => "high",
                });
            }
            let (_, policy) = request(
                client,
                Method::POST,
                "/v1/response-policies",
                Some(body),
                &[],
            )
            .await?;
            print_one(client, &policy, RESPONSE_POLICY_FIELDS)
        }
        ResponsePoliciesCommand::Revoke { id } => {
            let (_, policy) = request(
                client,
                Method::POST,
                &format!("/v1/response-policies/{}/revoke", enc(&id)),
                None,
                &[],
            )
            .await?;
            print_one(client, &policy, RESPONSE_POLICY_FIELDS)
        }
    }
}

/// The most events `POST /v1/observations` takes at once.
const OBSERVATION_BATCH: usize = crate::behaviour::MAX_OBSERVATIONS;

/// Cuts `events` into the batches to post, in order: at most [`OBSERVATION_BATCH`] events and,
/// serialised, at most the server's body limit each (an event too big even alone is a batch of
/// its own, for the server to refuse).
fn observation_batches(events: &[Value]) -> anyhow::Result<Vec<std::ops::Range<usize>>> {
    // `{"events":[` and `]}`.
    const ENVELOPE: usize = 13;
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, ENVELOPE);
    for (i, event) in events.iter().enumerate() {
        let size = serde_json::to_vec(event)?.len() + 1;
        if i > start
            && (i - start == OBSERVATION_BATCH || bytes + size > crate::extract::MAX_BODY_BYTES)
        {
            batches.push(start..i);
            (start, bytes) = (i, ENVELOPE);
        }
        bytes += size;
    }
    batches.push(start..events.len());
    Ok(batches)
}

/// Posts a file of observed events in batches, in order, and prints the totals.
async fn observe(client: &Client, file: &std::path::Path) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let document: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let events = match document {
        Value::Array(events) => events,
        Value::Object(mut map) => match map.remove("events") {
            Some(Value::Array(events)) => events,
            _ => bail!(
                "{}: expected {{\"events\": [...]}} or a JSON array of events",
                file.display()
            ),
        },
        _ => bail!(
            "{}: expected {{\"events\": [...]}} or a JSON array of events",
            file.display()
        ),
    };
    if events.is_empty() {
        bail!("{}: no events", file.display());
    }
    let batches = observation_batches(&events)?;
    let mut accepted = 0u64;
    let mut findings: Vec<Value> = Vec::new();
    let mut unknown: Vec<Value> = Vec::new();
    for (n, range) in batches.iter().enumerate() {
        let (_, answer) = request(
            client,
            Method::POST,
            "/v1/observations",
            Some(json!({ "events": &events[range.clone()] })),
            &[],
        )
        .await
        .with_context(|| {
            format!(
                "batch {} of {} (events {} to {}; {accepted} accepted before it)",
                n + 1,
                batches.len(),
                range.start + 1,
                range.end,
            )
        })?;
        accepted += answer["accepted"].as_u64().unwrap_or(0);
        for (all, new) in [
            (&mut findings, &answer["findings"]),
            (&mut unknown, &answer["unknown_nhis"]),
        ] {
            for item in new.as_array().map_or(&[][..], Vec::as_slice) {
                if !all.contains(item) {
                    all.push(item.clone());
                }
            }
        }
    }
    let totals = json!({
        "events": events.len(),
        "batches": batches.len(),
        "accepted": accepted,
        "findings": findings,
        "unknown_nhis": unknown,
    });
    print_one(
        client,
        &totals,
        &["events", "batches", "accepted", "findings", "unknown_nhis"],
    )
}

/// Runs the offline simulation of behaviour baselining and prints its report, with how long
/// it took; with `check`, fails unless the report meets the bars.
fn simulate(config: &SimulationConfig, output: Output, check: bool) -> anyhow::Result<()> {
    if config.nhis == 0 {
        bail!("--nhis: at least 1");
    }
    if config.days == 0 {
        bail!("--days: at least 1");
    }
    if !(0.0..=1.0).contains(&config.attack_share) {
        bail!("--attack-share: between 0 and 1");
    }
    let started = std::time::Instant::now();
    // The warm-up is the probation: the evaluated days start as probation ends.
    let settings = custos_core::baseline::Settings {
        probation_days: config.warmup_days,
        ..custos_core::baseline::Settings::default()
    };
    let report = custos_core::baseline::simulate::run(config, &settings);
    let seconds = started.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 {
        report.events as f64 / seconds
    } else {
        0.0
    };
    match output {
        Output::Json => {
            let mut value = serde_json::to_value(&report)?;
            value["wall_seconds"] = json!(seconds);
            value["events_per_second"] = json!(rate.round());
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Output::Table => {
            print!("{}", report.to_table());
            println!("took {seconds:.1} s: {} events/s", rate.round() as u64);
        }
    }
    if check && let Err(shortfall) = report.meets_bars() {
        bail!("the bars are not met: {shortfall}");
    }
    Ok(())
}

const TASK_FIELDS: &[&str] = &[
    "id",
    "state",
    "nhi_id",
    "purpose",
    "scope",
    "approval_id",
    "activated_at",
    "expires_at",
    "ended_at",
    "credential.jti",
];

async fn task(client: &Client, command: TaskCommand) -> anyhow::Result<()> {
    let task = match command {
        TaskCommand::Get { id } => get(client, &format!("/v1/tasks/{}", enc(&id))).await?,
        TaskCommand::End { id } => {
            request(
                client,
                Method::POST,
                &format!("/v1/tasks/{}/end", enc(&id)),
                None,
                &[],
            )
            .await?
            .1
        }
    };
    print_one(client, &task, TASK_FIELDS)
}

/// Prints the `items` of a listing; `next_cursor`, if any, under the table.
fn print_page(client: &Client, page: &Value, columns: &[&str]) -> anyhow::Result<()> {
    if client.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(page)?);
        return Ok(());
    }
    print_list(
        client,
        page["items"].as_array().map_or(&[], Vec::as_slice),
        columns,
    )?;
    if let Some(cursor) = page["next_cursor"].as_str() {
        println!("next page: --cursor {cursor}");
    }
    Ok(())
}

async fn audit(client: &Client, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Checkpoint => {
            let checkpoint = get(client, "/v1/audit/checkpoint").await?;
            if client.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&checkpoint)?);
            } else {
                print!("{}", checkpoint["note"].as_str().unwrap_or_default());
            }
            Ok(())
        }
        AuditCommand::Export { from, to, nhi } => {
            let mut query = Vec::new();
            if let Some(nhi) = nhi {
                query.push(format!("nhi={}", enc(&nhi)));
            }
            if let Some(from) = from {
                query.push(format!("from={from}"));
            }
            if let Some(to) = to {
                query.push(format!("to={to}"));
            }
            let export = get(client, &format!("/v1/audit/export?{}", query.join("&"))).await?;
            println!("{}", serde_json::to_string_pretty(&export)?);
            Ok(())
        }
        AuditCommand::Verify {
            file,
            checkpoint,
            key,
        } => {
            let kept = match &checkpoint {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                None => None,
            };
            let outcome = match file {
                Some(path) => verify_file(&path, kept.as_deref(), key.as_deref())?,
                None => verify_server(client, kept.as_deref(), key.as_deref()).await?,
            };
            match outcome {
                Ok(summary) => {
                    println!("ok: {summary}");
                    Ok(())
                }
                Err(failure) => bail!("verification failed: {failure}"),
            }
        }
    }
}

/// A kept checkpoint opened with the log's key.
fn open_kept(
    kept: Option<&str>,
    key: &str,
) -> Result<Option<custos_core::checkpoint::Checkpoint>, crate::verify::Failure> {
    kept.map(|note| crate::verify::open_checkpoint(note, key, None))
        .transpose()
}

fn verify_file(
    path: &std::path::Path,
    kept: Option<&str>,
    key: Option<&str>,
) -> anyhow::Result<Result<String, crate::verify::Failure>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let export: crate::verify::AuditExport = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an export", path.display()))?;
    Ok((|| {
        let verified = crate::verify::verify_export(&export, key)?;
        if let Some(kept) = open_kept(kept, &export.verifier_key)?
            && kept.size() > verified.checkpoint.size()
        {
            return Err(crate::verify::Failure {
                index: Some(verified.checkpoint.size()),
                reason: format!(
                    "the export's checkpoint ({} leaves) is older than the kept one ({})",
                    verified.checkpoint.size(),
                    kept.size()
                ),
            });
        }
        Ok(format!(
            "{} events verified against the signed checkpoint of {} leaves",
            verified.events,
            verified.checkpoint.size()
        ))
    })())
}

/// Reads the whole live log through exports and recomputes it.
async fn verify_server(
    client: &Client,
    kept: Option<&str>,
    key: Option<&str>,
) -> anyhow::Result<Result<String, crate::verify::Failure>> {
    let current = get(client, "/v1/audit/checkpoint").await?;
    let vkey = current["verifier_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let note = current["note"].as_str().unwrap_or_default().to_owned();
    let checkpoint = match crate::verify::open_checkpoint(&note, &vkey, key) {
        Ok(c) => c,
        Err(failure) => return Ok(Err(failure)),
    };
    let size = checkpoint.size();
    let mut leaves = Vec::with_capacity(size as usize);
    // Two pages in flight: reading rows is most of a verification's time, on the server and
    // here, and a second request keeps the other core busy. Pages are checked in log order.
    let mut in_flight = std::collections::VecDeque::new();
    let mut next = 0;
    loop {
        while in_flight.len() < 2 && next < size {
            let to = (next + 10_000).min(size);
            let (client, path) = (
                client.clone(),
                format!("/v1/audit/export?from={next}&to={to}"),
            );
            in_flight.push_back((
                next,
                to,
                tokio::spawn(async move { get(&client, &path).await }),
            ));
            next = to;
        }
        let Some((from, to, page)) = in_flight.pop_front() else {
            break;
        };
        let page: crate::verify::AuditExport = serde_json::from_value(page.await??)?;
        match crate::verify::sealed_leaves(&page.events, Some(from)) {
            Ok(page_leaves) => leaves.extend(page_leaves),
            Err(failure) => return Ok(Err(failure)),
        }
        if page.events.len() as u64 != to - from {
            return Ok(Err(crate::verify::Failure {
                index: Some(from + page.events.len() as u64),
                reason: "this position's event is missing".into(),
            }));
        }
    }
    let kept = match open_kept(kept, &vkey) {
        Ok(kept) => kept,
        Err(failure) => return Ok(Err(failure)),
    };
    Ok(
        crate::verify::verify_log(&leaves, &checkpoint, kept.as_ref()).map(|()| {
            format!(
                "{} events recomputed; they give the signed checkpoint's root{}",
                leaves.len(),
                if kept.is_some() {
                    ", and extend the kept checkpoint"
                } else {
                    ""
                }
            )
        }),
    )
}

// ---- discovery: imports, observed identities, logical agents ----

#[derive(Subcommand)]
enum DiscoveryCommand {
    /// List observed identities
    Identities {
        /// aws, kubernetes, github, okta, ...
        #[arg(long)]
        platform: Option<String>,
        /// human, non_human or platform
        #[arg(long)]
        class: Option<String>,
        /// Only shadow NHIs: non-human identities matched with no NHI
        #[arg(long)]
        shadow: bool,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// Link NHIs into a new logical agent
    Create {
        name: String,
        /// The owner team's name or id
        #[arg(long)]
        team: String,
        /// A member NHI's id (repeatable)
        #[arg(long = "nhi", required = true)]
        nhis: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    List {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    Get {
        id: String,
    },
    /// Add an NHI to a logical agent
    Link {
        id: String,
        nhi: String,
    },
    /// Take an NHI out of a logical agent
    Unlink {
        id: String,
        nhi: String,
    },
    /// Suggested links among the NHIs in no logical agent, strongest first
    Suggest,
}

/// The columns an import's report prints, in order.
const IMPORT_FIELDS: &[&str] = &[
    "source",
    "format",
    "bytes",
    "records",
    "malformed",
    "complete",
    "stopped",
    "registered",
    "existing",
    "identities",
    "humans",
    "non_human",
    "platform_services",
    "matched",
    "shadow",
    "new_shadow",
    "dismissed_shadow",
    "observed",
    "findings",
];

/// `custos import`: each file streamed to the server with a progress bar of bytes sent (shown
/// only on a terminal), its report printed as it finishes, then its malformed records.
async fn import(
    client: &Client,
    format: &str,
    files: &[std::path::PathBuf],
    source: Option<&str>,
) -> anyhow::Result<()> {
    let token = client
        .token
        .as_deref()
        .context("no token: pass --token or set CUSTOS_TOKEN")?;
    let mut reports = Vec::new();
    for file in files {
        let name = source
            .map(str::to_owned)
            .unwrap_or_else(|| file.display().to_string());
        let (reader, size): (Box<dyn tokio::io::AsyncRead + Send + Unpin>, Option<u64>) =
            if file.as_os_str() == "-" {
                (Box::new(tokio::io::stdin()), None)
            } else {
                let opened = tokio::fs::File::open(file)
                    .await
                    .with_context(|| format!("cannot open {}", file.display()))?;
                let size = opened.metadata().await.ok().map(|m| m.len());
                (Box::new(opened), size)
            };
        let bar = match size {
            Some(size) => indicatif::ProgressBar::new(size),
            None => indicatif::ProgressBar::no_length(),
        };
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(name.clone());
        let stream = upload_stream(reader, bar.clone());
        let url = with_query(
            &format!("{}/v1/discovery/imports", client.url.trim_end_matches('/')),
            [("format", Some(format.to_owned())), ("source", Some(name))],
        );
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .with_context(|| format!("cannot reach {}", client.url));
        bar.finish_and_clear();
        let response = response?;
        let status = response.status();
        let text = response.text().await.context("reading the response")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let code = value.get("code").and_then(Value::as_str).unwrap_or("error");
            let detail = value.get("detail").and_then(Value::as_str).unwrap_or("");
            bail!("{}: {} {code}: {detail}", file.display(), status.as_u16());
        }
        if client.output == Output::Table {
            print_one(client, &value, IMPORT_FIELDS)?;
            if let Some(malformed) = value["malformed_records"].as_array()
                && !malformed.is_empty()
            {
                println!("malformed records (first {}):", malformed.len());
                for record in malformed {
                    let line = record["position"]["line"]
                        .as_u64()
                        .map(|line| format!(", line {line}"))
                        .unwrap_or_default();
                    println!(
                        "  record {}{line}: {}",
                        record["position"]["record"],
                        cell(&record["reason"])
                    );
                }
            }
        }
        reports.push(value);
    }
    if client.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

/// A file as a stream of chunks for an upload, moving the progress bar as they are read.
fn upload_stream(
    reader: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    bar: indicatif::ProgressBar,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures_util::stream::unfold((reader, bar), |(mut reader, bar)| async move {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; 256 * 1024];
        match reader.read(&mut chunk).await {
            Ok(0) => None,
            Ok(n) => {
                chunk.truncate(n);
                bar.inc(n as u64);
                Some((Ok(chunk), (reader, bar)))
            }
            Err(e) => Some((Err(e), (reader, bar))),
        }
    })
}

async fn discovery(client: &Client, command: DiscoveryCommand) -> anyhow::Result<()> {
    match command {
        DiscoveryCommand::Identities {
            platform,
            class,
            shadow,
            limit,
            cursor,
        } => {
            let path = with_query(
                "/v1/discovery/identities",
                [
                    ("platform", platform),
                    ("class", class),
                    ("shadow", shadow.then(|| "true".to_owned())),
                    ("limit", limit.map(|l| l.to_string())),
                    ("cursor", cursor),
                ],
            );
            let page = get(client, &path).await?;
            print_page(
                client,
                &page,
                &[
                    "platform",
                    "principal",
                    "class",
                    "nhi_id",
                    "events",
                    "first_seen",
                    "last_seen",
                    "class_reason",
                ],
            )
        }
    }
}

/// What a logical agent's table shows.
const AGENT_FIELDS: &[&str] = &[
    "id",
    "name",
    "team_id",
    "description",
    "created_at",
    "members",
];

async fn agents(client: &Client, command: AgentsCommand) -> anyhow::Result<()> {
    let show = |agent: Value| -> anyhow::Result<()> {
        let mut shown = agent.clone();
        if client.output == Output::Table {
            let members: Vec<Value> = agent["members"]
                .as_array()
                .map(|m| m.iter().map(|m| m["nhi_id"].clone()).collect())
                .unwrap_or_default();
            shown["members"] = Value::Array(members);
        }
        print_one(client, &shown, AGENT_FIELDS)
    };
    match command {
        AgentsCommand::Create {
            name,
            team,
            nhis,
            description,
        } => {
            let mut body = json!({"name": name, "team": team, "nhis": nhis});
            if let Some(description) = description {
                body["description"] = json!(description);
            }
            let (_, agent) =
                request(client, Method::POST, "/v1/logical-agents", Some(body), &[]).await?;
            show(agent)
        }
        AgentsCommand::List { limit, cursor } => {
            let path = with_query(
                "/v1/logical-agents",
                [("limit", limit.map(|l| l.to_string())), ("cursor", cursor)],
            );
            let mut page = get(client, &path).await?;
            if client.output == Output::Table
                && let Some(items) = page["items"].as_array_mut()
            {
                for item in items {
                    let count = item["members"].as_array().map_or(0, Vec::len);
                    item["members"] = json!(count);
                }
            }
            print_page(
                client,
                &page,
                &["id", "name", "team_id", "members", "created_at"],
            )
        }
        AgentsCommand::Get { id } => {
            show(get(client, &format!("/v1/logical-agents/{}", enc(&id))).await?)
        }
        AgentsCommand::Link { id, nhi } => {
            let path = format!("/v1/logical-agents/{}/members/{}", enc(&id), enc(&nhi));
            show(request(client, Method::PUT, &path, None, &[]).await?.1)
        }
        AgentsCommand::Unlink { id, nhi } => {
            let path = format!("/v1/logical-agents/{}/members/{}", enc(&id), enc(&nhi));
            show(request(client, Method::DELETE, &path, None, &[]).await?.1)
        }
        AgentsCommand::Suggest => {
            let suggestions = get(client, "/v1/logical-agents/suggestions").await?;
            let items = suggestions.as_array().cloned().unwrap_or_default();
            print_list(
                client,
                &items,
                &["name", "team_id", "confidence", "nhi_ids", "reasons"],
            )
        }
    }
}

// ---- reports ----

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    Json,
    Csv,
    Html,
}

#[derive(Subcommand)]
enum ReportCommand {
    /// The OWASP Non-Human Identities Top 10 (2025): each category's count, affected NHIs and
    /// evidence, and the unmanaged identities. JSON lists at most 100 NHIs per category; CSV
    /// lists every row; HTML is a standalone page with a chart
    Posture {
        #[arg(long, value_enum, default_value_t = ReportFormat::Json)]
        format: ReportFormat,
        /// Write the report to FILE instead of standard output
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// The riskiest NHIs with their scores and the factors that make them
    Risk {
        /// How many NHIs (1 to 1000)
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

async fn report(client: &Client, command: ReportCommand) -> anyhow::Result<()> {
    match command {
        ReportCommand::Posture { format, out } => {
            let name = match format {
                ReportFormat::Json => "json",
                ReportFormat::Csv => "csv",
                ReportFormat::Html => "html",
            };
            let body = get(client, &format!("/v1/reports/posture?format={name}")).await?;
            let text = match body {
                Value::String(text) => text,
                json => serde_json::to_string_pretty(&json)? + "\n",
            };
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display())),
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        }
        ReportCommand::Risk { limit } => {
            let report = get(client, &format!("/v1/reports/risk?limit={limit}")).await?;
            if client.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            let mut table = Table::new();
            table.set_header(["SCORE", "LEVEL", "NHI", "NAME", "FACTORS"]);
            for nhi in report["nhis"].as_array().into_iter().flatten() {
                let factors: Vec<String> = nhi["factors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| {
                        format!(
                            "+{} {}: {}",
                            f["points"],
                            cell(&f["name"]),
                            cell(&f["reason"])
                        )
                    })
                    .collect();
                table.add_row(vec![
                    cell(&nhi["score"]),
                    cell(&nhi["level"]),
                    cell(&nhi["nhi_id"]),
                    cell(&nhi["name"]),
                    factors.join("\n"),
                ]);
            }
            println!("{table}");
            println!("{} NHIs scored", cell(&report["scored"]));
            Ok(())
        }
    }
}

/// A blast radius as a person reads it; `--output json` prints it whole.
fn print_blast_radius(client: &Client, blast: &Value) -> anyhow::Result<()> {
    if client.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(blast)?);
        return Ok(());
    }
    let list = |key: &str| blast[key].as_array().cloned().unwrap_or_default();
    println!("reach: {}", cell(&blast["reach"]));
    println!("deepest delegation: {}", cell(&blast["max_depth"]));
    println!("active tasks: {}", list("active_tasks").len());
    let mut table = Table::new();
    table.set_header(["CREDENTIAL", "KIND", "HOLDER", "DEPTH", "SCOPE"]);
    for c in list("credentials").iter().chain(&list("descendants")) {
        table.add_row(["credential_id", "kind", "nhi_id", "depth", "scope"].map(|f| cell(&c[f])));
    }
    println!("{table}");
    let mut table = Table::new();
    table.set_header(["DEPENDENT NHI", "NAME", "RELATION", "CREDENTIALS"]);
    for d in list("dependents").iter().chain(&list("delegators")) {
        table.add_row(["nhi_id", "name", "relation", "credential_ids"].map(|f| cell(&d[f])));
    }
    println!("{table}");
    Ok(())
}

//! Server configuration from, in rising precedence: a TOML file, `CUSTOS_*` environment
//! variables, command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use custos_core::issuance::IssuanceLimits;
use custos_core::jose::SigningAlg;
use serde::Deserialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `custos serve` flags. Each also reads its `CUSTOS_*` variable; unset ones fall back to the
/// config file, then to the defaults.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "CUSTOS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the embedded store, keys and the first admin token [default: ./custos-data]
    #[arg(long, env = "CUSTOS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// postgres://… to use PostgreSQL instead of the embedded SQLite store
    #[arg(long, env = "CUSTOS_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A TOML file with any of: listen, data_dir, database_url, log_format, log_level,
    /// public_url, signing_alg, static_key_max_age_seconds, static_key_rotation_grace_seconds,
    /// task_ttl_default_seconds, task_ttl_max_seconds, max_delegation_depth, audit_origin,
    /// audit_witness_dir, audit_checkpoint_interval_seconds, notify_retry_base_ms,
    /// notify_allowed_hosts, approval_ttl_seconds, high_risk_quorum, escalate_after_seconds,
    /// separation_of_duties, import_max_bytes, baseline_probation_days, baseline_probation_events,
    /// baseline_alert_bits, anomaly_action, archive_dir, lifecycle_interval_seconds,
    /// lifecycle_idle_days, lifecycle_on_expiry, static_key_rotate_after_days,
    /// static_key_on_age, ownership_attest_every_days, strict_consistency, strict_max_lag_ms
    #[arg(long, env = "CUSTOS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log as human-readable text or as JSON lines [default: text]
    #[arg(long, env = "CUSTOS_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. info or custos_server=debug [default: info]
    #[arg(long, env = "CUSTOS_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// The URL clients reach this server at: the OAuth issuer [default: http://LISTEN]
    #[arg(long, env = "CUSTOS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Algorithm of the token-signing key created on first start: ES256, EdDSA or RS256
    /// [default: ES256]
    #[arg(long, env = "CUSTOS_SIGNING_ALG")]
    pub signing_alg: Option<SigningAlg>,
    /// The only hosts notification channels may send to, comma-separated [default: any]
    #[arg(long, env = "CUSTOS_NOTIFY_ALLOWED_HOSTS", value_delimiter = ',')]
    pub notify_allowed_hosts: Option<Vec<String>>,
    /// With PostgreSQL: refuse every access decision (`state_unconfirmed`) while this node
    /// cannot confirm it has heard every other node's changes [default: false]
    #[arg(long, env = "CUSTOS_STRICT_CONSISTENCY", value_name = "BOOL")]
    pub strict_consistency: Option<bool>,
    /// In strict mode, how far behind the store a node may be before it refuses, in
    /// milliseconds, 50 to 60000 [default: 500]
    #[arg(long, env = "CUSTOS_STRICT_MAX_LAG_MS", value_name = "MS")]
    pub strict_max_lag_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    static_key_max_age_seconds: Option<i64>,
    public_url: Option<String>,
    signing_alg: Option<SigningAlg>,
    static_key_rotation_grace_seconds: Option<i64>,
    task_ttl_default_seconds: Option<u32>,
    task_ttl_max_seconds: Option<u32>,
    max_delegation_depth: Option<u32>,
    audit_origin: Option<String>,
    audit_witness_dir: Option<PathBuf>,
    audit_checkpoint_interval_seconds: Option<u64>,
    notify_retry_base_ms: Option<u64>,
    notify_allowed_hosts: Option<Vec<String>>,
    approval_ttl_seconds: Option<u32>,
    high_risk_quorum: Option<u32>,
    escalate_after_seconds: Option<u32>,
    separation_of_duties: Option<bool>,
    import_max_bytes: Option<u64>,
    baseline_probation_days: Option<u32>,
    baseline_probation_events: Option<u64>,
    baseline_alert_bits: Option<f32>,
    anomaly_action: Option<String>,
    archive_dir: Option<PathBuf>,
    lifecycle_interval_seconds: Option<u64>,
    lifecycle_idle_days: Option<u32>,
    lifecycle_on_expiry: Option<String>,
    static_key_rotate_after_days: Option<u32>,
    static_key_on_age: Option<String>,
    ownership_attest_every_days: Option<u32>,
    strict_consistency: Option<bool>,
    strict_max_lag_ms: Option<u64>,
}

/// Everything `custos serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub admin_token: Option<String>,
    pub master_key: Option<String>,
    pub static_key_max_age_seconds: i64,
    pub static_key_rotation_grace_seconds: i64,
    /// The OAuth issuer identifier, without a trailing slash; `None` means `http://` and the
    /// address the server bound.
    pub public_url: Option<String>,
    pub signing_alg: SigningAlg,
    pub issuance: IssuanceLimits,
    /// The audit log's origin line (its name in checkpoints); `None`: derived from the issuer.
    pub audit_origin: Option<String>,
    /// Where every checkpoint is also written, outside the store; `None`: DATA_DIR/checkpoints.
    pub audit_witness_dir: Option<PathBuf>,
    /// Where decommissioned NHIs' trails are archived; `None`: DATA_DIR/archive.
    pub archive_dir: Option<PathBuf>,
    /// How often the lifecycle scheduler runs its jobs.
    pub lifecycle_interval_seconds: u64,
    /// What the lifecycle jobs do: idle and expired NHIs, aging keys, owner attestation.
    pub lifecycle: custos_core::lifecycle::LifecyclePolicy,
    /// How often a checkpoint is signed when the log has grown.
    pub audit_checkpoint_interval_seconds: u64,
    /// The first wait before a failed notification is retried; each retry waits twice as long
    /// as the one before, at most 5 minutes.
    pub notify_retry_base_ms: u64,
    /// The only hosts notification channels may send to (webhook and SMTP hosts, compared
    /// case-insensitively); `None`: any host.
    pub notify_allowed_hosts: Option<Vec<String>>,
    /// How long an approval request waits for a decision before it expires (and so denies).
    pub approval_ttl_seconds: u32,
    /// How many reviewers must approve a high-risk request.
    pub high_risk_quorum: u32,
    /// How long a request waits for its owner team before it goes to the team's fallback team
    /// too, for teams with a fallback but no wait of their own.
    pub escalate_after_seconds: u32,
    /// Separation of duties: nobody approves a request about an NHI their own team owns, and a
    /// request whose owner team has a fallback team goes to it at once.
    pub separation_of_duties: bool,
    /// The largest file `POST /v1/discovery/imports` accepts, in bytes as uploaded.
    pub import_max_bytes: u64,
    /// How a behaviour baseline learns (probation by time and volume) and the score, in bits,
    /// at which an event departs from it.
    pub baseline: custos_core::baseline::Settings,
    /// What a departure after probation brings when no response policy names the NHI, its
    /// team or its kind.
    pub anomaly_action: custos_core::finding::ResponseAction,
    /// Strict mode (PostgreSQL): a node that cannot confirm its in-memory state has heard
    /// every other node's changes refuses every access decision.
    pub strict_consistency: bool,
    /// In strict mode, the largest lag behind the store at which a node still decides: the
    /// time since the newest heartbeat it heard back was sent.
    pub strict_max_lag_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: String, message: String },
    #[error("static_key_max_age_seconds must be between 60 and 31536000")]
    KeyAge,
    #[error("static_key_rotation_grace_seconds must be between 0 and 2592000")]
    RotationGrace,
    #[error(
        "task ttls must satisfy 1 <= task_ttl_default_seconds <= task_ttl_max_seconds <= 86400"
    )]
    TaskTtl,
    #[error("max_delegation_depth must be between 0 and 16")]
    DelegationDepth,
    #[error("public_url must be an http(s) URL without query or fragment")]
    PublicUrl,
    #[error("audit_origin must be printable text without spaces or pluses")]
    AuditOrigin,
    #[error("lifecycle_interval_seconds must be between 1 and 86400")]
    LifecycleInterval,
    #[error("lifecycle_idle_days must be between 1 and 3650")]
    IdleDays,
    #[error("lifecycle_on_expiry must be decommission or review")]
    OnExpiry,
    #[error(
        "static_key_rotate_after_days must be at least 1 and shorter than static_key_max_age_seconds"
    )]
    RotateAfter,
    #[error("static_key_on_age must be rotate or flag")]
    OnKeyAge,
    #[error("ownership_attest_every_days must be between 1 and 3650")]
    AttestEvery,
    #[error("audit_checkpoint_interval_seconds must be between 1 and 86400")]
    CheckpointInterval,
    #[error("notify_retry_base_ms must be between 1 and 300000")]
    NotifyRetryBase,
    #[error("notify_allowed_hosts must name hosts, without spaces, schemes or paths")]
    NotifyAllowedHosts,
    #[error("approval_ttl_seconds must be between 1 and 2592000")]
    ApprovalTtl,
    #[error("high_risk_quorum must be between 1 and 5")]
    Quorum,
    #[error("import_max_bytes must be at least 1")]
    ImportMaxBytes,
    #[error("escalate_after_seconds must be between 60 and 2592000")]
    EscalateAfter,
    #[error(
        "baseline settings must satisfy baseline_probation_days <= 365, baseline_probation_events <= 10000000 and 1 <= baseline_alert_bits <= 64"
    )]
    Baseline,
    #[error("anomaly_action must be one of record, alert, step_up, suspend")]
    AnomalyAction,
    #[error("strict_max_lag_ms must be between 50 and 60000")]
    StrictMaxLag,
}

impl Config {
    /// What `custos serve` runs with when nothing is configured, on the embedded store in
    /// `data_dir`: the defaults `resolve` falls back to.
    pub fn defaults(data_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir,
            database_url: None,
            log_format: LogFormat::default(),
            log_level: "info".to_owned(),
            admin_token: None,
            master_key: None,
            static_key_max_age_seconds: 90 * 24 * 3600,
            static_key_rotation_grace_seconds: 24 * 3600,
            public_url: None,
            signing_alg: SigningAlg::Es256,
            issuance: IssuanceLimits::default(),
            audit_origin: None,
            audit_witness_dir: None,
            archive_dir: None,
            lifecycle_interval_seconds: 60,
            lifecycle: custos_core::lifecycle::LifecyclePolicy::default(),
            audit_checkpoint_interval_seconds: 60,
            notify_retry_base_ms: 2000,
            notify_allowed_hosts: None,
            approval_ttl_seconds: 24 * 3600,
            high_risk_quorum: 2,
            escalate_after_seconds: 3600,
            separation_of_duties: false,
            import_max_bytes: 4 << 30,
            baseline: custos_core::baseline::Settings::default(),
            anomaly_action: custos_core::finding::ResponseAction::Alert,
            strict_consistency: false,
            strict_max_lag_ms: 500,
        }
    }

    /// Resolves flags/env (already merged by clap) over the file over the defaults. Secrets
    /// come from the environment only, never from flags (which `ps` shows) or the file.
    pub fn resolve(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = Self::defaults(PathBuf::from("custos-data"));
        let key_age = file
            .static_key_max_age_seconds
            .unwrap_or(defaults.static_key_max_age_seconds);
        if !(60..=31_536_000).contains(&key_age) {
            return Err(ConfigError::KeyAge);
        }
        let lifecycle = lifecycle_policy(&file, defaults.lifecycle, key_age)?;
        let grace = file
            .static_key_rotation_grace_seconds
            .unwrap_or(defaults.static_key_rotation_grace_seconds);
        if !(0..=30 * 24 * 3600).contains(&grace) {
            return Err(ConfigError::RotationGrace);
        }
        let issuance = IssuanceLimits {
            default_ttl_seconds: file
                .task_ttl_default_seconds
                .unwrap_or(defaults.issuance.default_ttl_seconds),
            max_ttl_seconds: file
                .task_ttl_max_seconds
                .unwrap_or(defaults.issuance.max_ttl_seconds),
            max_delegation_depth: file
                .max_delegation_depth
                .unwrap_or(defaults.issuance.max_delegation_depth),
        };
        if !(1 <= issuance.default_ttl_seconds
            && issuance.default_ttl_seconds <= issuance.max_ttl_seconds
            && issuance.max_ttl_seconds <= 86_400)
        {
            return Err(ConfigError::TaskTtl);
        }
        if issuance.max_delegation_depth > 16 {
            return Err(ConfigError::DelegationDepth);
        }
        let non_empty = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let listen = args.listen.or(file.listen).unwrap_or(defaults.listen);
        let public_url = match args.public_url.clone().or(file.public_url) {
            None => None,
            Some(url) => {
                let url = url.trim_end_matches('/').to_owned();
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || url.contains(['?', '#', ' '])
                {
                    return Err(ConfigError::PublicUrl);
                }
                Some(url)
            }
        };
        let audit_origin = file.audit_origin;
        if audit_origin.as_deref().is_some_and(|o| {
            o.is_empty() || o.contains([' ', '+']) || !o.chars().all(|c| c.is_ascii_graphic())
        }) {
            return Err(ConfigError::AuditOrigin);
        }
        let checkpoint_interval = file
            .audit_checkpoint_interval_seconds
            .unwrap_or(defaults.audit_checkpoint_interval_seconds);
        if !(1..=86_400).contains(&checkpoint_interval) {
            return Err(ConfigError::CheckpointInterval);
        }
        let notify_retry_base_ms = file
            .notify_retry_base_ms
            .unwrap_or(defaults.notify_retry_base_ms);
        if !(1..=300_000).contains(&notify_retry_base_ms) {
            return Err(ConfigError::NotifyRetryBase);
        }
        let notify_allowed_hosts = match args
            .notify_allowed_hosts
            .clone()
            .or(file.notify_allowed_hosts)
        {
            None => None,
            Some(hosts) => {
                let hosts: Vec<String> = hosts.iter().map(|h| h.trim().to_lowercase()).collect();
                if hosts
                    .iter()
                    .any(|h| h.is_empty() || h.contains([' ', '/', '@']) || h.contains("://"))
                {
                    return Err(ConfigError::NotifyAllowedHosts);
                }
                Some(hosts)
            }
        };
        let approval_ttl_seconds = file
            .approval_ttl_seconds
            .unwrap_or(defaults.approval_ttl_seconds);
        if !(1..=30 * 24 * 3600).contains(&approval_ttl_seconds) {
            return Err(ConfigError::ApprovalTtl);
        }
        let high_risk_quorum = file.high_risk_quorum.unwrap_or(defaults.high_risk_quorum);
        if !(1..=5).contains(&high_risk_quorum) {
            return Err(ConfigError::Quorum);
        }
        let escalate_after_seconds = file
            .escalate_after_seconds
            .unwrap_or(defaults.escalate_after_seconds);
        if !custos_core::ESCALATE_AFTER_SECONDS.contains(&escalate_after_seconds) {
            return Err(ConfigError::EscalateAfter);
        }
        let separation_of_duties = file
            .separation_of_duties
            .unwrap_or(defaults.separation_of_duties);
        let import_max_bytes = file.import_max_bytes.unwrap_or(defaults.import_max_bytes);
        if import_max_bytes == 0 {
            return Err(ConfigError::ImportMaxBytes);
        }
        let baseline = custos_core::baseline::Settings {
            probation_days: file
                .baseline_probation_days
                .unwrap_or(defaults.baseline.probation_days),
            probation_events: file
                .baseline_probation_events
                .unwrap_or(defaults.baseline.probation_events),
            alert_bits: file
                .baseline_alert_bits
                .unwrap_or(defaults.baseline.alert_bits),
        };
        if baseline.probation_days > 365
            || baseline.probation_events > 10_000_000
            || !(1.0..=64.0).contains(&baseline.alert_bits)
        {
            return Err(ConfigError::Baseline);
        }
        let anomaly_action = match &file.anomaly_action {
            None => defaults.anomaly_action,
            Some(text) => custos_core::finding::ResponseAction::parse(text)
                .ok_or(ConfigError::AnomalyAction)?,
        };
        let strict_consistency = args
            .strict_consistency
            .or(file.strict_consistency)
            .unwrap_or(defaults.strict_consistency);
        let strict_max_lag_ms = args
            .strict_max_lag_ms
            .or(file.strict_max_lag_ms)
            .unwrap_or(defaults.strict_max_lag_ms);
        if !(50..=60_000).contains(&strict_max_lag_ms) {
            return Err(ConfigError::StrictMaxLag);
        }
        Ok(Self {
            listen,
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(defaults.data_dir),
            database_url: args.database_url.clone().or(file.database_url),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            log_level: args
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or(defaults.log_level),
            admin_token: non_empty("CUSTOS_ADMIN_TOKEN"),
            master_key: non_empty("CUSTOS_MASTER_KEY"),
            static_key_max_age_seconds: key_age,
            static_key_rotation_grace_seconds: grace,
            public_url,
            signing_alg: args
                .signing_alg
                .or(file.signing_alg)
                .unwrap_or(defaults.signing_alg),
            issuance,
            audit_origin,
            audit_witness_dir: file.audit_witness_dir,
            archive_dir: file.archive_dir,
            lifecycle_interval_seconds: match file.lifecycle_interval_seconds {
                None => defaults.lifecycle_interval_seconds,
                Some(seconds @ 1..=86_400) => seconds,
                Some(_) => return Err(ConfigError::LifecycleInterval),
            },
            lifecycle,
            audit_checkpoint_interval_seconds: checkpoint_interval,
            notify_retry_base_ms,
            notify_allowed_hosts,
            approval_ttl_seconds,
            high_risk_quorum,
            escalate_after_seconds,
            separation_of_duties,
            import_max_bytes,
            baseline,
            anomaly_action,
            strict_consistency,
            strict_max_lag_ms,
        })
    }

    /// The store URL: the configured database, or the SQLite file in the data directory.
    pub fn store_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("custos.db").display()))
    }
}

/// The lifecycle jobs' policy from the file over the defaults. A key must be due its rotation
/// before it expires, or it would never be rotated.
fn lifecycle_policy(
    file: &FileConfig,
    defaults: custos_core::lifecycle::LifecyclePolicy,
    key_max_age_seconds: i64,
) -> Result<custos_core::lifecycle::LifecyclePolicy, ConfigError> {
    use custos_core::lifecycle::{ExpiryAction, KeyAgeAction, LifecyclePolicy};
    let idle_days = file.lifecycle_idle_days.unwrap_or(defaults.idle_days);
    if !(1..=3650).contains(&idle_days) {
        return Err(ConfigError::IdleDays);
    }
    let on_expiry = match &file.lifecycle_on_expiry {
        None => defaults.on_expiry,
        Some(text) => ExpiryAction::parse(text).ok_or(ConfigError::OnExpiry)?,
    };
    let on_key_age = match &file.static_key_on_age {
        None => defaults.on_key_age,
        Some(text) => KeyAgeAction::parse(text).ok_or(ConfigError::OnKeyAge)?,
    };
    // Unset, the rotation age follows a shortened key lifetime: two thirds of it.
    let rotate_keys_after_days = match file.static_key_rotate_after_days {
        Some(days) => days,
        None => defaults
            .rotate_keys_after_days
            .min(u32::try_from(key_max_age_seconds * 2 / 3 / 86_400).unwrap_or(u32::MAX)),
    };
    if file.static_key_rotate_after_days.is_some()
        && (rotate_keys_after_days == 0
            || i64::from(rotate_keys_after_days) * 86_400 >= key_max_age_seconds)
    {
        return Err(ConfigError::RotateAfter);
    }
    let attest_every_days = file
        .ownership_attest_every_days
        .unwrap_or(defaults.attest_every_days);
    if !(1..=3650).contains(&attest_every_days) {
        return Err(ConfigError::AttestEvery);
    }
    Ok(LifecyclePolicy {
        idle_days,
        on_expiry,
        rotate_keys_after_days,
        on_key_age,
        attest_every_days,
    })
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_file(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("custos.toml");
        std::fs::write(&path, text).unwrap();
        Config::resolve(&ServeArgs {
            config: Some(path),
            ..Default::default()
        })
    }

    #[test]
    fn escalation_and_separation_of_duties_are_read_and_checked() {
        let defaults = resolve_file("").unwrap();
        assert_eq!(defaults.escalate_after_seconds, 3600);
        assert!(!defaults.separation_of_duties);
        let set =
            resolve_file("escalate_after_seconds = 600\nseparation_of_duties = true\n").unwrap();
        assert_eq!(set.escalate_after_seconds, 600);
        assert!(set.separation_of_duties);
        for bad in [59, 2_592_001] {
            let err = resolve_file(&format!("escalate_after_seconds = {bad}\n")).unwrap_err();
            assert!(matches!(err, ConfigError::EscalateAfter), "{bad}: {err}");
            assert_eq!(
                err.to_string(),
                "escalate_after_seconds must be between 60 and 2592000"
            );
        }
        assert!(matches!(
            resolve_file("separation_of_duties = \"yes\"\n"),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn strict_mode_is_read_and_its_bound_checked() {
        let defaults = resolve_file("").unwrap();
        assert!(!defaults.strict_consistency);
        assert_eq!(defaults.strict_max_lag_ms, 500);
        let set = resolve_file("strict_consistency = true\nstrict_max_lag_ms = 250\n").unwrap();
        assert!(set.strict_consistency);
        assert_eq!(set.strict_max_lag_ms, 250);
        for bad in [49, 60_001] {
            let err = resolve_file(&format!("strict_max_lag_ms = {bad}\n")).unwrap_err();
            assert!(matches!(err, ConfigError::StrictMaxLag), "{bad}: {err}");
        }
        // A flag (or its variable) wins over the file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("custos.toml");
        std::fs::write(
            &path,
            "strict_consistency = true\nstrict_max_lag_ms = 250\n",
        )
        .unwrap();
        let flagged = Config::resolve(&ServeArgs {
            config: Some(path),
            strict_consistency: Some(false),
            strict_max_lag_ms: Some(1000),
            ..Default::default()
        })
        .unwrap();
        assert!(!flagged.strict_consistency);
        assert_eq!(flagged.strict_max_lag_ms, 1000);
    }
}

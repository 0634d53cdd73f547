//! Notifications of the review inbox: channels (webhooks, email over SMTP), the deliveries
//! queued for them, and the background worker that sends them, retried with backoff.
//!
//! A notification is rendered when it is queued (one delivery per matching channel, in the
//! store), so what is sent is what was true when the request was made; the worker claims due
//! deliveries with a lease, sends each with a timeout, and records the outcome. Delivery is at
//! least once: a node that stops mid-send leaves the delivery to be sent again when its lease
//! ends, so receivers deduplicate by the delivery id (`Custos-Delivery`).
//!
//! Webhooks are signed like Stripe's: `Custos-Signature: t=<unix seconds>,v1=<hex>`, where the
//! hex is `HMAC-SHA256(secret, "<t>.<raw body>")` and the secret is the whole string shown
//! once at creation. Receivers recompute it over the raw body, compare in constant time, and
//! refuse a `t` more than 5 minutes away from their clock.
//!
//! An agent's task callback (`callback_url`) is a delivery of the same kind, without a channel:
//! queued with the decision it announces, retried the same way, and signed without a shared
//! secret: `Custos-Callback-Signature` is a compact JWS with detached content (RFC 7515
//! Appendix F) over the raw body, by the server's current token-signing key, which the agent
//! finds by `kid` in `/.well-known/jwks.json`.

use std::time::Duration;

use custos_core::issuance::Approval;
use custos_core::{Actor, EventKind, Page, Role, Timestamp};
use custos_store::{
    DeliveryFilter, DeliveryOutcome, DeliveryState, NotificationChannel, NotificationDelivery,
    StoreError,
};
use hmac::{Hmac, KeyInit, Mac};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::{nullable_timestamp_schema, text_100, timestamp_schema};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::service::{AppState, encode_cursor, new_id};

/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: u32 = 8;
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long one attempt may take: connecting, sending and the answer.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed delivery is held by the node attempting it; past that (the node died)
/// another node may attempt it again. Well beyond [`SEND_TIMEOUT`].
const LEASE: Duration = Duration::from_secs(60);
/// How often the worker looks for due deliveries.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Attempts in flight at once on one node.
const MAX_IN_FLIGHT: usize = 16;
/// The longest error text kept with a delivery.
const MAX_ERROR_CHARS: usize = 300;
/// The most recipients an email channel may have.
const MAX_RECIPIENTS: usize = 20;

/// What the operator configured for notifications.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The wait before the first retry; each next one waits twice as long, up to [`MAX_BACKOFF`].
    pub retry_base: Duration,
    /// The only hosts channels may send to (lowercase); `None`: any.
    pub allowed_hosts: Option<Vec<String>>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_secs(2),
            allowed_hosts: None,
        }
    }
}

impl Settings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            retry_base: Duration::from_millis(config.notify_retry_base_ms),
            allowed_hosts: config.notify_allowed_hosts.clone(),
        }
    }

    fn allows(&self, host: &str) -> bool {
        self.allowed_hosts.is_none() || self.lists(host)
    }

    /// Whether `notify_allowed_hosts` names `host` itself (not merely allows every host).
    fn lists(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.allowed_hosts.as_ref().is_some_and(|hosts| {
            hosts
                .iter()
                .any(|h| h.trim_start_matches('[').trim_end_matches(']') == host.to_lowercase())
        })
    }

    /// The wait after the `attempts`-th failed attempt: the base, doubled for each attempt
    /// before it, at most [`MAX_BACKOFF`].
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(20);
        self.retry_base
            .saturating_mul(1 << doublings)
            .min(MAX_BACKOFF)
    }
}

// ---- wire types ----

/// A channel's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Webhook,
    Email,
}

/// What a webhook posts: our own JSON document, or a Slack incoming-webhook message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

/// How an email channel speaks to its SMTP server: in the clear (a local relay), upgrading with
/// STARTTLS (usually port 587), or TLS from the first byte (usually port 465).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

/// A new channel. A webhook names its `url` (and `format`); an email channel its `email`
/// settings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    /// Unique among channels.
    #[schema(schema_with = text_100)]
    pub name: String,
    pub kind: ChannelKind,
    /// Only requests about NHIs of this team (a name or id); every team's when left out.
    pub team: Option<String>,
    /// Webhooks: where to post, `http` or `https`.
    #[schema(max_length = 2048, pattern = "^[Hh][Tt][Tt][Pp][Ss]?://")]
    pub url: Option<String>,
    /// Webhooks: `json` (the default) or `slack`.
    pub format: Option<WebhookFormat>,
    /// Email channels: the SMTP server and the message's sender and recipients.
    pub email: Option<EmailInput>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailInput {
    #[schema(min_length = 1, max_length = 253)]
    pub smtp_host: String,
    /// Default: 25 without TLS, 587 with STARTTLS, 465 with TLS.
    #[schema(minimum = 1, maximum = 65535)]
    pub smtp_port: Option<u16>,
    pub tls: SmtpTls,
    #[schema(max_length = 256)]
    pub username: Option<String>,
    /// Kept sealed, never shown again; sent only over TLS.
    #[schema(max_length = 1024)]
    pub password: Option<String>,
    /// The sender: `address` or `Name <address>`.
    #[schema(max_length = 320)]
    pub from: String,
    /// 1 to 20 recipients.
    #[schema(min_items = 1, max_items = 20)]
    pub to: Vec<String>,
}

/// What is shown of an email channel; never its password.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct EmailView {
    pub smtp_host: String,
    pub smtp_port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub from: String,
    pub to: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    pub id: String,
    pub name: String,
    pub kind: ChannelKind,
    /// Only requests about this team's NHIs; `null`: every team's.
    pub team_id: Option<String>,
    /// `json` or `slack` for webhooks, `text` for email.
    pub format: String,
    /// Webhooks: where it posts, as its origin only. The whole URL is kept sealed: a Slack
    /// webhook URL is itself a credential.
    pub url: Option<String>,
    pub email: Option<EmailView>,
    /// Email channels: whether an SMTP password is kept (it is never shown).
    pub password_set: bool,
    #[schema(schema_with = timestamp_schema)]
    pub created_at: Timestamp,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub disabled_at: Option<Timestamp>,
    pub enabled: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelCreated {
    #[serde(flatten)]
    pub channel: ChannelView,
    /// Webhooks: the HMAC-SHA256 key of `Custos-Signature` (the whole string, as UTF-8). Shown
    /// once; kept only sealed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelList {
    pub items: Vec<ChannelView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: String,
    /// The channel it goes to; `null` for a task's callback.
    pub channel_id: Option<String>,
    /// A task's callback: where it is posted, as its origin only.
    pub callback_url: Option<String>,
    /// What it is about: `approval:<id>`, `finding:<id>`, `decommission:<id>`,
    /// `test:<channel id>` or `task:<id>` (a callback).
    pub subject: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Attempts made so far (at most 8).
    pub attempts: u32,
    /// Pending deliveries: when the next attempt is due.
    #[schema(schema_with = nullable_timestamp_schema)]
    pub next_attempt_at: Option<Timestamp>,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub last_attempt_at: Option<Timestamp>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    #[schema(schema_with = timestamp_schema)]
    pub created_at: Timestamp,
    #[schema(schema_with = nullable_timestamp_schema)]
    pub delivered_at: Option<Timestamp>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<DeliveryView>,
    pub next_cursor: Option<String>,
}

/// What is kept sealed with a channel.
#[derive(Default, Deserialize, Serialize)]
struct ChannelSecrets {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hmac_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

/// An email as queued: rendered, addressed when sent.
#[derive(Deserialize, Serialize)]
struct EmailPayload {
    subject: String,
    text: String,
    html: String,
}

fn seal_context(channel_id: &str) -> String {
    format!("notification-channel:{channel_id}")
}

fn secrets_of(state: &AppState, channel: &NotificationChannel) -> Result<ChannelSecrets, String> {
    let Some(sealed) = &channel.sealed_secret else {
        return Ok(ChannelSecrets::default());
    };
    let opened = state
        .keys
        .unseal(&seal_context(&channel.id), sealed)
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&opened)
        .map_err(|_| "the channel's sealed settings are unreadable".into())
}

// ---- use cases ----

fn kind_of(channel: &NotificationChannel) -> ChannelKind {
    if channel.kind == "email" {
        ChannelKind::Email
    } else {
        ChannelKind::Webhook
    }
}

fn channel_view(channel: NotificationChannel) -> ChannelView {
    let kind = kind_of(&channel);
    let (url, email) = match kind {
        ChannelKind::Webhook => (Some(channel.target.clone()), None),
        ChannelKind::Email => (None, serde_json::from_str(&channel.target).ok()),
    };
    ChannelView {
        enabled: channel.disabled_at.is_none(),
        password_set: kind == ChannelKind::Email && channel.sealed_secret.is_some(),
        id: channel.id,
        name: channel.name,
        kind,
        team_id: channel.team_id,
        format: channel.format,
        url,
        email,
        created_at: channel.created_at,
        disabled_at: channel.disabled_at,
    }
}

/// A webhook URL as it may be shown: its origin, and `/…` for the rest.
fn shown_url(url: &reqwest::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let rest = if url.path() == "/" && url.query().is_none() {
        "/"
    } else {
        "/…"
    };
    format!(
        "{}://{}{port}{rest}",
        url.scheme(),
        url.host_str().unwrap_or("")
    )
}

/// Where plain `http` may go: anywhere a channel may send (an admin chose it), or, for the URL
/// an agent gives, only to a host `notify_allowed_hosts` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PlainHttp {
    Allowed,
    OnlyToListedHosts,
}

/// Checks a URL Custos will post to, when it is given and again before each attempt (the
/// allow-list may have changed): `http(s)` with a host, within `notify_allowed_hosts` when
/// that is set, and plain `http` only as `plain_http` permits. `field` names the input.
pub(crate) fn target_url(
    settings: &Settings,
    field: &str,
    text: &str,
    plain_http: PlainHttp,
    errors: &mut custos_core::validate::ValidationErrors,
) -> Option<reqwest::Url> {
    if text.len() > 2048 {
        errors.push(field, "must be at most 2048 characters");
        return None;
    }
    let url = match reqwest::Url::parse(text) {
        Ok(url) => url,
        Err(e) => {
            errors.push(field, format!("is not a URL: {e}"));
            return None;
        }
    };
    if !matches!(url.scheme(), "http" | "https") {
        errors.push(field, "must be an http or https URL");
        return None;
    }
    match url.host_str() {
        None | Some("") => {
            errors.push(field, "must name a host");
            None
        }
        Some(host) if !settings.allows(host) => {
            errors.push(
                field,
                format!("the host {host:?} is not in notify_allowed_hosts"),
            );
            None
        }
        Some(host)
            if url.scheme() == "http"
                && plain_http == PlainHttp::OnlyToListedHosts
                && !settings.lists(host) =>
        {
            errors.push(
                field,
                format!(
                    "must be https: plain http goes only to a host named in notify_allowed_hosts, and {host:?} is not"
                ),
            );
            None
        }
        Some(_) => Some(url),
    }
}

fn webhook_url(
    settings: &Settings,
    text: Option<&str>,
    errors: &mut custos_core::validate::ValidationErrors,
) -> Option<reqwest::Url> {
    let Some(text) = text else {
        errors.push("url", "a webhook needs a url");
        return None;
    };
    target_url(settings, "url", text, PlainHttp::Allowed, errors)
}

fn mailbox(
    errors: &mut custos_core::validate::ValidationErrors,
    field: &str,
    text: &str,
) -> Option<Mailbox> {
    if text.chars().any(char::is_control) || text.chars().count() > 320 {
        errors.push(field, "must be an email address without control characters");
        return None;
    }
    match text.parse::<Mailbox>() {
        Ok(mailbox) => Some(mailbox),
        Err(e) => {
            errors.push(field, format!("is not an email address: {e}"));
            None
        }
    }
}

fn email_settings(
    settings: &Settings,
    input: EmailInput,
    errors: &mut custos_core::validate::ValidationErrors,
) -> (EmailView, Option<String>) {
    let host = input.smtp_host.trim().to_owned();
    if host.is_empty()
        || host.len() > 253
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
    {
        errors.push("email.smtp_host", "must be a host name or an IP address");
    } else if !settings.allows(&host) {
        errors.push(
            "email.smtp_host",
            format!("the host {host:?} is not in notify_allowed_hosts"),
        );
    }
    let port = match input.smtp_port {
        Some(0) => {
            errors.push("email.smtp_port", "must be 1 to 65535");
            0
        }
        Some(port) => port,
        None => match input.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        },
    };
    mailbox(errors, "email.from", &input.from);
    if input.to.is_empty() || input.to.len() > MAX_RECIPIENTS {
        errors.push(
            "email.to",
            format!("must name 1 to {MAX_RECIPIENTS} recipients"),
        );
    }
    for (i, to) in input.to.iter().enumerate() {
        mailbox(errors, &format!("email.to[{i}]"), to);
    }
    if let Some(username) = &input.username {
        custos_core::validate::text(errors, "email.username", username, 256);
    }
    match (&input.username, &input.password) {
        (Some(_), None) => errors.push("email.password", "a username needs a password"),
        (None, Some(_)) => errors.push("email.username", "a password needs a username"),
        (Some(_), Some(password)) => {
            if password.is_empty() || password.chars().count() > 1024 {
                errors.push("email.password", "must be 1 to 1024 characters");
            }
            if input.tls == SmtpTls::None {
                errors.push(
                    "email.password",
                    "is sent only over TLS: use tls \"starttls\" or \"tls\"",
                );
            }
        }
        (None, None) => {}
    }
    (
        EmailView {
            smtp_host: host,
            smtp_port: port,
            tls: input.tls,
            username: input.username,
            from: input.from,
            to: input.to,
        },
        input.password,
    )
}

/// `POST /v1/notifications/channels` (admin).
pub async fn create_channel(
    state: &AppState,
    who: &Principal,
    input: CreateChannel,
) -> ApiResult<ChannelCreated> {
    who.require(&[Role::Admin])?;
    let settings = &state.notify;
    let mut errors = custos_core::validate::ValidationErrors::default();
    let name = input.name.trim().to_owned();
    custos_core::validate::text(&mut errors, "name", &name, 100);
    let team_id = match &input.team {
        None => None,
        Some(team) => crate::service::team_named(state, "team", team, &mut errors).await?,
    };
    let id = new_id();
    let mut secrets = ChannelSecrets::default();
    let (kind, target, format, host) = match input.kind {
        ChannelKind::Webhook => {
            if input.email.is_some() {
                errors.push("email", "only for email channels");
            }
            let url = webhook_url(settings, input.url.as_deref(), &mut errors);
            let format = input.format.unwrap_or_default();
            let shown = url.as_ref().map(shown_url).unwrap_or_default();
            let host = url
                .as_ref()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            secrets.url = url.map(String::from);
            secrets.hmac_secret = Some(crate::secrets::mint_hmac_secret("custos_whsec_"));
            let format = match format {
                WebhookFormat::Json => "json",
                WebhookFormat::Slack => "slack",
            };
            ("webhook", shown, format, host)
        }
        ChannelKind::Email => {
            if input.url.is_some() {
                errors.push("url", "only for webhooks");
            }
            if input.format.is_some() {
                errors.push("format", "only for webhooks");
            }
            let Some(email) = input.email else {
                errors.push("email", "an email channel needs its email settings");
                return Err(errors.into());
            };
            let (view, password) = email_settings(settings, email, &mut errors);
            secrets.password = password;
            let host = view.smtp_host.clone();
            let target = serde_json::to_string(&view).unwrap_or_default();
            ("email", target, "text", host)
        }
    };
    errors.into_result()?;
    let has_secrets = secrets.url.is_some() || secrets.password.is_some();
    let sealed_secret = has_secrets.then(|| {
        let plain = zeroize::Zeroizing::new(serde_json::to_vec(&secrets).unwrap_or_default());
        state.keys.seal(&seal_context(&id), &plain)
    });
    let channel = NotificationChannel {
        id,
        name,
        kind: kind.to_owned(),
        team_id,
        target,
        format: format.to_owned(),
        sealed_secret,
        created_at: state.now(),
        disabled_at: None,
    };
    let event = state
        .event(
            EventKind::NotificationChannelCreated,
            who.actor(),
            format!("notification_channel:{}", channel.id),
        )
        .with("name", &channel.name)
        .with("kind", &channel.kind)
        .with("format", &channel.format)
        .with("host", host)
        .with(
            "team",
            channel.team_id.clone().unwrap_or_else(|| "*".into()),
        );
    state
        .store
        .create_notification_channel(&channel, &event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ApiError::conflict(
                "channel_name_taken",
                format!("a channel named {:?} already exists", channel.name),
            ),
            other => other.into(),
        })?;
    Ok(ChannelCreated {
        channel: channel_view(channel),
        secret: secrets.hmac_secret.take(),
    })
}

/// `GET /v1/notifications/channels` (admin, auditor).
pub async fn list_channels(state: &AppState, who: &Principal) -> ApiResult<ChannelList> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let items = state
        .store
        .list_notification_channels()
        .await?
        .into_iter()
        .map(channel_view)
        .collect();
    Ok(ChannelList { items })
}

/// `DELETE /v1/notifications/channels/{id}` (admin): disables it, and gives up what it had
/// pending. Disabling a disabled channel changes nothing.
pub async fn disable_channel(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> ApiResult<ChannelView> {
    who.require(&[Role::Admin])?;
    let event = state.event(
        EventKind::NotificationChannelDisabled,
        who.actor(),
        format!("notification_channel:{id}"),
    );
    state
        .store
        .disable_notification_channel(id, state.now(), &event)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("notification channel"),
            other => other.into(),
        })?;
    let channel = state
        .store
        .get_notification_channel(id)
        .await?
        .ok_or_else(|| ApiError::not_found("notification channel"))?;
    Ok(channel_view(channel))
}

fn delivery_view(d: NotificationDelivery) -> DeliveryView {
    DeliveryView {
        next_attempt_at: (d.state == DeliveryState::Pending).then_some(d.next_attempt_at),
        state: d.state.as_str().to_owned(),
        id: d.id,
        channel_id: d.channel_id,
        callback_url: d
            .callback_url
            .as_deref()
            .and_then(|u| reqwest::Url::parse(u).ok())
            .map(|u| shown_url(&u)),
        subject: d.subject,
        attempts: d.attempts,
        last_attempt_at: d.last_attempt_at,
        last_error: d.last_error,
        created_at: d.created_at,
        delivered_at: d.delivered_at,
    }
}

fn queued(
    state: &AppState,
    channel: &NotificationChannel,
    subject: String,
    payload: String,
    id: String,
) -> NotificationDelivery {
    let now = state.now();
    NotificationDelivery {
        id,
        channel_id: Some(channel.id.clone()),
        callback_url: None,
        subject,
        payload,
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_at: now,
        last_attempt_at: None,
        last_error: None,
        created_at: now,
        delivered_at: None,
    }
}

/// `POST /v1/notifications/channels/{id}/test` (admin): queues a test message like any other.
pub async fn test_channel(state: &AppState, who: &Principal, id: &str) -> ApiResult<DeliveryView> {
    who.require(&[Role::Admin])?;
    let channel = state
        .store
        .get_notification_channel(id)
        .await?
        .ok_or_else(|| ApiError::not_found("notification channel"))?;
    if channel.disabled_at.is_some() {
        return Err(ApiError::conflict(
            "channel_disabled",
            "the channel is disabled",
        ));
    }
    let delivery_id = new_id();
    let link = format!("{}/ui/approvals", state.issuer);
    let payload = render_test(&channel, &delivery_id, &link);
    let delivery = queued(
        state,
        &channel,
        format!("test:{}", channel.id),
        payload,
        delivery_id,
    );
    state
        .store
        .enqueue_notifications(std::slice::from_ref(&delivery))
        .await?;
    Ok(delivery_view(delivery))
}

/// `GET /v1/notifications/deliveries` (admin, auditor).
pub async fn list_deliveries(
    state: &AppState,
    who: &Principal,
    filter: DeliveryFilter,
    page: Page,
) -> ApiResult<DeliveryList> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let limit = page.limit;
    let found = state
        .store
        .list_notification_deliveries(
            &filter,
            &Page {
                after: page.after,
                limit: limit + 1,
            },
        )
        .await?;
    let more = found.len() > limit as usize;
    let items: Vec<_> = found
        .into_iter()
        .take(limit as usize)
        .map(delivery_view)
        .collect();
    let next_cursor = if more {
        items.last().map(|d| encode_cursor(&d.id))
    } else {
        None
    };
    Ok(DeliveryList { items, next_cursor })
}

/// What happened to an approval request, for the notifications that announce it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Happened<'a> {
    /// It was filed and waits for a reviewer.
    Requested,
    /// Approved or denied, by a reviewer or a standing rule (the request says which).
    Decided,
    /// An approval by `by` counted towards its quorum; `remaining` more are needed.
    Voted {
        by: &'a str,
        reason: &'a str,
        remaining: u32,
    },
    /// Unanswered past its deadline, and so denied.
    Expired,
    /// It went to `to_team` (an id) as well: `why` says it waited too long, or that separation
    /// of duties keeps the owner team from approving.
    Escalated {
        by: &'a str,
        to_team: &'a str,
        why: &'a str,
    },
}

impl Happened<'_> {
    /// The `type` of the JSON message.
    fn kind(&self) -> &'static str {
        match self {
            Happened::Requested => "approval.requested",
            Happened::Decided => "approval.decided",
            Happened::Voted { .. } => "approval.voted",
            Happened::Expired => "approval.expired",
            Happened::Escalated { .. } => "approval.escalated",
        }
    }
}

/// The notifications of `what` for one request, rendered now, for the caller to write with the
/// change they announce: one per enabled channel of the NHI's owner team (or of every team),
/// and for an escalation one per channel of the team it went to as well. Never fails the
/// change: a failure to read what a message needs is logged, and nothing is sent.
pub(crate) async fn announce(
    state: &AppState,
    approval: &Approval,
    what: Happened<'_>,
) -> Vec<NotificationDelivery> {
    match render_for_channels(state, approval, what).await {
        Ok(deliveries) => deliveries,
        Err(error) => {
            tracing::error!(
                approval = %approval.id,
                about = what.kind(),
                %error,
                "could not render the notifications of an approval request"
            );
            Vec::new()
        }
    }
}

/// What a notification of an approval request says besides the request itself.
struct ApprovalContext<'a> {
    approval: &'a Approval,
    nhi_name: String,
    team_name: String,
    link: String,
    /// For an escalation: the name of the team it went to.
    to_team_name: String,
}

async fn render_for_channels(
    state: &AppState,
    approval: &Approval,
    what: Happened<'_>,
) -> Result<Vec<NotificationDelivery>, StoreError> {
    let nhi = state.store.get_nhi(&approval.nhi_id).await?;
    let team_id = nhi.as_ref().map(|n| n.owner.team_id.clone());
    let to_team = match what {
        Happened::Escalated { to_team, .. } => Some(to_team),
        _ => None,
    };
    let teams: Vec<&str> = team_id.as_deref().into_iter().chain(to_team).collect();
    let channels = channels_hearing(state, &teams).await?;
    if channels.is_empty() {
        return Ok(Vec::new());
    }
    let team_name = match &team_id {
        Some(id) => state.store.get_team(id).await?.map(|t| t.name),
        None => None,
    };
    let to_team_name = match to_team {
        Some(id) => state.store.get_team(id).await?.map(|t| t.name),
        None => None,
    };
    let context = ApprovalContext {
        approval,
        nhi_name: nhi.map(|n| n.name).unwrap_or_default(),
        team_name: team_name.unwrap_or_default(),
        link: format!("{}/ui/approvals/{}", state.issuer, approval.id),
        to_team_name: to_team_name.unwrap_or_default(),
    };
    Ok(channels
        .iter()
        .map(|channel| {
            let id = new_id();
            let payload = match what {
                Happened::Requested => render_approval(channel, &id, &context),
                _ => render_update(channel, &id, &context, what),
            };
            queued(
                state,
                channel,
                format!("approval:{}", approval.id),
                payload,
                id,
            )
        })
        .collect())
}

/// The enabled channels that hear about the business of `teams`: the channels of every team
/// (those without one), and the channels of the teams named.
async fn channels_hearing(
    state: &AppState,
    teams: &[&str],
) -> Result<Vec<NotificationChannel>, StoreError> {
    Ok(state
        .store
        .list_notification_channels()
        .await?
        .into_iter()
        .filter(|c| c.disabled_at.is_none())
        .filter(|c| {
            c.team_id
                .as_deref()
                .is_none_or(|team| teams.contains(&team))
        })
        .collect())
}

/// The notifications of a new finding about `nhi`, one per enabled channel of its owner team
/// (and per channel for every team), rendered for each channel's kind and format. A failure
/// to read the channels is logged and queues nothing: the finding itself is still recorded.
pub(crate) async fn announce_finding(
    state: &AppState,
    finding: &custos_core::finding::Finding,
    nhi: &custos_core::Nhi,
) -> Vec<NotificationDelivery> {
    let rendered: Result<Vec<NotificationDelivery>, StoreError> = async {
        let channels = channels_hearing(state, &[nhi.owner.team_id.as_str()]).await?;
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let team_name = state
            .store
            .get_team(&nhi.owner.team_id)
            .await?
            .map(|t| t.name)
            .unwrap_or_default();
        let link = format!("{}/ui/nhis/{}", state.issuer, nhi.id);
        Ok(channels
            .iter()
            .map(|channel| {
                let id = new_id();
                let payload = render_finding(channel, &id, finding, nhi, &team_name, &link);
                queued(
                    state,
                    channel,
                    format!("finding:{}", finding.id),
                    payload,
                    id,
                )
            })
            .collect())
    }
    .await;
    rendered.unwrap_or_else(|error| {
        tracing::error!(finding = %finding.id, %error, "could not render the notifications of a finding");
        Vec::new()
    })
}

fn render_finding(
    channel: &NotificationChannel,
    delivery_id: &str,
    finding: &custos_core::finding::Finding,
    nhi: &custos_core::Nhi,
    team_name: &str,
    link: &str,
) -> String {
    let headline = format!(
        "{} finding ({}) about {}: {}",
        finding.severity, finding.kind, nhi.name, finding.summary
    );
    match (kind_of(channel), channel.format.as_str()) {
        (ChannelKind::Email, _) => {
            let subject = format!("Custos: {} finding about {}", finding.severity, plain(&nhi.name));
            let lines = vec![
                ("NHI", format!("{} ({})", nhi.name, nhi.id)),
                ("Owner team", team_name.to_owned()),
                ("Kind", finding.kind.clone()),
                ("Severity", finding.severity.to_string()),
                ("Score", format!("{:.1} bits", finding.score)),
                ("Response", finding.action.to_string()),
                ("Finding", finding.id.clone()),
            ];
            email_payload(subject, &headline, &lines, ("The NHI", link))
        }
        (ChannelKind::Webhook, "slack") => json!({
            "text": format!("{}: {link}", slack_escape(&headline)),
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{}*", truncate(&slack_escape(&headline), 2900))}},
                {"type": "actions", "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Open"}, "url": link}
                ]},
            ],
        })
        .to_string(),
        (ChannelKind::Webhook, _) => json!({
            "type": "finding.opened",
            "id": delivery_id,
            "finding": {
                "id": finding.id,
                "kind": finding.kind,
                "severity": finding.severity,
                "score": finding.score,
                "summary": finding.summary,
                "action": finding.action,
                "evidence": finding.evidence,
                "first_seen": finding.first_seen,
            },
            "nhi": {"id": nhi.id, "name": nhi.name, "team": team_name},
            "link": link,
        })
        .to_string(),
    }
}

/// The notifications that tell an NHI's owner team it was decommissioned, one per enabled
/// channel that hears about the team, rendered for each channel's kind and format.
pub(crate) async fn announce_decommission(
    state: &AppState,
    workflow: &custos_core::lifecycle::Decommission,
    nhi: &custos_core::Nhi,
) -> Result<Vec<NotificationDelivery>, StoreError> {
    let channels = channels_hearing(state, &[nhi.owner.team_id.as_str()]).await?;
    if channels.is_empty() {
        return Ok(Vec::new());
    }
    let team_name = state
        .store
        .get_team(&nhi.owner.team_id)
        .await?
        .map(|t| t.name)
        .unwrap_or_default();
    let link = format!("{}/v1/decommissions/{}", state.issuer, workflow.id);
    let teardown = &workflow.teardown;
    let headline = format!(
        "{} was decommissioned ({}): {} credentials revoked, its trail archived",
        nhi.name,
        workflow.reason,
        teardown.revoked_credentials.len()
    );
    Ok(channels
        .iter()
        .map(|channel| {
            let id = new_id();
            let payload = match (kind_of(channel), channel.format.as_str()) {
                (ChannelKind::Email, _) => {
                    let subject = format!("Custos: {} was decommissioned", plain(&nhi.name));
                    let lines = vec![
                        ("NHI", format!("{} ({})", nhi.name, nhi.id)),
                        ("Owner team", team_name.clone()),
                        ("Trigger", workflow.trigger.to_string()),
                        ("Requested by", workflow.requested_by.clone()),
                        ("Reason", workflow.reason.clone()),
                        (
                            "Credentials revoked",
                            teardown.revoked_credentials.len().to_string(),
                        ),
                        (
                            "Archived trail",
                            teardown
                                .archive
                                .as_ref()
                                .map(|a| {
                                    let files: Vec<&str> =
                                        a.files.iter().map(|f| f.file.as_str()).collect();
                                    format!("{} events in {}", a.events, files.join(", "))
                                })
                                .unwrap_or_default(),
                        ),
                    ];
                    email_payload(subject, &headline, &lines, ("The workflow", &link))
                }
                (ChannelKind::Webhook, "slack") => json!({
                    "text": format!("{}: {link}", slack_escape(&headline)),
                })
                .to_string(),
                (ChannelKind::Webhook, _) => json!({
                    "type": "nhi.decommissioned",
                    "id": id,
                    "decommission": {
                        "id": workflow.id,
                        "trigger": workflow.trigger,
                        "requested_by": workflow.requested_by,
                        "reason": workflow.reason,
                        "started_at": workflow.started_at,
                        "teardown": teardown,
                    },
                    "nhi": {"id": nhi.id, "name": nhi.name, "team": team_name},
                    "link": link,
                })
                .to_string(),
            };
            queued(
                state,
                channel,
                format!("decommission:{}", workflow.id),
                payload,
                id,
            )
        })
        .collect())
}

/// The `typ` of the JWS that signs a task callback.
pub const CALLBACK_TYP: &str = "custos-callback+jws";

/// Checks the `callback_url` of a new task: the channels' rules, and plain `http` only to a
/// host `notify_allowed_hosts` names.
pub(crate) fn callback_url(
    settings: &Settings,
    text: &str,
    errors: &mut custos_core::validate::ValidationErrors,
) -> Option<String> {
    target_url(
        settings,
        "callback_url",
        text,
        PlainHttp::OnlyToListedHosts,
        errors,
    )
    .map(String::from)
}

/// The callback that tells the agent its task's approval request was decided, if it asked for
/// one: the task as decided, never its credential (the agent collects that itself).
pub(crate) fn task_decided(
    state: &AppState,
    task: &custos_core::issuance::Task,
    approval: &Approval,
) -> Option<NotificationDelivery> {
    let url = task.callback_url.clone()?;
    let now = state.now();
    let body = json!({
        "type": "task.decided",
        "task_id": task.id,
        "state": task.state.as_str(),
        "decision": approval.state.as_str(),
        "approval_id": approval.id,
        "decided_at": approval.decided_at.unwrap_or(now),
    });
    Some(NotificationDelivery {
        id: new_id(),
        channel_id: None,
        callback_url: Some(url),
        subject: format!("task:{}", task.id),
        payload: body.to_string(),
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_at: now,
        last_attempt_at: None,
        last_error: None,
        created_at: now,
        delivered_at: None,
    })
}

// ---- rendering ----

/// Text from requesters (a purpose) with anything that could break a line or a layout made a
/// space: it is only ever put in bodies, but never trusted there either.
fn plain(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in plain(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Slack's mrkdwn control characters, escaped as Slack asks, so no text of a requester can
/// mention `@channel` or make a link.
fn slack_escape(text: &str) -> String {
    plain(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max - 1).collect();
        cut.push('…');
        cut
    }
}

fn render_approval(
    channel: &NotificationChannel,
    delivery_id: &str,
    c: &ApprovalContext<'_>,
) -> String {
    let a = c.approval;
    let scope = a.requested_scope.to_strings();
    match (kind_of(channel), channel.format.as_str()) {
        (ChannelKind::Email, _) => {
            let subject = format!("Custos: approval requested for {}", plain(&c.nhi_name));
            let lines = [
                ("NHI", format!("{} ({})", c.nhi_name, a.nhi_id)),
                ("Owner team", c.team_name.clone()),
                ("Requested by", a.requested_by.clone()),
                ("Purpose", a.purpose.clone()),
                ("Beyond the ceiling", a.excess.join(", ")),
                ("Requested scope", scope.join(", ")),
                ("Requested at", a.created_at.to_rfc3339()),
            ];
            email_payload(
                subject,
                "An approval request is waiting for a reviewer.",
                &lines,
                ("Review it", &c.link),
            )
        }
        (ChannelKind::Webhook, "slack") => {
            let headline = format!(
                "Approval requested for {} ({})",
                slack_escape(&c.nhi_name),
                slack_escape(&c.team_name)
            );
            let excess = a
                .excess
                .iter()
                .map(|g| format!("`{}`", slack_escape(g)))
                .collect::<Vec<_>>()
                .join(" ");
            json!({
                "text": format!("{headline}: {}", c.link),
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{headline}*")}},
                    {"type": "section", "fields": [
                        {"type": "mrkdwn", "text": format!("*Requested by*\n{}", slack_escape(&a.requested_by))},
                        {"type": "mrkdwn", "text": format!("*Beyond the ceiling*\n{}", truncate(&excess, 1900))},
                    ]},
                    {"type": "section", "text": {"type": "mrkdwn",
                        "text": format!("*Purpose*\n{}", truncate(&slack_escape(&a.purpose), 2900))}},
                    {"type": "actions", "elements": [
                        {"type": "button", "text": {"type": "plain_text", "text": "Review"}, "url": c.link}
                    ]},
                ],
            })
            .to_string()
        }
        (ChannelKind::Webhook, _) => json!({
            "type": "approval.requested",
            "id": delivery_id,
            "approval": {
                "id": a.id,
                "nhi_id": a.nhi_id,
                "requested_by": a.requested_by,
                "purpose": a.purpose,
                "excess": a.excess,
                "requested_scope": scope,
                "created_at": a.created_at,
            },
            "nhi": {"id": a.nhi_id, "name": c.nhi_name, "team": c.team_name},
            "link": c.link,
        })
        .to_string(),
    }
}

/// Who did what, and why, as a message says it.
struct Outcome {
    who: String,
    decision: &'static str,
    reason: String,
    /// One line for a person: "approved by operator:…", "expired unanswered", ….
    summary: String,
}

fn outcome(c: &ApprovalContext<'_>, what: Happened<'_>) -> Outcome {
    let a = c.approval;
    match what {
        Happened::Voted {
            by,
            reason,
            remaining,
        } => Outcome {
            who: by.to_owned(),
            decision: "voted",
            reason: reason.to_owned(),
            summary: format!(
                "approved by {by}; {remaining} more approval{} needed",
                if remaining == 1 { " is" } else { "s are" }
            ),
        },
        Happened::Expired => Outcome {
            who: "system".to_owned(),
            decision: "expired",
            reason: a
                .reason
                .clone()
                .unwrap_or_else(|| "expired unanswered".into()),
            summary: "expired unanswered, and so denied".to_owned(),
        },
        Happened::Escalated { by, why, .. } => Outcome {
            who: by.to_owned(),
            decision: "escalated",
            reason: why.to_owned(),
            summary: format!("escalated to the team {}", c.to_team_name),
        },
        Happened::Requested | Happened::Decided => {
            let who = a.decided_by.clone().unwrap_or_else(|| "system".into());
            let decision = if a.state == custos_core::issuance::ApprovalState::Approved {
                "approved"
            } else {
                "denied"
            };
            Outcome {
                summary: format!("{decision} by {who}"),
                who,
                decision,
                reason: a.reason.clone().unwrap_or_default(),
            }
        }
    }
}

/// A message about what became of a request: decided, counted, expired or escalated.
fn render_update(
    channel: &NotificationChannel,
    delivery_id: &str,
    c: &ApprovalContext<'_>,
    what: Happened<'_>,
) -> String {
    let a = c.approval;
    let o = outcome(c, what);
    match (kind_of(channel), channel.format.as_str()) {
        (ChannelKind::Email, _) => {
            let subject = format!(
                "Custos: approval request for {} {}",
                plain(&c.nhi_name),
                plain(&o.summary)
            );
            let mut lines = vec![
                ("NHI", format!("{} ({})", c.nhi_name, a.nhi_id)),
                ("Owner team", c.team_name.clone()),
                ("Requested by", a.requested_by.clone()),
                ("Purpose", a.purpose.clone()),
                ("Beyond the ceiling", a.excess.join(", ")),
                ("Decision", o.decision.to_owned()),
                ("By", o.who.clone()),
                ("Reason", o.reason.clone()),
            ];
            if let Some(scope) = &a.granted_scope {
                lines.push(("Granted scope", scope.to_strings().join(", ")));
            }
            let headline = format!("The approval request was {}.", o.summary);
            email_payload(subject, &headline, &lines, ("The request", &c.link))
        }
        (ChannelKind::Webhook, "slack") => {
            let headline = format!(
                "Approval request for {} ({}) {}",
                slack_escape(&c.nhi_name),
                slack_escape(&c.team_name),
                slack_escape(&o.summary)
            );
            json!({
                "text": format!("{headline}: {}", c.link),
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{headline}*")}},
                    {"type": "section", "text": {"type": "mrkdwn",
                        "text": format!("*Reason*\n{}", truncate(&slack_escape(&o.reason), 2900))}},
                    {"type": "actions", "elements": [
                        {"type": "button", "text": {"type": "plain_text", "text": "Open"}, "url": c.link}
                    ]},
                ],
            })
            .to_string()
        }
        (ChannelKind::Webhook, _) => {
            let mut body = json!({
                "type": what.kind(),
                "id": delivery_id,
                "who": o.who,
                "decision": o.decision,
                "reason": o.reason,
                "approval": {
                    "id": a.id,
                    "nhi_id": a.nhi_id,
                    "task_id": a.task_id,
                    "state": a.state.as_str(),
                    "requested_by": a.requested_by,
                    "excess": a.excess,
                    "required_approvals": a.required_approvals,
                    "decided_at": a.decided_at,
                    "decided_by": a.decided_by,
                    "granted_scope": a.granted_scope.as_ref().map(|s| s.to_strings()),
                    "escalated_to": a.escalated_to,
                    "escalated_at": a.escalated_at,
                },
                "nhi": {"id": a.nhi_id, "name": c.nhi_name, "team": c.team_name},
                "link": c.link,
            });
            match what {
                Happened::Voted { remaining, .. } => body["remaining"] = json!(remaining),
                Happened::Escalated { to_team, .. } => {
                    body["escalated_to"] = json!({"id": to_team, "name": c.to_team_name});
                }
                _ => {}
            }
            body.to_string()
        }
    }
}

fn render_test(channel: &NotificationChannel, delivery_id: &str, link: &str) -> String {
    let text = format!(
        "A test notification from Custos for the channel {}.",
        plain(&channel.name)
    );
    match (kind_of(channel), channel.format.as_str()) {
        (ChannelKind::Email, _) => email_payload(
            "Custos: test notification".into(),
            &text,
            &[],
            ("The review inbox", link),
        ),
        (ChannelKind::Webhook, "slack") => json!({
            "text": format!("{}: {link}", slack_escape(&text)),
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": slack_escape(&text)}},
                {"type": "actions", "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Open the inbox"}, "url": link}
                ]},
            ],
        })
        .to_string(),
        (ChannelKind::Webhook, _) => json!({
            "type": "notification.test",
            "id": delivery_id,
            "channel": {"id": channel.id, "name": channel.name},
            "text": text,
            "link": link,
        })
        .to_string(),
    }
}

/// An email as text and HTML alike: a headline, labelled lines, and a link to the request.
/// Every value is made plain for the text and escaped for the HTML.
fn email_payload(
    subject: String,
    headline: &str,
    lines: &[(&str, String)],
    (link_label, link): (&str, &str),
) -> String {
    let mut text = format!("{}\n\n", plain(headline));
    let mut html = format!("<p>{}</p>\n", html_escape(headline));
    if !lines.is_empty() {
        html.push_str("<table>\n");
        for (label, value) in lines {
            text.push_str(&format!("{label}: {}\n", plain(value)));
            html.push_str(&format!(
                "<tr><th align=\"left\">{label}</th><td>{}</td></tr>\n",
                html_escape(value)
            ));
        }
        html.push_str("</table>\n");
        text.push('\n');
    }
    text.push_str(&format!("{link_label}: {link}\n"));
    html.push_str(&format!(
        "<p><a href=\"{0}\">{link_label}</a>: {0}</p>\n",
        html_escape(link)
    ));
    serde_json::to_string(&EmailPayload {
        subject,
        text,
        html: format!("<!DOCTYPE html>\n<html><body>\n{html}</body></html>\n"),
    })
    .unwrap_or_default()
}

// ---- delivery ----

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    format!(
        "t={unix_seconds},v1={}",
        signature_mac(secret, unix_seconds, body)
    )
}

/// The `v1` of a signature: hex HMAC-SHA256(secret, "<t>.<body>"). Deployment hooks' calls
/// to us are checked against it, so both directions sign alike.
pub fn signature_mac(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("hmac accepts any key length");
    mac.update(format!("{unix_seconds}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn after(at: Timestamp, wait: Duration) -> Timestamp {
    let millis = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_unix_millis(at.unix_millis().saturating_add(millis)).unwrap_or(at)
}

/// The background worker: claims due deliveries every [`POLL_INTERVAL`] and attempts up to
/// [`MAX_IN_FLIGHT`] at once. Aborting it aborts the attempts in flight; their leases run out
/// and they are attempted again.
pub async fn run(state: AppState) {
    let http = match reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("custos/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "cannot build the notification client; no notification will be sent");
            return;
        }
    };
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        while in_flight.try_join_next().is_some() {}
        let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
        if room > 0 {
            let now = state.now();
            match state
                .store
                .claim_notifications(now, after(now, LEASE), room as u32)
                .await
            {
                Ok(claimed) => {
                    for delivery in claimed {
                        in_flight.spawn(attempt(state.clone(), http.clone(), delivery));
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot claim notifications; retrying"),
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// One attempt at a claimed delivery, and its outcome recorded.
async fn attempt(state: AppState, http: reqwest::Client, delivery: NotificationDelivery) {
    // Where it goes, and whether retrying could ever help.
    let (kind, result, hopeless) = match (&delivery.channel_id, &delivery.callback_url) {
        (None, Some(url)) => (
            "callback".to_owned(),
            send_callback(&state, &http, url, &delivery).await,
            false,
        ),
        (None, None) => (
            "unknown".to_owned(),
            Err("the delivery names neither a channel nor a callback".to_owned()),
            true,
        ),
        (Some(channel_id), _) => {
            let channel = match state.store.get_notification_channel(channel_id).await {
                Ok(channel) => channel,
                Err(error) => {
                    // The lease runs out and it is attempted again.
                    tracing::warn!(%error, delivery = %delivery.id, "cannot read a notification's channel");
                    return;
                }
            };
            match &channel {
                // Disabling gave up its pending deliveries; nothing is left to record.
                Some(channel) if channel.disabled_at.is_some() => return,
                Some(channel) => (
                    channel.kind.clone(),
                    send(&state, &http, channel, &delivery).await,
                    false,
                ),
                None => (
                    "unknown".to_owned(),
                    Err("the channel does not exist".to_owned()),
                    true,
                ),
            }
        }
    };
    let now = state.now();
    let error = result.err().map(|e| truncate(&e, MAX_ERROR_CHARS));
    let event;
    let outcome = match &error {
        None => DeliveryOutcome::Delivered { at: now },
        Some(error) if delivery.attempts >= MAX_ATTEMPTS || hopeless => {
            let mut failed = state
                .event(
                    EventKind::NotificationFailed,
                    Actor::System,
                    format!("notification_delivery:{}", delivery.id),
                )
                .with("about", &delivery.subject)
                .with("attempts", delivery.attempts.to_string())
                .with("error", error.as_str());
            if let Some(channel) = &delivery.channel_id {
                failed = failed.with("channel", channel);
            }
            if let Some(url) = delivery
                .callback_url
                .as_deref()
                .and_then(|u| reqwest::Url::parse(u).ok())
            {
                // Its origin only: the rest of an agent's URL may hold a credential.
                failed = failed.with("callback", shown_url(&url));
            }
            event = failed;
            DeliveryOutcome::GiveUp {
                error,
                event: &event,
            }
        }
        Some(error) => DeliveryOutcome::Retry {
            error,
            next_attempt_at: after(now, state.notify.backoff(delivery.attempts)),
        },
    };
    let label = match outcome {
        DeliveryOutcome::Delivered { .. } => "delivered",
        DeliveryOutcome::Retry { .. } => "retry",
        DeliveryOutcome::GiveUp { .. } => "failed",
    };
    crate::metrics::notification_attempt(&kind, label);
    match &error {
        Some(error) => tracing::warn!(
            delivery = %delivery.id,
            channel = delivery.channel_id.as_deref().unwrap_or("-"),
            attempt = delivery.attempts,
            outcome = label,
            %error,
            "a notification attempt failed"
        ),
        None => tracing::debug!(delivery = %delivery.id, "notification delivered"),
    }
    if let Err(error) = state
        .store
        .finish_notification(&delivery.id, delivery.attempts, &outcome)
        .await
    {
        // The lease runs out and it is attempted again: at least once, maybe twice.
        tracing::error!(%error, delivery = %delivery.id, "cannot record a notification attempt");
    }
}

async fn send(
    state: &AppState,
    http: &reqwest::Client,
    channel: &NotificationChannel,
    delivery: &NotificationDelivery,
) -> Result<(), String> {
    let secrets = secrets_of(state, channel)?;
    match kind_of(channel) {
        ChannelKind::Webhook => send_webhook(state, http, &secrets, delivery).await,
        ChannelKind::Email => send_email(state, channel, &secrets, delivery).await,
    }
}

async fn send_webhook(
    state: &AppState,
    http: &reqwest::Client,
    secrets: &ChannelSecrets,
    delivery: &NotificationDelivery,
) -> Result<(), String> {
    let (Some(url), Some(secret)) = (&secrets.url, &secrets.hmac_secret) else {
        return Err("the channel's sealed settings are incomplete".into());
    };
    let url = reqwest::Url::parse(url).map_err(|_| "the channel's URL is unreadable".to_owned())?;
    let host = url.host_str().unwrap_or("");
    if !state.notify.allows(host) {
        return Err(format!("the host {host:?} is not in notify_allowed_hosts"));
    }
    let body = delivery.payload.as_bytes().to_vec();
    let signed = signature(secret, state.now().unix_millis().div_euclid(1000), &body);
    post_signed(http, url, delivery, ("custos-signature", signed), body).await
}

/// One attempt at a delivery: the JSON body with its delivery id and signature header; any
/// answer but a 2xx is a failure to retry.
async fn post_signed(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    delivery: &NotificationDelivery,
    (signature_header, signature): (&'static str, String),
    body: Vec<u8>,
) -> Result<(), String> {
    let response = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("custos-delivery", &delivery.id)
        .header(signature_header, signature)
        .body(body)
        .send()
        .await
        .map_err(|e| describe_http_error(&e))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered HTTP {status}"))
    }
}

/// Posts a task's callback, signed with the server's current token-signing key: the JWKS
/// publishes it, so the agent verifies the body without a secret shared with Custos.
async fn send_callback(
    state: &AppState,
    http: &reqwest::Client,
    url: &str,
    delivery: &NotificationDelivery,
) -> Result<(), String> {
    // The allow-list may have changed since the task was filed: checked again, as for channels.
    let mut refused = custos_core::validate::ValidationErrors::default();
    let url = target_url(
        &state.notify,
        "callback_url",
        url,
        PlainHttp::OnlyToListedHosts,
        &mut refused,
    )
    .ok_or_else(|| format!("the callback URL is refused: {refused}"))?;
    let body = delivery.payload.as_bytes().to_vec();
    let signature = custos_core::jose::sign_detached(&state.keyring.active(), CALLBACK_TYP, &body);
    post_signed(
        http,
        url,
        delivery,
        ("custos-callback-signature", signature),
        body,
    )
    .await
}

/// What went wrong, without the URL (which may hold a credential): reqwest names it in its
/// own message, so only the kind and the root cause are kept.
fn describe_http_error(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("timed out after {} s", SEND_TIMEOUT.as_secs());
    }
    let mut text = if error.is_connect() {
        "could not connect".to_owned()
    } else if error.is_redirect() {
        "redirects are not followed".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    let mut root = None;
    while let Some(cause) = source {
        root = Some(cause.to_string());
        source = cause.source();
    }
    if let Some(root) = root {
        text.push_str(": ");
        text.push_str(&root);
    }
    text
}

/// The email a delivery sends: the channel's sender and recipients, the payload's subject and
/// bodies. Only the subject, which we write, goes into a header; a requester's text is only
/// ever in the bodies.
fn email_message(
    settings: &EmailView,
    payload: &EmailPayload,
    delivery_id: &str,
) -> Result<Message, String> {
    let from: Mailbox = settings
        .from
        .parse()
        .map_err(|e| format!("the sender is invalid: {e}"))?;
    let mut builder = Message::builder()
        .from(from)
        .subject(plain(&payload.subject))
        .message_id(Some(format!("<{delivery_id}@custos.notifications>")));
    for to in &settings.to {
        let to: Mailbox = to
            .parse()
            .map_err(|e| format!("a recipient is invalid: {e}"))?;
        builder = builder.to(to);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            payload.text.clone(),
            payload.html.clone(),
        ))
        .map_err(|e| format!("the message cannot be built: {e}"))
}

async fn send_email(
    state: &AppState,
    channel: &NotificationChannel,
    secrets: &ChannelSecrets,
    delivery: &NotificationDelivery,
) -> Result<(), String> {
    let settings: EmailView = serde_json::from_str(&channel.target)
        .map_err(|_| "the channel's SMTP settings are unreadable".to_owned())?;
    if !state.notify.allows(&settings.smtp_host) {
        return Err(format!(
            "the host {:?} is not in notify_allowed_hosts",
            settings.smtp_host
        ));
    }
    let payload: EmailPayload = serde_json::from_str(&delivery.payload)
        .map_err(|_| "the queued message is unreadable".to_owned())?;
    let message = email_message(&settings, &payload, &delivery.id)?;
    let host = settings.smtp_host.as_str();
    let builder = match settings.tls {
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
            .map_err(|e| format!("cannot set up STARTTLS: {e}"))?,
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
            .map_err(|e| format!("cannot set up TLS: {e}"))?,
    };
    let mut builder = builder.port(settings.smtp_port).timeout(Some(SEND_TIMEOUT));
    if let (Some(username), Some(password)) = (&settings.username, &secrets.password) {
        builder = builder.credentials(Credentials::new(username.clone(), password.clone()));
    }
    let transport = builder.build();
    match tokio::time::timeout(SEND_TIMEOUT, transport.send(message)).await {
        Err(_) => Err(format!("timed out after {} s", SEND_TIMEOUT.as_secs())),
        Ok(Err(error)) => Err(format!("SMTP: {error}")),
        Ok(Ok(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_stripe_style_and_known() {
        // HMAC-SHA256("secret", "1700000000.{}") computed independently (Python's hmac).
        assert_eq!(
            signature("secret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let settings = Settings::default();
        let waits: Vec<u64> = (1..=9).map(|n| settings.backoff(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300]);
    }

    #[test]
    fn only_the_origin_of_a_webhook_url_is_shown() {
        let url = reqwest::Url::parse("https://hooks.slack.com/services/T0/B0/secret?x=1").unwrap();
        assert_eq!(shown_url(&url), "https://hooks.slack.com/…");
        let url = reqwest::Url::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(shown_url(&url), "http://127.0.0.1:8080/");
    }

    #[test]
    fn email_keeps_untrusted_text_out_of_headers() {
        let settings = EmailView {
            smtp_host: "127.0.0.1".into(),
            smtp_port: 25,
            tls: SmtpTls::None,
            username: None,
            from: "Custos <custos@example.com>".into(),
            to: vec!["reviewers@example.com".into()],
        };
        let payload = EmailPayload {
            subject: "hello\r\nBcc: evil@example.com".into(),
            text: "purpose: x\r\nBcc: evil@example.com\r\n.\r\nQUIT".into(),
            html: "<p>x</p>".into(),
        };
        let message = email_message(&settings, &payload, "d1").unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        let (headers, _) = raw.split_once("\r\n\r\n").unwrap();
        assert!(
            !headers.to_ascii_lowercase().contains("\r\nbcc:"),
            "{headers}"
        );
        let recipients: Vec<String> = message
            .envelope()
            .to()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(recipients, ["reviewers@example.com"]);
    }

    fn request(state: custos_core::issuance::ApprovalState) -> Approval {
        use custos_core::issuance::{ApprovalKind, Risk, RiskLevel};
        let at = Timestamp::from_unix_millis(1_800_000_000_000).unwrap();
        Approval {
            id: "a1".into(),
            kind: ApprovalKind::ScopeEscalation,
            nhi_id: "n1".into(),
            task_id: Some("t1".into()),
            requested_by: "nhi:n1".into(),
            purpose: "clean <b>up</b>".into(),
            requested_scope: custos_core::Scope::parse(&["crm:delete:x"]).unwrap(),
            excess: vec!["crm:delete:x".into()],
            requested_ttl_seconds: 600,
            policies: Vec::new(),
            risk: Risk {
                level: RiskLevel::Medium,
                factors: Vec::new(),
            },
            required_approvals: 1,
            state,
            created_at: at,
            expires_at: at.plus_seconds(3600),
            decided_at: Some(at),
            decided_by: Some("operator:o1".into()),
            reason: Some("use the <merge> tool".into()),
            granted_scope: None,
            granted_ttl_seconds: None,
            escalated_to: None,
            escalated_at: None,
        }
    }

    fn channel(kind: &str, format: &str) -> NotificationChannel {
        NotificationChannel {
            id: "c1".into(),
            name: "c".into(),
            kind: kind.into(),
            team_id: None,
            target: String::new(),
            format: format.into(),
            sealed_secret: None,
            created_at: Timestamp::from_unix_millis(0).unwrap(),
            disabled_at: None,
        }
    }

    #[test]
    fn outcomes_say_who_decided_what_and_why_in_each_format() {
        use custos_core::issuance::ApprovalState;
        let denied = request(ApprovalState::Denied);
        let context = ApprovalContext {
            approval: &denied,
            nhi_name: "crm-agent".into(),
            team_name: "owners".into(),
            link: "https://custos.example/ui/approvals/a1".into(),
            to_team_name: "backup".into(),
        };
        let mail: EmailPayload = serde_json::from_str(&render_update(
            &channel("email", "text"),
            "d1",
            &context,
            Happened::Decided,
        ))
        .unwrap();
        assert_eq!(
            mail.subject,
            "Custos: approval request for crm-agent denied by operator:o1"
        );
        assert!(
            mail.text.contains("Reason: use the <merge> tool"),
            "{}",
            mail.text
        );
        assert!(
            mail.html.contains("use the &lt;merge&gt; tool"),
            "{}",
            mail.html
        );
        assert!(mail.text.contains(&context.link));

        let escalated = Happened::Escalated {
            by: "system",
            to_team: "t2",
            why: "unanswered by the owner team for 3600 s",
        };
        let slack: serde_json::Value = serde_json::from_str(&render_update(
            &channel("webhook", "slack"),
            "d2",
            &context,
            escalated,
        ))
        .unwrap();
        assert_eq!(
            slack["text"],
            "Approval request for crm-agent (owners) escalated to the team backup: https://custos.example/ui/approvals/a1"
        );
        let json: serde_json::Value = serde_json::from_str(&render_update(
            &channel("webhook", "json"),
            "d3",
            &context,
            Happened::Expired,
        ))
        .unwrap();
        assert_eq!(
            (
                json["type"].as_str(),
                json["decision"].as_str(),
                json["who"].as_str()
            ),
            (Some("approval.expired"), Some("expired"), Some("system"))
        );
        assert_eq!(json["id"], "d3");
    }

    #[test]
    fn slack_text_cannot_mention_or_link() {
        assert_eq!(
            slack_escape("<!channel> & <https://evil|click>"),
            "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;"
        );
    }
}

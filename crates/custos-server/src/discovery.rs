//! Discovery imports: a file of inventory or logs in, registrations, observed identities,
//! shadow-NHI findings, last-used times and baseline observations out.
//!
//! The body streams through: a blocking thread runs the core's reader over it (gunzipping
//! when it starts with the gzip magic) and hands records over in batches through a bounded
//! channel, so memory stays bounded by a batch and the distinct identities seen, whatever the
//! file's size, and a slow store slows the reader instead of piling records up.
//!
//! An observed identity is matched with a registered NHI by the NHI's `external_ids` (the
//! platform's name as key, the principal as value: `{"aws": "arn:aws:iam::…:user/ci"}`), which
//! is also what adopting a shadow NHI writes. Matched identities' activity sets the NHI's
//! last-used time and feeds its baseline; unmatched non-human ones are shadow NHIs. People and
//! the platform's own services are kept as observed identities but never reported as NHIs.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

use axum::body::{Body, Bytes};
use custos_core::baseline::{Observation, ObservationKind};
use custos_core::discovery::logical::{self, Candidate, LogicalAgent, Member, Suggestion};
use custos_core::discovery::observed::{ObservedFilter, ObservedIdentity};
use custos_core::discovery::{
    Format, IdentityClass, InventoryRow, Malformed, Position, ReadError, Record, Sighting, Sink,
    formats,
};
use custos_core::finding::{
    Finding, FindingFilter, FindingState, Noticed, ResponseAction, Severity,
};
use custos_core::issuance::ApprovalKind;
use custos_core::{EventKind, Nhi, Owner, Page, Role, Timestamp};
use custos_store::{FindingOpened, StoreError, Use};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::api::CreateNhi;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::service::{AppState, new_id, page_of};

/// Records handed from the reader to the writer at a time.
const BATCH: usize = 512;
/// Batches in flight between them: the reader waits when the writer is this far behind.
const BATCHES_IN_FLIGHT: usize = 4;
/// Inventory rows registered per store transaction.
const REGISTER_BATCH: usize = 1_000;
/// Malformed records described one by one in the report; the rest are only counted.
pub const MALFORMED_SHOWN: usize = 100;
/// Baseline findings named one by one in the report.
const FINDINGS_SHOWN: usize = 100;
/// The finding kind of a shadow NHI.
pub const SHADOW_NHI: &str = "shadow_nhi";

/// What an import did.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ImportReport {
    pub format: String,
    /// The name the file was imported under (`source` query parameter, or the format).
    pub source: String,
    /// Bytes received (compressed, if the upload was gzip).
    pub bytes: u64,
    /// Records read, good and malformed.
    pub records: u64,
    pub malformed: u64,
    /// The first malformed records, with their position and why.
    #[schema(value_type = Vec<Object>)]
    pub malformed_records: Vec<Malformed>,
    /// Whether the reader reached the end of the input; if not, `stopped` says where and why,
    /// and what came before was imported.
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Inventory rows registered as new NHIs.
    pub registered: u64,
    /// Inventory rows naming an NHI that exists already (same platform and name): left as
    /// they are, so an inventory can be imported again.
    pub existing: u64,
    /// Distinct identities seen (listings and logs), by class.
    pub identities: u64,
    pub humans: u64,
    pub non_human: u64,
    pub platform_services: u64,
    /// Non-human identities matched with a registered NHI.
    pub matched: u64,
    /// Shadow NHIs: unmatched non-human identities. `new_shadow` of them opened a finding;
    /// the others folded into one still open, or were dismissed before.
    pub shadow: u64,
    pub new_shadow: u64,
    /// Shadow NHIs whose finding was dismissed before: no finding is opened again.
    pub dismissed_shadow: u64,
    /// Log records of registered NHIs fed to their baselines.
    pub observed: u64,
    /// Findings the baselines raised on those records.
    pub findings: Vec<String>,
}

/// One batch from the reader: its records and the malformed ones, in file order.
enum Batch {
    Records(Vec<(Position, Record)>),
    Malformed(Malformed),
}

/// The blocking side's sink: batches records and blocks when the writer is behind.
struct ChannelSink {
    pending: Vec<(Position, Record)>,
    out: mpsc::Sender<Batch>,
    /// The writer went away (the request failed); reading on is pointless.
    closed: bool,
}

impl ChannelSink {
    fn flush(&mut self) {
        if self.pending.is_empty() || self.closed {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        self.closed = self.out.blocking_send(Batch::Records(batch)).is_err();
    }
}

impl Sink for ChannelSink {
    fn record(&mut self, position: Position, record: Record) {
        self.pending.push((position, record));
        if self.pending.len() >= BATCH {
            self.flush();
        }
    }

    fn malformed(&mut self, malformed: Malformed) {
        self.flush();
        if !self.closed {
            self.closed = self.out.blocking_send(Batch::Malformed(malformed)).is_err();
        }
    }
}

/// The request body as a blocking `Read`: chunks arrive from the async side through a
/// channel. An error of the body (the client went away, the size limit) is a read error.
struct BodyReader {
    chunks: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    current: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Reads `input` as `format`, gunzipping it first if it starts with the gzip magic bytes.
fn read_maybe_gzip(format: Format, input: impl Read, sink: &mut dyn Sink) -> Result<(), ReadError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, input);
    let gzip = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    if gzip {
        let decoder = flate2::read::MultiGzDecoder::new(buffered);
        formats::read(format, BufReader::with_capacity(256 * 1024, decoder), sink)
    } else {
        formats::read(format, buffered, sink)
    }
}

/// `POST /v1/discovery/imports` (admin): streams `body` through the reader of `format`.
pub async fn import(
    state: &AppState,
    who: &Principal,
    format: &str,
    source: Option<String>,
    body: Body,
) -> ApiResult<ImportReport> {
    who.require(&[Role::Admin])?;
    let format = Format::parse(format).ok_or_else(|| {
        let known: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
        ApiError::unprocessable(
            "unknown_format",
            format!("format must be one of {}", known.join(", ")),
        )
    })?;
    let source = match source {
        Some(source)
            if source.trim().is_empty()
                || source.len() > 256
                || source.chars().any(char::is_control) =>
        {
            return Err(ApiError::unprocessable(
                "validation_failed",
                "source must be 1 to 256 bytes without control characters",
            ));
        }
        Some(source) => source,
        None => format.as_str().to_owned(),
    };
    let max_bytes = state.limits.import_max_bytes;

    // The body, chunk by chunk, into the reader's thread; the byte count enforces the limit.
    let (chunk_tx, chunk_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let (batch_tx, mut batch_rx) = mpsc::channel::<Batch>(BATCHES_IN_FLIGHT);
    let pump = tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    let _ = chunk_tx
                        .send(Err(std::io::Error::other(format!(
                            "the upload failed: {e}"
                        ))))
                        .await;
                    return Err(ApiError::bad_request(
                        "invalid_body",
                        "the upload could not be read",
                    ));
                }
            };
            bytes += chunk.len() as u64;
            if bytes > max_bytes {
                let _ = chunk_tx
                    .send(Err(std::io::Error::other("the upload is too large")))
                    .await;
                return Err(ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("an import must be at most {max_bytes} bytes"),
                ));
            }
            if chunk_tx.send(Ok(chunk)).await.is_err() {
                break;
            }
        }
        Ok(bytes)
    });
    let reader = tokio::task::spawn_blocking(move || {
        let input = BodyReader {
            chunks: chunk_rx,
            current: Bytes::new(),
        };
        let mut sink = ChannelSink {
            pending: Vec::new(),
            out: batch_tx,
            closed: false,
        };
        let result = read_maybe_gzip(format, input, &mut sink);
        sink.flush();
        result
    });

    let mut run = Import::new(state, who, format, source);
    while let Some(batch) = batch_rx.recv().await {
        match batch {
            Batch::Records(records) => run.records(records).await?,
            Batch::Malformed(malformed) => run.malformed(malformed),
        }
    }
    let read = reader
        .await
        .map_err(|e| ApiError::internal(format!("the import reader failed: {e}")))?;
    let bytes = pump
        .await
        .map_err(|e| ApiError::internal(format!("the upload reader failed: {e}")))??;
    run.report.bytes = bytes;
    match read {
        Ok(()) => run.report.complete = true,
        Err(ReadError::Io(e)) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!("the upload could not be read: {e}"),
            ));
        }
        Err(ReadError::Unreadable { position, reason }) => {
            if run.report.records == 0 {
                return Err(ApiError::unprocessable(
                    "unreadable_import",
                    format!(
                        "the file is not {} ({reason}, at record {})",
                        format.as_str(),
                        position.record
                    ),
                ));
            }
            run.report.stopped = Some(ReadError::Unreadable { position, reason }.to_string());
        }
    }
    run.finish().await
}

/// One import in progress.
struct Import<'a> {
    state: &'a AppState,
    who: &'a Principal,
    report: ImportReport,
    /// Inventory rows waiting to be registered.
    rows: Vec<(Position, InventoryRow)>,
    /// Owner teams of inventory rows, by the name or id the rows give.
    teams: HashMap<String, Option<String>>,
    /// Every identity seen, by platform and principal, with the NHI it matched.
    identities: HashMap<(&'static str, String), ObservedIdentity>,
    /// The newest activity of each matched NHI.
    uses: HashMap<String, Timestamp>,
}

impl<'a> Import<'a> {
    fn new(state: &'a AppState, who: &'a Principal, format: Format, source: String) -> Self {
        Import {
            state,
            who,
            report: ImportReport {
                format: format.as_str().to_owned(),
                source,
                ..Default::default()
            },
            rows: Vec::new(),
            teams: HashMap::new(),
            identities: HashMap::new(),
            uses: HashMap::new(),
        }
    }

    /// A record the reader could not read: counted as read, and refused.
    fn malformed(&mut self, malformed: Malformed) {
        self.report.records += 1;
        self.refuse(malformed);
    }

    /// A record read but refused (by the reader, or by the rules applied after it).
    fn refuse(&mut self, malformed: Malformed) {
        self.report.malformed += 1;
        if self.report.malformed_records.len() < MALFORMED_SHOWN {
            self.report.malformed_records.push(malformed);
        }
    }

    async fn records(&mut self, records: Vec<(Position, Record)>) -> ApiResult<()> {
        for (position, record) in records {
            self.report.records += 1;
            match record {
                Record::Inventory(row)
                    if [&row.name, &row.platform, &row.owner.team]
                        .iter()
                        .any(|text| text.contains('\0')) =>
                {
                    self.refuse(Malformed {
                        position,
                        reason: "the row holds a nul character".to_owned(),
                    });
                }
                Record::Inventory(row) => {
                    self.rows.push((position, *row));
                    if self.rows.len() >= REGISTER_BATCH {
                        self.register().await?;
                    }
                }
                Record::Sighting(mut sighting) => {
                    sighting.scrub();
                    self.sighting(*sighting).await?
                }
            }
        }
        Ok(())
    }

    async fn sighting(&mut self, sighting: Sighting) -> ApiResult<()> {
        let now = self.state.now();
        let key = (sighting.platform, sighting.principal.clone());
        if !self.identities.contains_key(&key) {
            let mut identity = ObservedIdentity::from_sighting(&sighting, &self.report.source, now);
            identity.nhi_id = self
                .state
                .store
                .find_nhi_by_external_id(sighting.platform, &sighting.principal)
                .await?
                .map(|nhi| nhi.id);
            self.identities.insert(key.clone(), identity);
        } else if let Some(identity) = self.identities.get_mut(&key) {
            identity.absorb(&sighting);
        }
        let Some(nhi_id) = self.identities.get(&key).and_then(|i| i.nhi_id.clone()) else {
            return Ok(());
        };
        let (Some(activity), Some(at)) = (&sighting.activity, sighting.at) else {
            return Ok(());
        };
        // A log's clock is not ours: a record from the future must not mark the NHI used
        // later than now.
        let used = at.min(now);
        let newest = self.uses.entry(nhi_id.clone()).or_insert(used);
        *newest = (*newest).max(used);
        let observation = Observation {
            at,
            kind: ObservationKind::Action,
            service: &activity.service,
            operation: &activity.operation,
            resource: &activity.resource,
            outcome: activity.outcome,
            source: activity.source,
            user_agent: activity.user_agent.as_deref(),
            environment: None,
            on_behalf_of: activity.on_behalf_of.as_deref(),
        };
        self.report.observed += 1;
        if let Some(finding) =
            crate::behaviour::observe_elsewhere(self.state, &nhi_id, &observation).await?
            && self.report.findings.len() < FINDINGS_SHOWN
            && !self.report.findings.contains(&finding)
        {
            self.report.findings.push(finding);
        }
        Ok(())
    }

    /// Registers the waiting inventory rows, by the API's rules: a row the API would refuse
    /// is reported malformed with the API's reason, one naming an existing NHI is counted and
    /// left alone, the rest are written in one transaction.
    async fn register(&mut self) -> ApiResult<()> {
        let rows = std::mem::take(&mut self.rows);
        let names: Vec<(String, String)> = rows
            .iter()
            .map(|(_, row)| (row.platform.clone(), row.name.clone()))
            .collect();
        let existing = self.state.store.registered_names(&names).await?;
        let mut batch = Vec::with_capacity(rows.len());
        let mut seen = std::collections::HashSet::new();
        for (position, row) in rows {
            let pair = (row.platform.clone(), row.name.clone());
            if existing.contains(&pair) || !seen.insert(pair) {
                self.report.existing += 1;
                continue;
            }
            match self.prepare(row).await {
                Ok(prepared) => batch.push(prepared),
                Err(reason) => self.refuse(Malformed { position, reason }),
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        match self.state.store.create_nhis(&batch).await {
            Ok(()) => self.report.registered += batch.len() as u64,
            // Someone registered one of these names meanwhile: one by one, so only that one
            // counts as existing.
            Err(StoreError::Conflict) => {
                for one in batch {
                    match self
                        .state
                        .store
                        .create_nhis(std::slice::from_ref(&one))
                        .await
                    {
                        Ok(()) => self.report.registered += 1,
                        Err(StoreError::Conflict) => self.report.existing += 1,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// One inventory row as a registration, or why the API would refuse it.
    async fn prepare(
        &mut self,
        row: InventoryRow,
    ) -> Result<(Nhi, custos_core::DomainEvent), String> {
        let input: CreateNhi = serde_json::from_value(registration_body(&row))
            .map_err(|e| format!("the row is not a valid nhi: {e}"))?;
        let team = match self.teams.get(&row.owner.team) {
            Some(team) => team.clone(),
            None => {
                let team = self
                    .state
                    .store
                    .get_team(&row.owner.team)
                    .await
                    .map_err(|e| format!("the owner team could not be read: {e}"))?
                    .map(|t| t.id);
                self.teams.insert(row.owner.team.clone(), team.clone());
                team
            }
        };
        let team_id = team
            .ok_or_else(|| format!("owner.team: no team named or with id {:?}", row.owner.team))?;
        let owner = Owner {
            team_id,
            application: input.owner.application.clone(),
            contact: input.owner.contact.clone(),
        };
        crate::service::registration(self.state, self.who.actor(), input, owner)
            .map_err(|e| e.detail)
    }

    /// Registers what is left, writes the identities seen with the import's event, opens the
    /// shadow NHIs' findings and moves last-used times on.
    async fn finish(mut self) -> ApiResult<ImportReport> {
        if !self.rows.is_empty() {
            self.register().await?;
        }
        let identities: Vec<ObservedIdentity> = self.identities.into_values().collect();
        let report = &mut self.report;
        for identity in &identities {
            report.identities += 1;
            match identity.class {
                IdentityClass::Human => report.humans += 1,
                IdentityClass::Platform => report.platform_services += 1,
                IdentityClass::NonHuman if identity.nhi_id.is_some() => {
                    report.non_human += 1;
                    report.matched += 1;
                }
                IdentityClass::NonHuman => {
                    report.non_human += 1;
                    report.shadow += 1;
                }
            }
        }
        let event = self
            .state
            .event(
                EventKind::DiscoveryImported,
                self.who.actor(),
                format!("discovery:{}", report.format),
            )
            .with("format", &report.format)
            .with("source", &report.source)
            .with("records", report.records.to_string())
            .with("malformed", report.malformed.to_string())
            .with("registered", report.registered.to_string())
            .with("identities", report.identities.to_string())
            .with("shadow", report.shadow.to_string());
        let stored = self
            .state
            .store
            .record_observed(&identities, &event)
            .await?;
        for (identity, import) in stored.iter().zip(&identities) {
            if identity.is_shadow() {
                match open_shadow(self.state, identity, import).await? {
                    ShadowOutcome::New => report.new_shadow += 1,
                    ShadowOutcome::Folded => {}
                    ShadowOutcome::Dismissed => report.dismissed_shadow += 1,
                }
            } else if identity.class == IdentityClass::Human && import.class == IdentityClass::Human
            {
                close_shadow_of_person(self.state, identity).await?;
            }
        }
        let uses: Vec<Use> = self
            .uses
            .into_iter()
            .map(|(nhi_id, at)| Use {
                credential_id: String::new(),
                nhi_id,
                at,
            })
            .collect();
        self.state.store.record_uses(&uses).await?;
        Ok(self.report)
    }
}

/// The `POST /v1/nhis` body an inventory row stands for, with empty optional fields left out
/// so that the API's defaults apply to them as they would to a body without them.
fn registration_body(row: &InventoryRow) -> Value {
    let mut body = json!({
        "name": row.name,
        "kind": row.kind,
        "platform": row.platform,
        "owner": {"team": row.owner.team},
        "purpose": row.purpose,
        "scope_ceiling": row.scope_ceiling,
        "tags": row.tags,
        "external_ids": row.external_ids,
    });
    if !row.environment.is_empty() {
        body["environment"] = json!(row.environment);
    }
    if !row.owner.application.is_empty() {
        body["owner"]["application"] = json!(row.owner.application);
    }
    if !row.owner.contact.is_empty() {
        body["owner"]["contact"] = json!(row.owner.contact);
    }
    if let Some(expires_at) = &row.expires_at {
        body["expires_at"] = json!(expires_at);
    }
    body
}

/// Opens (or folds into the open one) the finding of a shadow NHI, unless one was dismissed. The
/// finding's evidence is the identity as stored after this import; each import adds a
/// summary of what it saw to `events`, so folding keeps the first and latest imports.
async fn open_shadow(
    state: &AppState,
    stored: &ObservedIdentity,
    this_import: &ObservedIdentity,
) -> ApiResult<ShadowOutcome> {
    let key = format!("{SHADOW_NHI}:{}:{}", stored.platform, stored.principal);
    let dismissed = state
        .store
        .list_findings(
            &FindingFilter {
                dedupe_key: Some(key.clone()),
                state: Some(FindingState::Dismissed),
                ..Default::default()
            },
            &Page {
                after: None,
                limit: 1,
            },
        )
        .await?;
    if !dismissed.is_empty() {
        // Someone judged this identity and said why; later sightings are in the observed
        // identity, not in a new finding asking the same question again.
        return Ok(ShadowOutcome::Dismissed);
    }
    let now = state.now();
    let evidence = &stored.evidence;
    let noticed = Noticed {
        kind: SHADOW_NHI.to_owned(),
        nhi_id: None,
        dedupe_key: key,
        severity: if evidence.refusals > 0 || stored.events > 1_000 {
            Severity::High
        } else {
            Severity::Medium
        },
        score: stored.events as f64,
        summary: format!(
            "{} on {} is not in the inventory ({}; {} log records)",
            stored.display_name, stored.platform, stored.class_reason, stored.events
        ),
        evidence: json!({
            "platform": stored.platform,
            "principal": stored.principal,
            "display_name": stored.display_name,
            "class_reason": stored.class_reason,
            "first_seen": stored.first_seen,
            "last_seen": stored.last_seen,
            "records": stored.events,
            "sources": evidence.sources,
            "operations": evidence.operations,
            "refusals": evidence.refusals,
            "source_addresses": evidence.source_addresses,
            "user_agents": evidence.user_agents,
            "facts": evidence.facts,
            "events": [{
                "import": this_import.evidence.sources.first(),
                "imported_at": now,
                "first_seen": this_import.first_seen,
                "last_seen": this_import.last_seen,
                "records": this_import.events,
                "operations": this_import.evidence.operations,
            }],
        }),
        action: ResponseAction::Record,
    };
    let mut finding = Finding::opened(new_id(), noticed, now);
    finding.first_seen = stored.first_seen.unwrap_or(now);
    finding.last_seen = stored.last_seen.unwrap_or(now);
    let event = state
        .event(
            EventKind::FindingOpened,
            custos_core::Actor::System,
            format!("finding:{}", finding.id),
        )
        .with("kind", SHADOW_NHI)
        .with("platform", &stored.platform)
        .with("principal", &stored.principal);
    Ok(
        match state.store.open_finding(&finding, &event, &[]).await? {
            FindingOpened::New => ShadowOutcome::New,
            FindingOpened::Folded { .. } => ShadowOutcome::Folded,
        },
    )
}

/// An identity reported as a shadow NHI that later records show to be a person (a console
/// sign-in, say): its finding is dismissed by the system, saying why. A person's own use of
/// access keys is not an NHI of the inventory's.
async fn close_shadow_of_person(state: &AppState, identity: &ObservedIdentity) -> ApiResult<()> {
    let key = format!("{SHADOW_NHI}:{}:{}", identity.platform, identity.principal);
    let open = state
        .store
        .list_findings(
            &FindingFilter {
                dedupe_key: Some(key),
                unresolved_only: true,
                ..Default::default()
            },
            &Page {
                after: None,
                limit: 1,
            },
        )
        .await?;
    for finding in open {
        let reason = format!("the identity is a person ({})", identity.class_reason);
        crate::behaviour::settle_finding(
            state,
            &finding.id,
            FindingState::Dismissed,
            custos_core::Actor::System,
            &reason,
            None,
        )
        .await?;
    }
    Ok(())
}

/// What became of a shadow NHI's finding in an import.
enum ShadowOutcome {
    New,
    Folded,
    /// Its finding was dismissed before; none is opened again.
    Dismissed,
}

// ---- observed identities ----

/// `GET /v1/discovery/identities` (admin, auditor): what imports saw, filtered.
pub async fn list_observed(
    state: &AppState,
    who: &Principal,
    filter: ObservedFilter,
    page: Page,
) -> ApiResult<ObservedList> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let limit = page.limit;
    let found = state
        .store
        .list_observed(
            &filter,
            &Page {
                after: page.after,
                limit: limit + 1,
            },
        )
        .await?;
    let (items, next_cursor) = page_of(found, limit, |i| format!("{}:{}", i.platform, i.principal));
    Ok(ObservedList { items, next_cursor })
}

/// A page of observed identities, in platform and principal order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObservedList {
    /// Each identity: `platform`, `principal`, `display_name`, `class` (`human`,
    /// `non_human`, `platform`), `class_reason`, `nhi_id` (the NHI it matched), `first_seen`,
    /// `last_seen`, `events`, `evidence` (`sources`, `operations`, `refusals`,
    /// `source_addresses`, `user_agents`, `facts`).
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<ObservedIdentity>,
    pub next_cursor: Option<String>,
}

// ---- adopting a shadow NHI ----

/// The tag an adopted NHI carries: the shadow finding it was adopted from.
pub const ADOPTED_FROM_TAG: &str = "custos.discovery.finding";

/// `POST /v1/findings/{id}/adopt` (admin): registers the shadow NHI a finding is about,
/// suspended, under the given owner, and asks the owner team to confirm it in their inbox.
/// The NHI is matched with its platform identity from now on (`external_ids`); approving the
/// review activates it and settles the finding; denying it decommissions the registration.
pub async fn adopt(
    state: &AppState,
    who: &Principal,
    finding_id: &str,
    input: AdoptShadow,
) -> ApiResult<Adopted> {
    who.require(&[Role::Admin])?;
    let finding = state.store.get_finding(finding_id).await?.ok_or_else(|| {
        ApiError::not_found(&format!("finding {finding_id}")).with_code("finding_not_found")
    })?;
    if finding.kind != SHADOW_NHI {
        return Err(ApiError::conflict(
            "not_a_shadow_nhi",
            format!("the finding is {}, not {SHADOW_NHI}", finding.kind),
        ));
    }
    if finding.resolved_at.is_some() {
        return Err(ApiError::conflict(
            "finding_not_open",
            format!("the finding is {}", finding.state),
        ));
    }
    let identity = |field: &str| {
        finding
            .evidence
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::internal(format!("the shadow finding has no {field}")))
    };
    let (platform, principal) = (identity("platform")?, identity("principal")?);
    if let Some(existing) = state
        .store
        .find_nhi_by_external_id(&platform, &principal)
        .await?
    {
        return Err(ApiError::conflict(
            "already_registered",
            format!(
                "nhi {} already names {principal} on {platform}",
                existing.id
            ),
        ));
    }
    let mut body = json!({
        "name": input.name.clone().unwrap_or(identity("display_name")?),
        "kind": input.kind,
        "platform": platform,
        "owner": input.owner,
        "purpose": input.purpose,
        "environment": input.environment,
        "scope_ceiling": input.scope_ceiling,
        "tags": input.tags,
        "external_ids": {platform.clone(): principal.clone()},
    });
    body["tags"][ADOPTED_FROM_TAG] = json!(finding.id);
    let create: CreateNhi = crate::extract::parse_json(body.to_string().as_bytes())?;
    let owner = crate::service::owner(state, create.owner.clone()).await?;
    let (mut nhi, event) = crate::service::registration(state, who.actor(), create, owner)?;
    // Nothing may be issued to it before its owners confirm it is theirs.
    nhi.status = custos_core::NhiStatus::Suspended;
    let event = event
        .with("status", nhi.status.as_str())
        .with("adopted_from", &finding.id);
    state
        .store
        .create_nhis(&[(nhi.clone(), event)])
        .await
        .map_err(|e| match e {
            StoreError::Conflict => crate::service::name_taken(&nhi),
            other => other.into(),
        })?;
    if finding.state == FindingState::Open {
        let reason = format!("adoption requested as nhi {}", nhi.id);
        crate::behaviour::settle_finding(
            state,
            &finding.id,
            FindingState::Acknowledged,
            who.actor(),
            &reason,
            Some(&nhi.id),
        )
        .await?;
    }
    let reasons = vec![
        format!("{principal} was seen on {platform} and is not in the inventory"),
        finding.summary.clone(),
    ];
    let (approval, _) = crate::reviews::open_as(
        state,
        &nhi,
        ApprovalKind::Adoption,
        format!("adopt {} ({platform}) as an nhi of this team", nhi.name),
        &reasons,
        None,
        who.actor(),
    )
    .await?;
    Ok(Adopted {
        nhi: crate::service::view_nhi(state, nhi).await?,
        approval_id: approval.id,
        finding_id: finding.id,
    })
}

/// How a shadow NHI is to be registered: the fields of `POST /v1/nhis` that a log cannot
/// know. The platform and its external id come from the finding; the name defaults to the
/// identity's display name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdoptShadow {
    pub name: Option<String>,
    /// `ai_agent`, `service_account`, `workload`, `api_key`, `automation`, `oauth_app`.
    pub kind: String,
    #[schema(value_type = Object)]
    pub owner: Value,
    pub purpose: String,
    /// `production`, `staging`, …, as `POST /v1/nhis` asks.
    pub environment: String,
    #[serde(default)]
    pub scope_ceiling: Vec<String>,
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

/// A shadow NHI registered for adoption, and the review its owner team answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Adopted {
    pub nhi: crate::api::NhiView,
    pub approval_id: String,
    pub finding_id: String,
}

/// The owner team confirmed an adopted NHI: it becomes active and its shadow finding is
/// settled as accepted by the same decision.
pub async fn adoption_approved(
    state: &AppState,
    nhi: &Nhi,
    decided: &custos_core::issuance::Approval,
    who: &Principal,
) -> ApiResult<()> {
    crate::service::resume_on_decision(
        state,
        &nhi.id,
        who.actor(),
        &format!("adopted by approval {}", decided.id),
        ("approval", &decided.id),
    )
    .await?;
    let Some(finding_id) = nhi.tags.get(ADOPTED_FROM_TAG) else {
        return Ok(());
    };
    let reason = format!("adopted as nhi {} (approval {})", nhi.id, decided.id);
    // A finding someone settled meanwhile stays as they left it.
    crate::behaviour::settle_finding(
        state,
        finding_id,
        FindingState::Accepted,
        who.actor(),
        &reason,
        Some(&nhi.id),
    )
    .await?;
    Ok(())
}

/// The owner team refused an adopted NHI: the registration is decommissioned (it never held
/// a credential). Its finding stays unresolved: the identity still exists on its platform.
pub async fn adoption_denied(
    state: &AppState,
    nhi: &Nhi,
    decided: &custos_core::issuance::Approval,
    who: &Principal,
) -> ApiResult<()> {
    let reason = format!(
        "adoption denied by approval {}: {}",
        decided.id,
        decided.reason.as_deref().unwrap_or("denied")
    );
    crate::lifecycle::start(
        state,
        nhi,
        custos_core::lifecycle::DecommissionTrigger::Review,
        who.actor(),
        None,
        reason,
        None,
    )
    .await?;
    Ok(())
}

// ---- logical agents ----

/// `POST /v1/logical-agents` (admin): links NHIs into one logical agent.
pub async fn create_logical_agent(
    state: &AppState,
    who: &Principal,
    input: CreateLogicalAgent,
) -> ApiResult<LogicalAgent> {
    who.require(&[Role::Admin])?;
    let mut errors = custos_core::validate::ValidationErrors::default();
    custos_core::validate::text(&mut errors, "name", &input.name, 200);
    custos_core::validate::text(
        &mut errors,
        "description",
        input.description.as_deref().unwrap_or("-"),
        2000,
    );
    if input.nhis.is_empty() || input.nhis.len() > 100 {
        errors.push("nhis", "must list 1 to 100 nhis");
    }
    let mut unique = input.nhis.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != input.nhis.len() {
        errors.push("nhis", "must not list an nhi twice");
    }
    errors.into_result()?;
    let team = state.team(&input.team, "team").await?;
    for nhi in &input.nhis {
        member_nhi(state, nhi).await?;
    }
    let now = state.now();
    let by = who.actor().to_string();
    let agent = LogicalAgent {
        id: new_id(),
        name: input.name,
        team_id: team.id,
        description: input.description.unwrap_or_default(),
        created_at: now,
        created_by: by.clone(),
        members: input
            .nhis
            .iter()
            .map(|nhi_id| Member {
                nhi_id: nhi_id.clone(),
                linked_at: now,
                linked_by: by.clone(),
            })
            .collect(),
    };
    let event = state
        .event(
            EventKind::LogicalAgentCreated,
            who.actor(),
            format!("logical_agent:{}", agent.id),
        )
        .with("name", &agent.name)
        .with("team", &agent.team_id)
        .with("nhis", input.nhis.join(" "));
    state
        .store
        .create_logical_agent(&agent, &event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ApiError::conflict(
                "logical_agent_conflict",
                "the name is taken, or an nhi is linked to another logical agent already",
            ),
            other => other.into(),
        })?;
    Ok(agent)
}

/// An NHI that may join a logical agent: registered and not a tombstone.
async fn member_nhi(state: &AppState, nhi_id: &str) -> ApiResult<Nhi> {
    let nhi = state.store.get_nhi(nhi_id).await?.ok_or_else(|| {
        ApiError::unprocessable("validation_failed", format!("nhis: no nhi {nhi_id}"))
    })?;
    if nhi.status == custos_core::NhiStatus::Decommissioned {
        return Err(ApiError::unprocessable(
            "validation_failed",
            format!("nhis: nhi {nhi_id} is decommissioned"),
        ));
    }
    Ok(nhi)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLogicalAgent {
    pub name: String,
    /// The owner team's name or id.
    pub team: String,
    pub description: Option<String>,
    /// The member NHIs' ids.
    pub nhis: Vec<String>,
}

/// Logical agents the caller may see: all for admins and auditors, their teams' for
/// reviewers.
pub async fn list_logical_agents(
    state: &AppState,
    who: &Principal,
    page: Page,
) -> ApiResult<LogicalAgentList> {
    let teams = who.visible_teams()?;
    let limit = page.limit;
    let found = state
        .store
        .list_logical_agents(&Page {
            after: page.after,
            limit: limit + 1,
        })
        .await?;
    let (mut found, next_cursor) = page_of(found, limit, |a| a.id.clone());
    if let Some(teams) = teams {
        found.retain(|agent| teams.contains(&agent.team_id));
    }
    Ok(LogicalAgentList {
        items: found,
        next_cursor,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogicalAgentList {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<LogicalAgent>,
    pub next_cursor: Option<String>,
}

pub async fn get_logical_agent(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> ApiResult<LogicalAgent> {
    let teams = who.visible_teams()?;
    let not_found =
        || ApiError::not_found(&format!("logical agent {id}")).with_code("logical_agent_not_found");
    let agent = state
        .store
        .get_logical_agent(id)
        .await?
        .ok_or_else(not_found)?;
    match teams {
        Some(teams) if !teams.contains(&agent.team_id) => Err(not_found()),
        _ => Ok(agent),
    }
}

/// `PUT /v1/logical-agents/{id}/members/{nhi_id}` (admin).
pub async fn link(
    state: &AppState,
    who: &Principal,
    id: &str,
    nhi_id: &str,
) -> ApiResult<LogicalAgent> {
    who.require(&[Role::Admin])?;
    let agent = get_logical_agent(state, who, id).await?;
    if agent.members.iter().any(|m| m.nhi_id == nhi_id) {
        return Ok(agent);
    }
    member_nhi(state, nhi_id).await?;
    let member = Member {
        nhi_id: nhi_id.to_owned(),
        linked_at: state.now(),
        linked_by: who.actor().to_string(),
    };
    let event = state
        .event(
            EventKind::LogicalAgentLinked,
            who.actor(),
            format!("logical_agent:{id}"),
        )
        .with("nhi", nhi_id);
    state
        .store
        .link_logical_agent(id, &member, &event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ApiError::conflict(
                "logical_agent_conflict",
                format!("nhi {nhi_id} is linked to another logical agent already"),
            ),
            other => other.into(),
        })?;
    get_logical_agent(state, who, id).await
}

/// `DELETE /v1/logical-agents/{id}/members/{nhi_id}` (admin).
pub async fn unlink(
    state: &AppState,
    who: &Principal,
    id: &str,
    nhi_id: &str,
) -> ApiResult<LogicalAgent> {
    who.require(&[Role::Admin])?;
    get_logical_agent(state, who, id).await?;
    let event = state
        .event(
            EventKind::LogicalAgentUnlinked,
            who.actor(),
            format!("logical_agent:{id}"),
        )
        .with("nhi", nhi_id);
    if !state.store.unlink_logical_agent(id, nhi_id, &event).await? {
        return Err(ApiError::not_found(&format!("member {nhi_id}")).with_code("member_not_found"));
    }
    get_logical_agent(state, who, id).await
}

/// Annotations of a platform identity that name the cloud identity it acts as, and the
/// platform key that identity has in `external_ids`.
const IDENTITY_ANNOTATIONS: [(&str, &str); 3] = [
    ("eks.amazonaws.com/role-arn", "aws"),
    ("iam.gke.io/gcp-service-account", "gcp"),
    ("azure.workload.identity/client-id", "azure"),
];

/// `GET /v1/logical-agents/suggestions` (admin, auditor): links worth confirming among the
/// NHIs in no logical agent yet. Reads the inventory page by page; decommissioned NHIs are
/// left out.
pub async fn suggestions(state: &AppState, who: &Principal) -> ApiResult<Vec<Suggestion>> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let linked: std::collections::HashSet<String> =
        state.store.linked_nhis().await?.into_iter().collect();
    // Claims: what the identities' listings say they act as.
    let mut claims: HashMap<String, Vec<String>> = HashMap::new();
    let mut page = Page {
        after: None,
        limit: 1_000,
    };
    loop {
        let batch = state
            .store
            .list_observed(&ObservedFilter::default(), &page)
            .await?;
        let Some(last) = batch.last() else { break };
        page.after = Some(format!("{}:{}", last.platform, last.principal));
        for identity in &batch {
            let Some(nhi_id) = &identity.nhi_id else {
                continue;
            };
            for (fact, value) in &identity.evidence.facts {
                if let Some((_, platform)) = IDENTITY_ANNOTATIONS
                    .iter()
                    .find(|(annotation, _)| fact.ends_with(annotation))
                {
                    claims
                        .entry(nhi_id.clone())
                        .or_default()
                        .push(format!("{platform}:{value}"));
                }
            }
        }
    }
    let mut candidates = Vec::new();
    let mut page = Page {
        after: None,
        limit: 1_000,
    };
    loop {
        let batch = state
            .store
            .list_nhis(&custos_core::NhiFilter::default(), &page)
            .await?;
        let Some(last) = batch.last() else { break };
        page.after = Some(last.id.clone());
        for nhi in batch {
            if linked.contains(&nhi.id) || nhi.status == custos_core::NhiStatus::Decommissioned {
                continue;
            }
            candidates.push(Candidate {
                ids: nhi
                    .external_ids
                    .iter()
                    .map(|(platform, id)| format!("{platform}:{id}"))
                    .collect(),
                claims: claims.remove(&nhi.id).unwrap_or_default(),
                nhi_id: nhi.id,
                name: nhi.name,
                platform: nhi.platform,
                team_id: nhi.owner.team_id,
                purpose: nhi.purpose,
            });
        }
    }
    Ok(logical::suggest(&candidates))
}

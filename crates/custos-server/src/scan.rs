//! `custos scan PATH…`: finds secrets in files, asks the server whether the Custos ones are
//! live, revokes them on request, and reports reuse.
//!
//! Which files: every regular file under each PATH, symbolic links not followed, skipping the
//! directories `.git`, `target` and `node_modules`, files with a NUL byte in their first 8 KiB
//! (binary, as git judges it) and files over `--max-file-size`; each skipped file is listed in
//! the output with the reason. Everything else, `.env`s included, is read as bytes and given to
//! the core's detector.
//!
//! Which service a file belongs to: its nearest enclosing project directory (one holding
//! `.git`, `package.json`, `Cargo.toml`, `go.mod`, `pyproject.toml`, `setup.py`,
//! `requirements.txt`, `pom.xml`, `build.gradle`, `Gemfile` or `composer.json`) at or below
//! the scan root, named by its path under the root; else the top-level directory under the
//! root it lies in; a file directly in the root belongs to the root (named by its own name).
//! One secret found under two or more services is reuse (OWASP NHI9).
//!
//! Without a token (`--token`/`CUSTOS_TOKEN`) the scan is offline: every match is reported
//! and Custos keys are `unchecked`. With one, the Custos secrets are sent to
//! `POST /v1/discovery/secrets/check` (the only way to learn their state: a credential's
//! fingerprint is a keyed hash only the server can compute), `--revoke` revokes each live
//! static key through `POST /v1/credentials/{id}/revoke`, and `--report` sends digests and
//! locations, never secrets, to `POST /v1/discovery/secrets/report`.
//!
//! Exit status: 0 nothing found; 4 a live Custos secret was found (even if `--revoke` has just
//! revoked it: the file still holds it); 5 secrets were found and none is known to be live
//! (provider keys, whose state only their provider knows, and unchecked, revoked, expired or
//! unknown Custos keys); 1 an error; 2 a usage error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use comfy_table::Table;
use custos_core::discovery::secrets::{Detector, SecretType};
use serde::Serialize;
use serde_json::{Value, json};

/// Exit status when a live Custos secret was found.
pub const EXIT_LIVE: u8 = 4;
/// Exit status when secrets were found and none is known to be live.
pub const EXIT_FOUND: u8 = 5;

/// Directories that hold history, build output or dependencies, not a project's own files.
const SKIPPED_DIRS: &[&str] = &[".git", "target", "node_modules"];
/// Files whose presence makes a directory a project (a service of its own).
const PROJECT_MARKERS: &[&str] = &[
    ".git",
    "package.json",
    "Cargo.toml",
    "go.mod",
    "pyproject.toml",
    "setup.py",
    "requirements.txt",
    "pom.xml",
    "build.gradle",
    "Gemfile",
    "composer.json",
];
/// How much of a file the binary sniff reads (git's own heuristic looks at 8000 bytes).
const SNIFF_BYTES: usize = 8000;
/// Secrets per check call: the server's limit.
const CHECK_BATCH: usize = 100;
/// Secrets per report call: the server's limit.
const REPORT_BATCH: usize = crate::leaks::MAX_REPORTED;
/// Encoded bytes per report call, well under the server's 256 KiB body limit.
const REPORT_BYTES: usize = 192 * 1024;
/// Locations per reported secret: the server's limit.
const REPORT_LOCATIONS: usize = crate::leaks::MAX_LOCATIONS;

#[derive(Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanOutput {
    #[default]
    Table,
    Json,
}

#[derive(clap::Args)]
pub struct ScanArgs {
    /// Files and directories to scan
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Revoke every live Custos static key found (needs a server)
    #[arg(long)]
    revoke: bool,
    /// Record reused and leaked secrets as findings on the server (digests and locations only)
    #[arg(long)]
    report: bool,
    /// Skip files larger than this many bytes
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    max_file_size: u64,
    /// The server's base URL
    #[arg(long, env = "CUSTOS_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin token; without one the scan is offline and Custos keys are `unchecked`
    #[arg(long, env = "CUSTOS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How to print results
    #[arg(long, value_enum, default_value_t = ScanOutput::Table)]
    output: ScanOutput,
}

/// The scan found secrets: the process exits with this status (see the module's docs).
#[derive(Debug, thiserror::Error)]
#[error("secrets found")]
pub struct Found(pub u8);

#[derive(Serialize)]
struct Match {
    path: String,
    line: usize,
    column: usize,
    kind: SecretType,
    preview: String,
    secret_sha256: String,
    service: String,
    /// Custos secrets only: `unchecked`, `live`, `revoked`, `expired` or `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nhi_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nhi_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operator_id: Option<String>,
    /// `revoked` when this scan revoked it.
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<String>,
}

#[derive(Serialize)]
struct Skipped {
    path: String,
    /// `binary`, `too_large` or `unreadable: <why>`.
    reason: String,
}

#[derive(Serialize)]
struct Reuse {
    secret_sha256: String,
    kind: SecretType,
    services: BTreeSet<String>,
    locations: Vec<Value>,
}

#[derive(Default)]
struct Walk {
    matches: Vec<Match>,
    skipped: Vec<Skipped>,
    files_scanned: u64,
    bytes_scanned: u64,
    /// The Custos secrets found, by digest: what the check has to send.
    custos: BTreeMap<String, String>,
    /// Whether a directory is a project, asked once per directory.
    projects: HashMap<PathBuf, bool>,
}

pub async fn run(args: ScanArgs) -> anyhow::Result<()> {
    if (args.revoke || args.report) && args.token.is_none() {
        bail!("--revoke and --report need a server: pass --token or set CUSTOS_TOKEN");
    }
    let detector = Detector::new();
    let mut walk = Walk::default();
    for root in &args.paths {
        walk.root(&detector, root, args.max_file_size)?;
    }
    walk.matches.sort_by(|a, b| {
        (&a.path, a.line, a.column, a.kind).cmp(&(&b.path, b.line, b.column, b.kind))
    });
    walk.skipped.sort_by(|a, b| a.path.cmp(&b.path));

    let mut findings = None;
    if let Some(token) = &args.token {
        let server = Server {
            url: args.url.trim_end_matches('/').to_owned(),
            token: token.clone(),
            http: reqwest::Client::new(),
        };
        check(&server, &mut walk).await?;
        // Reported before revoking: a live key in a file is a leak even once revoked.
        if args.report {
            findings = Some(report(&server, &walk.matches).await?);
        }
        if args.revoke {
            revoke(&server, &mut walk.matches).await?;
        }
    } else {
        for m in walk.matches.iter_mut().filter(|m| m.kind.is_custos()) {
            m.state = Some("unchecked".to_owned());
        }
    }
    let reuse = reuse(&walk.matches);
    let live = walk
        .matches
        .iter()
        .filter(|m| m.state.as_deref() == Some("live"))
        .count();
    let revoked_now = walk
        .matches
        .iter()
        .filter(|m| m.action.as_deref() == Some("revoked"))
        .count();

    match args.output {
        ScanOutput::Json => {
            let mut out = json!({
                "files_scanned": walk.files_scanned,
                "bytes_scanned": walk.bytes_scanned,
                "skipped": walk.skipped,
                "matches": walk.matches,
                "reuse": reuse,
                "live": live,
                "revoked": revoked_now,
            });
            if let Some(findings) = findings {
                out["findings"] = findings;
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        ScanOutput::Table => print_tables(&walk, &reuse, findings.as_ref(), live, revoked_now),
    }
    if live > 0 {
        Err(Found(EXIT_LIVE).into())
    } else if !walk.matches.is_empty() {
        Err(Found(EXIT_FOUND).into())
    } else {
        Ok(())
    }
}

impl Walk {
    fn root(&mut self, detector: &Detector, root: &Path, max: u64) -> anyhow::Result<()> {
        let meta = std::fs::symlink_metadata(root)
            .with_context(|| format!("cannot read {}", root.display()))?;
        if meta.is_file() {
            // A file named on its own belongs to the directory it is in.
            let dir = root.parent().unwrap_or(Path::new("."));
            let service = self
                .project_under(dir, dir)
                .unwrap_or_else(|| dir_name(dir));
            self.file(detector, root, &service, max);
            return Ok(());
        }
        if !meta.is_dir() {
            bail!("{} is neither a file nor a directory", root.display());
        }
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) => {
                    self.skipped.push(Skipped {
                        path: dir.display().to_string(),
                        reason: format!("unreadable: {e}"),
                    });
                    continue;
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    let name = entry.file_name();
                    if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                        stack.push(path);
                    }
                } else if kind.is_file() {
                    let service = self.service(root, &path);
                    self.file(detector, &path, &service, max);
                }
            }
        }
        Ok(())
    }

    /// The nearest project directory from `dir` up to `root`, named by its path under `root`.
    fn project_under(&mut self, root: &Path, dir: &Path) -> Option<String> {
        for ancestor in dir.ancestors() {
            if !ancestor.starts_with(root) {
                break;
            }
            let is_project = *self
                .projects
                .entry(ancestor.to_path_buf())
                .or_insert_with(|| PROJECT_MARKERS.iter().any(|m| ancestor.join(m).exists()));
            if is_project {
                return Some(match ancestor.strip_prefix(root) {
                    Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
                    _ => dir_name(root),
                });
            }
        }
        None
    }

    /// The service a file under `root` belongs to (see the module's docs).
    fn service(&mut self, root: &Path, file: &Path) -> String {
        let dir = file.parent().unwrap_or(root);
        if let Some(project) = self.project_under(root, dir) {
            return project;
        }
        match file.strip_prefix(root).ok().and_then(|rel| {
            let mut parts = rel.components();
            let first = parts.next()?;
            parts.next().map(|_| first)
        }) {
            Some(top) => top.as_os_str().to_string_lossy().into_owned(),
            None => dir_name(root),
        }
    }

    fn file(&mut self, detector: &Detector, path: &Path, service: &str, max: u64) {
        let shown = path.display().to_string();
        let skip = |reason: String| Skipped {
            path: shown.clone(),
            reason,
        };
        let size = match std::fs::metadata(path) {
            Ok(meta) => meta.len(),
            Err(e) => return self.skipped.push(skip(format!("unreadable: {e}"))),
        };
        if size > max {
            return self.skipped.push(skip("too_large".to_owned()));
        }
        let content = match std::fs::read(path) {
            Ok(content) => content,
            Err(e) => return self.skipped.push(skip(format!("unreadable: {e}"))),
        };
        if content.iter().take(SNIFF_BYTES).any(|&b| b == 0) {
            return self.skipped.push(skip("binary".to_owned()));
        }
        self.files_scanned += 1;
        self.bytes_scanned += content.len() as u64;
        for found in detector.scan(&content) {
            if found.kind.is_custos() {
                let secret = String::from_utf8_lossy(&content[found.range.clone()]).into_owned();
                self.custos.insert(found.secret_sha256.clone(), secret);
            }
            self.matches.push(Match {
                path: shown.clone(),
                line: found.line,
                column: found.column,
                kind: found.kind,
                preview: found.preview,
                secret_sha256: found.secret_sha256,
                service: service.to_owned(),
                state: None,
                fingerprint: None,
                credential_id: None,
                nhi_id: None,
                nhi_name: None,
                operator_id: None,
                action: None,
            });
        }
    }
}

fn dir_name(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}

struct Server {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Server {
    /// One POST; a problem document becomes an error naming its code and detail.
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.url))?;
        let status = response.status();
        let text = response.text().await.context("reading the response")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let code = value.get("code").and_then(Value::as_str).unwrap_or("error");
            let detail = value.get("detail").and_then(Value::as_str).unwrap_or("");
            bail!("{path}: {} {code}: {detail}", status.as_u16());
        }
        Ok(value)
    }
}

/// Asks the server about every distinct Custos secret found, in batches, and notes each
/// answer on every match of that secret.
async fn check(server: &Server, walk: &mut Walk) -> anyhow::Result<()> {
    let secrets: Vec<(&String, &String)> = walk.custos.iter().collect();
    let mut answers: HashMap<String, Value> = HashMap::new();
    for batch in secrets.chunks(CHECK_BATCH) {
        let body = json!({"secrets": batch.iter().map(|(_, s)| s).collect::<Vec<_>>()});
        let answer = server.post("/v1/discovery/secrets/check", &body).await?;
        let results = answer
            .get("results")
            .and_then(Value::as_array)
            .filter(|r| r.len() == batch.len())
            .context("the server's check answered a different number of secrets")?;
        for ((digest, _), result) in batch.iter().zip(results) {
            answers.insert((*digest).clone(), result.clone());
        }
    }
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    for m in walk.matches.iter_mut().filter(|m| m.kind.is_custos()) {
        if let Some(answer) = answers.get(&m.secret_sha256) {
            m.state = text(answer, "state");
            m.fingerprint = text(answer, "fingerprint");
            m.credential_id = text(answer, "credential_id");
            m.nhi_id = text(answer, "nhi_id");
            m.nhi_name = text(answer, "nhi_name");
            m.operator_id = text(answer, "operator_id");
        }
    }
    Ok(())
}

/// Revokes each live static key once, naming the first file it was found in. Operator tokens
/// are left to a human: revoking one may lock out the person running the scan.
async fn revoke(server: &Server, matches: &mut [Match]) -> anyhow::Result<()> {
    let mut revoked: BTreeSet<String> = BTreeSet::new();
    for m in matches.iter_mut() {
        let (Some("live"), Some(id)) = (m.state.as_deref(), m.credential_id.clone()) else {
            continue;
        };
        if revoked.insert(id.clone()) {
            let reason: String = format!("found by custos scan in {}", m.path)
                .chars()
                .take(500)
                .collect();
            server
                .post(
                    &format!("/v1/credentials/{id}/revoke"),
                    &json!({ "reason": reason }),
                )
                .await?;
        }
        m.action = Some("revoked".to_owned());
    }
    Ok(())
}

/// Sends every distinct secret's digest and locations; the server decides what is a finding.
async fn report(server: &Server, matches: &[Match]) -> anyhow::Result<Value> {
    let mut secrets: BTreeMap<&str, Value> = BTreeMap::new();
    for m in matches {
        let entry = secrets.entry(&m.secret_sha256).or_insert_with(|| {
            let mut entry = json!({
                "kind": m.kind,
                "secret_sha256": m.secret_sha256,
                "locations": [],
            });
            if m.kind == SecretType::CustosStaticKey
                && let Some(id) = &m.credential_id
            {
                entry["credential_id"] = json!(id);
            }
            entry
        });
        if let Some(locations) = entry["locations"].as_array_mut()
            && locations.len() < REPORT_LOCATIONS
        {
            locations.push(json!({"path": m.path, "line": m.line, "service": m.service}));
        }
    }
    // Batches within the server's count limit and, by encoded size, its body limit.
    let mut batches: Vec<Vec<Value>> = vec![Vec::new()];
    let mut size = 0;
    for secret in secrets.into_values() {
        let len = secret.to_string().len();
        let batch = batches.last_mut().expect("never empty");
        if !batch.is_empty() && (batch.len() == REPORT_BATCH || size + len > REPORT_BYTES) {
            batches.push(Vec::new());
            size = 0;
        }
        size += len;
        batches.last_mut().expect("never empty").push(secret);
    }
    let mut findings = Vec::new();
    for batch in batches.iter().filter(|b| !b.is_empty()) {
        let answer = server
            .post("/v1/discovery/secrets/report", &json!({"secrets": batch}))
            .await?;
        if let Some(items) = answer.get("findings").and_then(Value::as_array) {
            findings.extend(items.iter().cloned());
        }
    }
    Ok(Value::Array(findings))
}

/// Secrets found under more than one service.
fn reuse(matches: &[Match]) -> Vec<Reuse> {
    let mut by_digest: BTreeMap<&str, Vec<&Match>> = BTreeMap::new();
    for m in matches {
        by_digest.entry(&m.secret_sha256).or_default().push(m);
    }
    by_digest
        .into_values()
        .filter_map(|found| {
            let services: BTreeSet<String> = found.iter().map(|m| m.service.clone()).collect();
            (services.len() > 1).then(|| Reuse {
                secret_sha256: found[0].secret_sha256.clone(),
                kind: found[0].kind,
                services,
                locations: found
                    .iter()
                    .map(|m| json!({"path": m.path, "line": m.line, "service": m.service}))
                    .collect(),
            })
        })
        .collect()
}

fn print_tables(
    walk: &Walk,
    reuse: &[Reuse],
    findings: Option<&Value>,
    live: usize,
    revoked_now: usize,
) {
    if !walk.matches.is_empty() {
        let mut table = Table::new();
        table.set_header([
            "STATE", "KIND", "LOCATION", "SERVICE", "PREVIEW", "SHA256", "NHI", "ACTION",
        ]);
        for m in &walk.matches {
            table.add_row([
                m.state.clone().unwrap_or_default(),
                m.kind.as_str().to_owned(),
                format!("{}:{}:{}", m.path, m.line, m.column),
                m.service.clone(),
                m.preview.clone(),
                m.secret_sha256.clone(),
                m.nhi_name.clone().or(m.nhi_id.clone()).unwrap_or_default(),
                m.action.clone().unwrap_or_default(),
            ]);
        }
        println!("{table}");
    }
    if !reuse.is_empty() {
        let mut table = Table::new();
        table.set_header(["REUSED SECRET", "KIND", "SERVICES"]);
        for r in reuse {
            table.add_row([
                r.secret_sha256.clone(),
                r.kind.as_str().to_owned(),
                r.services.iter().cloned().collect::<Vec<_>>().join(", "),
            ]);
        }
        println!("{table}");
    }
    for s in &walk.skipped {
        println!("skipped {} ({})", s.path, s.reason);
    }
    if let Some(findings) = findings.and_then(Value::as_array) {
        for f in findings {
            println!(
                "finding {} {} (seen {} times)",
                f["id"].as_str().unwrap_or(""),
                f["kind"].as_str().unwrap_or(""),
                f["occurrences"]
            );
        }
    }
    println!(
        "{} secrets in {} files ({} bytes), {} live, {} revoked now, {} reused, {} files skipped",
        walk.matches.len(),
        walk.files_scanned,
        walk.bytes_scanned,
        live,
        revoked_now,
        reuse.len(),
        walk.skipped.len()
    );
}

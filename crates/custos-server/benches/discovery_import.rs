//! Discovery imports over HTTP, end to end (issue: "import rate for CloudTrail (MB/s) and for
//! 1M-row inventories"). For each store this starts the real `custos` binary (release build)
//! and times `POST /v1/discovery/imports` from the first byte sent to the report received:
//!
//! - **inventory**: a generated `inventory-csv` of `CUSTOS_BENCH_ROWS` rows (one owner team,
//!   kinds and platforms mixed, a two-grant ceiling, tags and an external id each), every row
//!   registered as an NHI with its `nhi.registered` event, durably; rows/s and MB/s;
//! - **CloudTrail**: the real Invictus capture (`testdata/cloudtrail-invictus`, 2,900
//!   records) repeated `CUSTOS_BENCH_TRAIL_COPIES` times in one `{"Records": [...]}` file,
//!   uploaded plain and gzipped: every record read and its identity merged, the shadow-NHI
//!   findings opened at the end; MB/s of JSON read.
//!
//! ```text
//! export CARGO_TARGET_DIR=/var/tmp/custos-target
//! cargo build --release -p custos-server --bin custos
//! cargo bench -p custos-server --bench discovery_import
//! ```
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `CUSTOS_BENCH_BACKENDS` | `sqlite,postgres` | which stores, in order |
//! | `CUSTOS_BENCH_ROWS` | `1_000_000` | inventory rows |
//! | `CUSTOS_BENCH_TRAIL_COPIES` | `25` | copies of the capture in the CloudTrail file |
//! | `CUSTOS_BIN` | `release/custos` beside this bench | the server binary |
//! | `CUSTOS_TEST_DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/test` | PostgreSQL; a fresh schema per run |

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

mod common;
use common::*;

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/cloudtrail-invictus/records.json.gz"
);

fn main() -> ExitCode {
    bench_main("discovery_import", "starts servers", run)
}

async fn run() -> Result<()> {
    let backends = backends_from_env("sqlite,postgres")?;
    let rows = env_number("CUSTOS_BENCH_ROWS", 1_000_000)?;
    let copies = env_number("CUSTOS_BENCH_TRAIL_COPIES", 25)?;
    let bin = std::env::var("CUSTOS_BIN")
        .map(Into::into)
        .unwrap_or_else(|_| default_bin());
    let pg_url = std::env::var("CUSTOS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let work = tempfile::tempdir()?;
    let inventory = work.path().join("inventory.csv");
    write_inventory(&inventory, rows)?;
    let trail = work.path().join("trail.json");
    let records = write_trail(&trail, copies)?;
    let trail_gz = work.path().join("trail.json.gz");
    gzip_file(&trail, &trail_gz)?;
    for backend in backends {
        let run_dir = tempfile::tempdir()?;
        let schema = match backend {
            Backend::Postgres => Some(PgSchema::create(&pg_url).await?),
            Backend::Sqlite => None,
        };
        let database_url = schema.as_ref().map(PgSchema::server_url);
        let http = reqwest::Client::new();
        let server = Server::start(
            &bin,
            ADMIN_TOKEN,
            run_dir.path(),
            &run_dir.path().join("data"),
            database_url.as_deref(),
            &http,
        )
        .await?;
        let api = Api {
            http: http.clone(),
            base: format!("http://{}", server.addr),
            admin_token: ADMIN_TOKEN.to_owned(),
        };
        api.admin(
            "/v1/teams",
            json!({"name": "platform", "contact": "platform@example.com"}),
        )
        .await?;
        println!("### {}\n", backend.title());
        println!("| import | size | records | time | rate |");
        println!("| --- | ---: | ---: | ---: | ---: |");
        let (seconds, report) = upload(&api, "inventory-csv", &inventory).await?;
        ensure!(
            report["registered"] == json!(rows),
            "not every row registered: {report}"
        );
        print_row(
            "inventory-csv, every row a new NHI",
            &inventory,
            rows,
            seconds,
        )?;
        for (name, file) in [
            ("cloudtrail, plain", &trail),
            ("cloudtrail, gzip", &trail_gz),
        ] {
            let (seconds, report) = upload(&api, "cloudtrail", file).await?;
            ensure!(
                report["records"] == json!(records) && report["malformed"] == json!(0),
                "the trail was not read whole: {report}"
            );
            // The rate is of the JSON read, whatever travelled.
            let size = std::fs::metadata(&trail)?.len();
            println!(
                "| {name} | {:.1} MB ({:.1} MB sent) | {records} | {seconds:.2} s | **{:.1} MB/s**, {:.0} records/s |",
                size as f64 / 1e6,
                std::fs::metadata(file)?.len() as f64 / 1e6,
                size as f64 / 1e6 / seconds,
                records as f64 / seconds
            );
        }
        println!();
        server.stop().await?;
        if let Some(schema) = schema {
            schema.drop().await?;
        }
    }
    Ok(())
}

async fn upload(api: &Api, format: &str, file: &Path) -> Result<(f64, Value)> {
    let started = Instant::now();
    let body = tokio::fs::File::open(file).await?;
    let response = api
        .http
        .post(format!(
            "{}/v1/discovery/imports?format={format}&source=bench",
            api.base
        ))
        .bearer_auth(&api.admin_token)
        .body(reqwest::Body::from(body))
        .send()
        .await?;
    let status = response.status();
    let report: Value = response.json().await?;
    let seconds = started.elapsed().as_secs_f64();
    ensure!(status.is_success(), "{format}: {status} {report}");
    Ok((seconds, report))
}

fn print_row(what: &str, file: &Path, rows: usize, seconds: f64) -> Result<()> {
    let size = std::fs::metadata(file)?.len() as f64 / 1e6;
    println!(
        "| {what} | {size:.1} MB | {rows} | {seconds:.2} s | **{:.0} rows/s**, {:.1} MB/s |",
        rows as f64 / seconds,
        size / seconds
    );
    Ok(())
}

/// An inventory of `rows` NHIs, in the documented columns.
fn write_inventory(path: &Path, rows: usize) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "name,kind,platform,environment,owner_team,owner_application,owner_contact,purpose,scope_ceiling,tags,external_ids,expires_at"
    )?;
    let kinds = ["ai_agent", "service_account", "workload", "automation"];
    let platforms = ["aws", "kubernetes", "github", "okta"];
    for i in 0..rows {
        let platform = platforms[i % platforms.len()];
        writeln!(
            out,
            "nhi-{i:07},{},{platform},production,platform,app-{},owner-{}@example.com,imported workload {i},crm:read:customers/* mail:send,tier=gold;cost_centre=cc-{},{platform}=ext-{i:07},",
            kinds[i % kinds.len()],
            i % 97,
            i % 13,
            i % 31,
        )?;
    }
    out.flush()?;
    Ok(())
}

/// The capture's records, `copies` times over, as one CloudTrail file; returns the records.
fn write_trail(path: &Path, copies: usize) -> Result<usize> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(CAPTURE).context("the capture")?)
        .read_to_string(&mut text)?;
    let capture: Value = serde_json::from_str(&text)?;
    let records = capture["Records"]
        .as_array()
        .context("the capture has no Records")?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    out.write_all(b"{\"Records\":[")?;
    let mut first = true;
    for _ in 0..copies {
        for record in records {
            if !first {
                out.write_all(b",")?;
            }
            first = false;
            serde_json::to_writer(&mut out, record)?;
        }
    }
    out.write_all(b"]}")?;
    out.flush()?;
    Ok(records.len() * copies)
}

fn gzip_file(from: &Path, to: &Path) -> Result<()> {
    let mut encoder = flate2::write::GzEncoder::new(
        std::io::BufWriter::new(std::fs::File::create(to)?),
        flate2::Compression::fast(),
    );
    std::io::copy(&mut std::fs::File::open(from)?, &mut encoder)?;
    encoder.finish()?.flush()?;
    Ok(())
}

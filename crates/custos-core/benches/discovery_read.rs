//! How fast the discovery readers read: CloudTrail in MB/s over the real Invictus capture
//! (decompressed before timing), and `inventory-csv` in rows/s over a generated 100,000-row
//! inventory. Each iteration reads the whole input into a sink that only counts.
//!
//! `cargo bench -p custos-core --bench discovery_read -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;
use std::io::Read;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use custos_core::discovery::formats::read;
use custos_core::discovery::{Format, Malformed, Position, Record, Sink};

const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/cloudtrail-invictus/records.json.gz"
);
const ROWS: u64 = 100_000;

/// Counts what it is given, so that only reading is timed.
#[derive(Default)]
struct Count {
    records: u64,
    malformed: u64,
}

impl Sink for Count {
    fn record(&mut self, _: Position, record: Record) {
        black_box(record);
        self.records += 1;
    }

    fn malformed(&mut self, _: Malformed) {
        self.malformed += 1;
    }
}

fn read_all(format: Format, input: &[u8]) -> Count {
    let mut count = Count::default();
    read(format, input, &mut count).expect("the bench input reads");
    assert_eq!(count.malformed, 0);
    count
}

fn cloudtrail(c: &mut Criterion) {
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(CAPTURE).unwrap())
        .read_to_end(&mut text)
        .unwrap();
    let mut group = c.benchmark_group("discovery_read");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("cloudtrail_invictus", |b| {
        b.iter(|| read_all(Format::CloudTrail, black_box(&text)).records)
    });
    group.finish();
}

fn inventory_csv(c: &mut Criterion) {
    let mut text = String::from(
        "name,kind,platform,environment,owner_team,owner_application,owner_contact,purpose,scope_ceiling,tags,external_ids,expires_at\n",
    );
    for n in 0..ROWS {
        text.push_str(&format!(
            "agent-{n},ai_agent,aws,prod,team-{},app-{},team{}@example.com,\"reads orders, writes reports\",crm:read;s3:get:arn:aws:s3:::reports-{n}/*,cost=c{};tier=2,aws=arn:aws:iam::123456789012:user/agent-{n},2027-01-01T00:00:00Z\n",
            n % 50,
            n % 400,
            n % 50,
            n % 20,
        ));
    }
    let mut group = c.benchmark_group("discovery_read");
    group.throughput(Throughput::Elements(ROWS));
    group.bench_function("inventory_csv_100k", |b| {
        b.iter(|| read_all(Format::InventoryCsv, black_box(text.as_bytes())).records)
    });
    group.finish();
}

criterion_group!(benches, cloudtrail, inventory_csv);
criterion_main!(benches);

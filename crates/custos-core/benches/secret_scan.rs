//! How fast the secret detector reads: MB/s over a generated 50 MB tree of text files (source,
//! config and `.env`s with a planted key every few files), held in memory so that only
//! `Detector::scan` is timed. The median of several runs is reported.
//!
//! Then single 1 MiB files, each timed the same way: ordinary text, and files built to be
//! expensive, which repeat an anchor whose check reads a large window (`custos scan` reads files
//! an attacker can plant in a repository, so their cost must stay linear in their size).
//!
//! `cargo bench -p custos-core --bench secret_scan`; `CUSTOS_BENCH_QUICK=1` for a tiny run
//! (CI; the single files are then 64 KiB), `CUSTOS_BENCH_MB` and `CUSTOS_BENCH_RUNS` to change
//! the size.

use std::hint::black_box;
use std::time::Instant;

use custos_core::discovery::secrets::Detector;
use custos_core::token::{SecretKind, mint};

/// A deterministic generator (xorshift), so every run scans the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Lines that look like what a repository holds, including near misses of every anchor.
const LINES: &[&str] = &[
    "fn main() { let task = Task::new(\"sk-\", 42); println!(\"{task:?}\"); }",
    "    return self.session.get(url, headers={\"Accept\": \"application/json\"}, timeout=30)",
    "AWS_REGION=eu-west-1 # AKIA keys live in the vault, not here",
    "  image: ghcr.io/example/service:1.4.2 # ghp_ tokens are injected by CI",
    "const customer = await db.query('SELECT * FROM customers WHERE id = $1', [id]);",
    "# -----BEGIN CERTIFICATE----- blocks are public; keys are not",
    "LOG_LEVEL=debug\nDATABASE_URL=postgres://app@db:5432/app",
    "    \"type\": \"module\", \"dependencies\": {\"xoxb-client\": \"^2.0.0\"}",
    "sha256: 9f86d081884c7d659a2feaea0c55ad015a3bf4f1b0b822cd15d6c15b0f00a08",
];

fn corpus(megabytes: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut files = Vec::new();
    let mut total = 0;
    while total < megabytes * 1_000_000 {
        let mut file = Vec::new();
        let size = 2_000 + (rng.next() % 60_000) as usize;
        while file.len() < size {
            file.extend_from_slice(LINES[(rng.next() % LINES.len() as u64) as usize].as_bytes());
            file.push(b'\n');
        }
        if files.len() % 7 == 0 {
            let random: [u8; 32] = std::array::from_fn(|_| rng.next() as u8);
            file.extend_from_slice(b"CUSTOS_KEY=");
            file.extend_from_slice(mint(SecretKind::StaticKey, &random).as_bytes());
            file.push(b'\n');
        }
        total += file.len();
        files.push(file);
    }
    files
}

/// `unit` repeated, cut at `size` bytes.
fn repeated(unit: &[u8], size: usize) -> Vec<u8> {
    unit.iter().copied().cycle().take(size).collect()
}

/// Random lower-case words and newlines: what an ordinary file costs.
fn ordinary(size: usize) -> Vec<u8> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut file = Vec::with_capacity(size);
    while file.len() < size {
        let byte = match rng.next() % 8 {
            0 => b' ',
            1 if rng.next().is_multiple_of(8) => b'\n',
            _ => b'a' + (rng.next() % 26) as u8,
        };
        file.push(byte);
    }
    file
}

/// PEM blocks that open inside one another: a `-----BEGIN PRIVATE KEY-----` line and a line of
/// random base64, repeated, with an end marker every 48 KiB, so that every begin line has a
/// body of up to 48 KiB that passes the checks and is reported.
fn nested_pem(size: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = Rng(0x6a09_e667_f3bc_c908);
    let mut file = Vec::with_capacity(size);
    let mut next_end = 48 * 1024;
    while file.len() < size {
        file.extend_from_slice(b"-----BEGIN PRIVATE KEY-----\n");
        file.extend((0..64).map(|_| ALPHABET[(rng.next() % 64) as usize]));
        file.push(b'\n');
        if file.len() >= next_end {
            file.extend_from_slice(b"-----END PRIVATE KEY-----\n");
            next_end += 48 * 1024;
        }
    }
    file.truncate(size);
    file
}

/// The median of `runs` scans of `file`, in seconds, and how many secrets the last one found.
fn time(detector: &Detector, file: &[u8], runs: usize) -> (f64, usize) {
    let mut seconds = Vec::new();
    let mut found = 0;
    for _ in 0..runs {
        let started = Instant::now();
        found = black_box(detector.scan(black_box(file))).len();
        seconds.push(started.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    (seconds[seconds.len() / 2], found)
}

fn main() {
    let quick = std::env::var_os("CUSTOS_BENCH_QUICK").is_some();
    let number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let megabytes = number("CUSTOS_BENCH_MB", if quick { 2 } else { 50 });
    let runs = number("CUSTOS_BENCH_RUNS", if quick { 1 } else { 5 });
    let files = corpus(megabytes);
    let bytes: usize = files.iter().map(Vec::len).sum();
    let detector = Detector::new();
    let mut seconds = Vec::new();
    let mut found = 0;
    for _ in 0..runs {
        let started = Instant::now();
        found = files
            .iter()
            .map(|file| black_box(detector.scan(black_box(file))).len())
            .sum::<usize>();
        seconds.push(started.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    println!(
        "secret scan: {} files, {:.1} MB, {found} secrets found; median of {runs} runs {:.3} s = {:.0} MB/s",
        files.len(),
        bytes as f64 / 1e6,
        median,
        bytes as f64 / 1e6 / median
    );

    let size = if quick { 64 * 1024 } else { 1024 * 1024 };
    let single: [(&str, Vec<u8>); 5] = [
        ("ordinary text (random lower-case words)", ordinary(size)),
        (
            "`\"type\":\"service_account\"` repeated",
            repeated(br#""type":"service_account""#, size),
        ),
        (
            "`-----BEGIN PRIVATE KEY-----` repeated",
            repeated(b"-----BEGIN PRIVATE KEY-----", size),
        ),
        (
            "`AKIA…` key ids repeated",
            repeated(b"AKIA2OGYBAH6STMMNXNN ", size),
        ),
        ("PEM blocks nested, an end every 48 KiB", nested_pem(size)),
    ];
    for (name, file) in &single {
        let (median, found) = time(&detector, file, runs);
        println!(
            "secret scan, {} KiB, {name}: {found} secrets found; median of {runs} runs {:.1} ms",
            file.len() / 1024,
            median * 1e3
        );
    }
}

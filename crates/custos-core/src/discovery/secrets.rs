//! Secret detection over one file's bytes: Custos's own secrets and common provider keys.
//!
//! The detector is pure: the caller reads the file and passes its content; what comes back is
//! where each secret is, what kind it is, a redacted preview and a digest, never the secret
//! itself (the caller slices it out of its own buffer by [`SecretMatch::range`] when it has to,
//! say to ask the server about a Custos key).
//!
//! One Aho-Corasick pass finds every anchor (a prefix such as `custos_sk_` or `AKIA`, or a
//! marker such as `-----BEGIN `), and a hand-written check per kind reads from the anchor over
//! a bounded window, with no backtracking. Most windows are a key's length (at most a few
//! hundred bytes). Two are large, up to `MAX_BLOCK` (64 KiB): the JSON object around a
//! service-account anchor and the body after a PEM begin line; a file that repeats such an
//! anchor would have every occurrence read the same 64 KiB again, and `custos scan` reads files
//! an attacker can plant. Those two checks therefore never search their window themselves:
//! they ask a `Memo`, which resumes the brace searches where the previous anchor's stopped
//! and indexes the file's key labels and end markers once, so that the cost stays linear in
//! the input. (What is reported is still hashed: PEM blocks begun inside one another's bodies
//! are each a finding, and each is read once more for its digest.)
//!
//! Each check is as strict as its format allows, to keep false positives out:
//! word boundaries on both sides, exact lengths, the CRC32 checksums of Custos and GitHub
//! tokens, and an entropy floor where the format has no checksum (so `sk-xxxxxxxx…` and other
//! placeholders are not keys).
//!
//! Documented example keys are not reported: AWS's `AKIAIOSFODNN7EXAMPLE` and
//! `wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY` (any AWS key id or secret ending in `EXAMPLE` or
//! `EXAMPLEKEY`) are in countless READMEs, and reporting them would bury real findings.

use std::collections::HashMap;
use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::token::{self, SecretKind};

/// What kind of secret a match is. The wire name is part of `custos scan`'s output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretType {
    /// A Custos static key (`custos_sk_…`) with a valid checksum.
    CustosStaticKey,
    /// A Custos operator token (`custos_op_…`) with a valid checksum.
    CustosOperatorToken,
    AwsAccessKeyId,
    AwsSecretAccessKey,
    OpenaiApiKey,
    AnthropicApiKey,
    /// A GitHub token (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` with a valid checksum, or a
    /// fine-grained `github_pat_`).
    GithubToken,
    /// A Slack token (`xox?-`, `xapp-`) or an incoming-webhook URL.
    SlackToken,
    /// A Google service-account key file (JSON with `"type": "service_account"` and a
    /// `private_key`); the secret is the private key's value.
    GoogleServiceAccount,
    /// A PEM private key block (PKCS#1, PKCS#8, SEC1, OpenSSH, encrypted PKCS#8).
    PrivateKey,
}

impl SecretType {
    pub const fn as_str(self) -> &'static str {
        match self {
            SecretType::CustosStaticKey => "custos_static_key",
            SecretType::CustosOperatorToken => "custos_operator_token",
            SecretType::AwsAccessKeyId => "aws_access_key_id",
            SecretType::AwsSecretAccessKey => "aws_secret_access_key",
            SecretType::OpenaiApiKey => "openai_api_key",
            SecretType::AnthropicApiKey => "anthropic_api_key",
            SecretType::GithubToken => "github_token",
            SecretType::SlackToken => "slack_token",
            SecretType::GoogleServiceAccount => "google_service_account",
            SecretType::PrivateKey => "private_key",
        }
    }

    /// Whether it is one of Custos's own secrets, which the server can say is live or not.
    pub const fn is_custos(self) -> bool {
        matches!(
            self,
            SecretType::CustosStaticKey | SecretType::CustosOperatorToken
        )
    }
}

/// One secret found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretMatch {
    pub kind: SecretType,
    /// 1-based line of the secret's first byte.
    pub line: usize,
    /// 1-based column of the secret's first byte, counted in bytes.
    pub column: usize,
    /// Where the secret is in the content. The secret is `&content[range]`.
    pub range: Range<usize>,
    /// Its first few characters and `…`: enough to recognise it, too little to use it.
    pub preview: String,
    /// [`secret_sha256`] of the secret. Not a Custos credential's `fingerprint` (`fp_…`), which
    /// is a keyed hash only the server can compute.
    pub secret_sha256: String,
}

/// The first 16 bytes of SHA-256 of a secret, in hex: the same secret gives the same value
/// wherever it is found, which is how reuse is recognised, and it reveals nothing of a
/// high-entropy secret. Unkeyed on purpose, so that a scan without a server can compute it.
pub fn secret_sha256(secret: &[u8]) -> String {
    hex::encode(&Sha256::digest(secret)[..16])
}

/// How far the check of a PEM block or a service-account file reads past its anchor: a
/// 16384-bit RSA key in PEM is about 13 KiB, so 64 KiB is more than any real key needs.
const MAX_BLOCK: usize = 64 * 1024;
/// How far after an AWS access key id a bare 40-character string is taken as its secret key.
const AWS_PAIR_WINDOW: usize = 256;
/// Bits per character below which a key without a checksum is taken as a placeholder.
const MIN_ENTROPY: f64 = 3.0;

/// The anchors, matched ASCII-case-insensitively (for `aws_secret_access_key` in any case);
/// each check then insists on the case its format has.
#[derive(Clone, Copy)]
enum Anchor {
    Custos,
    Aws,
    AwsSecretLabel,
    OpenAi,
    Anthropic,
    GitHub,
    GitHubPat,
    Slack,
    SlackWebhook,
    ServiceAccount,
    Pem,
}

const ANCHORS: &[(&str, Anchor)] = &[
    ("custos_op_", Anchor::Custos),
    ("custos_sk_", Anchor::Custos),
    ("AKIA", Anchor::Aws),
    ("ASIA", Anchor::Aws),
    ("aws_secret_access_key", Anchor::AwsSecretLabel),
    ("sk-", Anchor::OpenAi),
    ("sk-ant-", Anchor::Anthropic),
    ("ghp_", Anchor::GitHub),
    ("gho_", Anchor::GitHub),
    ("ghu_", Anchor::GitHub),
    ("ghs_", Anchor::GitHub),
    ("ghr_", Anchor::GitHub),
    ("github_pat_", Anchor::GitHubPat),
    ("xoxb-", Anchor::Slack),
    ("xoxp-", Anchor::Slack),
    ("xoxa-", Anchor::Slack),
    ("xoxr-", Anchor::Slack),
    ("xoxs-", Anchor::Slack),
    ("xapp-", Anchor::Slack),
    ("hooks.slack.com/services/", Anchor::SlackWebhook),
    ("\"service_account\"", Anchor::ServiceAccount),
    ("-----BEGIN ", Anchor::Pem),
];

/// A detector, built once (the automaton) and used for any number of files, from any thread.
pub struct Detector {
    anchors: AhoCorasick,
}

impl Default for Detector {
    fn default() -> Self {
        Self::new()
    }
}

impl Detector {
    pub fn new() -> Self {
        let anchors = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(ANCHORS.iter().map(|(text, _)| text))
            .expect("the anchors are a handful of short literals");
        Self { anchors }
    }

    /// Every secret in `content`, in order of position. A secret found by two routes (an AWS
    /// secret key both labelled and next to its key id) is reported once; a private key inside
    /// a service-account file is reported as the service account.
    pub fn scan(&self, content: &[u8]) -> Vec<SecretMatch> {
        let mut found: Vec<(SecretType, Range<usize>)> = Vec::new();
        let mut memo = Memo::default();
        for anchor in self.anchors.find_overlapping_iter(content) {
            let at = anchor.start();
            let hit = match ANCHORS[anchor.pattern().as_usize()].1 {
                Anchor::Custos => custos(content, at),
                Anchor::Aws => {
                    let id = aws_key_id(content, at);
                    if let Some((_, id_range)) = &id {
                        found.extend(aws_secret_near(content, id_range.end));
                    }
                    id
                }
                Anchor::AwsSecretLabel => aws_secret_labelled(content, anchor.end()),
                Anchor::OpenAi => openai(content, at),
                Anchor::Anthropic => anthropic(content, at),
                Anchor::GitHub => github_classic(content, at),
                Anchor::GitHubPat => github_fine_grained(content, at),
                Anchor::Slack => slack_token(content, at),
                Anchor::SlackWebhook => slack_webhook(content, at),
                Anchor::ServiceAccount => service_account(content, at, anchor.end(), &mut memo),
                Anchor::Pem => pem(content, at, &mut memo),
            };
            found.extend(hit);
        }
        found.sort_by_key(|(kind, range)| (range.start, range.end, *kind));
        found.dedup();
        // A private key is dropped when some service account starts at or before it and ends
        // at or after it. Both come sorted by start, so one walk over the accounts, keeping the
        // furthest end of those started so far, answers every key (not every pair).
        let accounts: Vec<Range<usize>> = found
            .iter()
            .filter(|(kind, _)| *kind == SecretType::GoogleServiceAccount)
            .map(|(_, range)| range.clone())
            .collect();
        let mut started = 0;
        let mut reach: Option<usize> = None;
        found.retain(|(kind, range)| {
            if *kind != SecretType::PrivateKey {
                return true;
            }
            while let Some(outer) = accounts.get(started).filter(|o| o.start <= range.start) {
                reach = reach.max(Some(outer.end));
                started += 1;
            }
            reach.is_none_or(|end| range.end > end)
        });

        let mut lines = LineCounter::default();
        found
            .into_iter()
            .map(|(kind, range)| {
                let (line, column) = lines.position(content, range.start);
                let secret = &content[range.clone()];
                SecretMatch {
                    kind,
                    line,
                    column,
                    preview: preview(kind, secret),
                    secret_sha256: secret_sha256(secret),
                    range,
                }
            })
            .collect()
    }
}

/// Turns byte offsets into line and column, moving forward only (matches come sorted), so the
/// whole file's newlines are counted once.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    line: usize,
    line_start: usize,
}

impl LineCounter {
    fn position(&mut self, content: &[u8], at: usize) -> (usize, usize) {
        for newline in memchr::memchr_iter(b'\n', &content[self.offset..at]) {
            self.line += 1;
            self.line_start = self.offset + newline + 1;
        }
        self.offset = at;
        (self.line + 1, at - self.line_start + 1)
    }
}

fn preview(kind: SecretType, secret: &[u8]) -> String {
    // A PEM block's first line names its kind and holds nothing secret; of everything else
    // show six characters, which for prefixed keys is mostly the prefix.
    let shown = match kind {
        SecretType::PrivateKey => secret
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .map_or(secret, |end| &secret[..end]),
        _ => &secret[..secret.len().min(6)],
    };
    format!("{}…", String::from_utf8_lossy(shown))
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Nothing of the token's own alphabet right before it.
fn starts_word(content: &[u8], at: usize, alphabet: fn(u8) -> bool) -> bool {
    at == 0 || !alphabet(content[at - 1])
}

/// How many bytes from `from` are in `alphabet`, reading at most `max + 1` (enough to tell a
/// run longer than `max`).
fn run(content: &[u8], from: usize, max: usize, alphabet: fn(u8) -> bool) -> usize {
    content[from.min(content.len())..]
        .iter()
        .take(max + 1)
        .take_while(|&&b| alphabet(b))
        .count()
}

fn has_prefix(content: &[u8], at: usize, prefix: &str) -> bool {
    content[at..].starts_with(prefix.as_bytes())
}

/// How many times each byte value occurs in `text`.
fn byte_counts(text: &[u8]) -> [u32; 256] {
    let mut counts = [0u32; 256];
    for &b in text {
        counts[usize::from(b)] += 1;
    }
    counts
}

/// Shannon entropy in bits per byte.
fn entropy(text: &[u8]) -> f64 {
    entropy_of(&byte_counts(text), text.len())
}

/// Shannon entropy in bits per byte of a text of `len` bytes with these byte counts.
fn entropy_of(counts: &[u32; 256], len: usize) -> f64 {
    let len = len as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

type Hit = Option<(SecretType, Range<usize>)>;

fn custos(content: &[u8], at: usize) -> Hit {
    let kind = SecretKind::ALL
        .into_iter()
        .find(|k| has_prefix(content, at, k.prefix()))?;
    if !starts_word(content, at, |b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let len = kind.prefix().len() + token::BODY_LEN + token::CHECKSUM_LEN;
    let body = run(content, at + kind.prefix().len(), len, |b| {
        b.is_ascii_alphanumeric()
    });
    if body != token::BODY_LEN + token::CHECKSUM_LEN {
        return None;
    }
    let secret = std::str::from_utf8(&content[at..at + len]).ok()?;
    token::classify(secret).ok()?;
    let kind = match kind {
        SecretKind::StaticKey => SecretType::CustosStaticKey,
        SecretKind::Operator => SecretType::CustosOperatorToken,
    };
    Some((kind, at..at + len))
}

fn is_base32_upper(b: u8) -> bool {
    b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)
}

fn aws_key_id(content: &[u8], at: usize) -> Hit {
    if !(has_prefix(content, at, "AKIA") || has_prefix(content, at, "ASIA"))
        || !starts_word(content, at, |b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    // AWS key ids are base32 upper case, but documentation and real keys alike also show
    // `0`, `1`, `8` and `9`; read them as alphanumerics and insist on the length.
    let body = run(content, at + 4, 16, |b| {
        b.is_ascii_uppercase() || b.is_ascii_digit()
    });
    let end = at + 4 + body;
    if body != 16 || content.get(end).is_some_and(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let id = &content[at..end];
    if id.ends_with(b"EXAMPLE") || !id[4..].iter().any(|&b| is_base32_upper(b)) {
        return None;
    }
    Some((SecretType::AwsAccessKeyId, at..end))
}

fn is_aws_secret_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'/' || b == b'+'
}

/// A standalone 40-character AWS secret key at `at`: the right alphabet, not part of a longer
/// run, upper and lower case and a digit, and random-looking.
fn aws_secret_at(content: &[u8], at: usize) -> Hit {
    if !starts_word(content, at, is_aws_secret_char) {
        return None;
    }
    let len = run(content, at, 40, is_aws_secret_char);
    if len != 40 {
        return None;
    }
    let secret = &content[at..at + 40];
    let mixed = secret.iter().any(u8::is_ascii_uppercase)
        && secret.iter().any(u8::is_ascii_lowercase)
        && secret.iter().any(u8::is_ascii_digit);
    if !mixed || entropy(secret) < 4.0 || secret.ends_with(b"EXAMPLEKEY") {
        return None;
    }
    Some((SecretType::AwsSecretAccessKey, at..at + 40))
}

/// After `aws_secret_access_key` (any case): an optional closing quote, `=`, `:` or spaces,
/// an optional opening quote, then the key.
fn aws_secret_labelled(content: &[u8], label_end: usize) -> Hit {
    let gap = content[label_end..]
        .iter()
        .take(8)
        .take_while(|&&b| matches!(b, b' ' | b'\t' | b'=' | b':' | b'"' | b'\''))
        .count();
    if gap == 0 {
        return None;
    }
    aws_secret_at(content, label_end + gap)
}

/// The first standalone AWS secret key within a short window after a key id: the pair is
/// usually written together (`credentials` files, `.env`s, JSON), often without a label the
/// label rule would see.
fn aws_secret_near(content: &[u8], from: usize) -> Hit {
    let end = (from + AWS_PAIR_WINDOW).min(content.len());
    let mut at = from;
    while at < end {
        if is_aws_secret_char(content[at]) && starts_word(content, at, is_aws_secret_char) {
            if let Some(hit) = aws_secret_at(content, at) {
                return Some(hit);
            }
            at += run(content, at, end - at, is_aws_secret_char).max(1);
        } else {
            at += 1;
        }
    }
    None
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A key that has no checksum: a body of at least `min` token characters that looks random
/// (several distinct characters, and entropy above the placeholder floor).
fn random_body(content: &[u8], from: usize, min: usize, max: usize) -> Option<usize> {
    let len = run(content, from, max, is_token_char);
    if len < min || len > max {
        return None;
    }
    let body = &content[from..from + len];
    let distinct = {
        let mut seen = [false; 256];
        body.iter().for_each(|&b| seen[usize::from(b)] = true);
        seen.iter().filter(|&&s| s).count()
    };
    (distinct >= 10 && entropy(body) >= MIN_ENTROPY).then_some(len)
}

/// `sk-` keys: legacy (`sk-` and 48 alphanumerics) and project, service-account and admin
/// keys (`sk-proj-`, `sk-svcacct-`, `sk-admin-`), which are longer and carry `-` and `_`.
fn openai(content: &[u8], at: usize) -> Hit {
    if !has_prefix(content, at, "sk-")
        || has_prefix(content, at, "sk-ant-")
        || !starts_word(content, at, is_token_char)
    {
        return None;
    }
    let len = random_body(content, at + 3, 32, 400)?;
    Some((SecretType::OpenaiApiKey, at..at + 3 + len))
}

fn anthropic(content: &[u8], at: usize) -> Hit {
    let prefix = ["sk-ant-api03-", "sk-ant-admin01-"]
        .into_iter()
        .find(|p| has_prefix(content, at, p))?;
    if !starts_word(content, at, is_token_char) {
        return None;
    }
    let len = random_body(content, at + prefix.len(), 32, 400)?;
    Some((SecretType::AnthropicApiKey, at..at + prefix.len() + len))
}

/// The 6-character base62 CRC32 that GitHub appends to the 30 random characters of its
/// classic tokens (the same alphabet and padding as Custos's own checksum).
fn github_checksum(random: &[u8]) -> String {
    token::base62_fixed(&crc32fast::hash(random).to_be_bytes(), 6)
}

fn github_classic(content: &[u8], at: usize) -> Hit {
    let prefix = &content[at..at + 4];
    if !matches!(prefix, b"ghp_" | b"gho_" | b"ghu_" | b"ghs_" | b"ghr_")
        || !starts_word(content, at, is_word)
    {
        return None;
    }
    let len = run(content, at + 4, 36, |b| b.is_ascii_alphanumeric());
    let end = at + 4 + len;
    if len != 36 || content.get(end).is_some_and(|&b| is_word(b)) {
        return None;
    }
    let (random, sum) = content[at + 4..end].split_at(30);
    (github_checksum(random).as_bytes() == sum).then_some((SecretType::GithubToken, at..end))
}

/// `github_pat_`, 22 alphanumerics, `_`, 59 alphanumerics. No public checksum.
fn github_fine_grained(content: &[u8], at: usize) -> Hit {
    if !has_prefix(content, at, "github_pat_") || !starts_word(content, at, is_word) {
        return None;
    }
    let from = at + "github_pat_".len();
    let len = run(content, from, 82, is_word);
    let body = &content[from..from + len];
    if len != 82 || body[22] != b'_' || body.iter().filter(|&&b| b == b'_').count() != 1 {
        return None;
    }
    (entropy(body) >= 4.0).then_some((SecretType::GithubToken, at..from + 82))
}

/// `xoxb-` (bot), `xoxp-` (user), `xoxa-`, `xoxr-` (refresh), `xoxs-`, and `xapp-` (app-level)
/// tokens: numeric team and user parts and a random tail, separated by `-`.
fn slack_token(content: &[u8], at: usize) -> Hit {
    let prefix = &content[at..at + 5];
    if !matches!(
        prefix,
        b"xoxb-" | b"xoxp-" | b"xoxa-" | b"xoxr-" | b"xoxs-" | b"xapp-"
    ) || !starts_word(content, at, is_token_char)
    {
        return None;
    }
    let len = run(content, at + 5, 300, |b| {
        b.is_ascii_alphanumeric() || b == b'-'
    });
    let body = &content[at + 5..at + 5 + len];
    let has_number_part = body
        .split(|&b| b == b'-')
        .any(|part| part.len() >= 3 && part.iter().all(u8::is_ascii_digit));
    if !(20..=300).contains(&len) || !has_number_part || entropy(body) < MIN_ENTROPY {
        return None;
    }
    Some((SecretType::SlackToken, at..at + 5 + len))
}

/// `hooks.slack.com/services/T…/B…/…`; the secret is the URL from its host on, so that the
/// same hook written with or without `https://` is one secret.
fn slack_webhook(content: &[u8], at: usize) -> Hit {
    let from = at + "hooks.slack.com/services/".len();
    if !has_prefix(content, at, "hooks.slack.com/services/") {
        return None;
    }
    let len = run(content, from, 200, |b| {
        b.is_ascii_alphanumeric() || b == b'/'
    });
    let path = &content[from..from + len];
    let mut parts = path.split(|&b| b == b'/');
    let (Some(team), Some(channel), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let shaped = team.len() >= 8
        && team[0] == b'T'
        && channel.len() >= 8
        && channel[0] == b'B'
        && secret.len() >= 20
        && entropy(secret) >= MIN_ENTROPY;
    shaped.then_some((SecretType::SlackToken, at..from + len))
}

fn skip_space(content: &[u8], mut at: usize) -> usize {
    while content.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

fn skip_space_back(content: &[u8], mut at: usize) -> usize {
    while at > 0 && content[at - 1].is_ascii_whitespace() {
        at -= 1;
    }
    at
}

/// The value of `"service_account"` preceded by `"type":`, and a `"private_key": "-----BEGIN …"`
/// in the same object (searched within [`MAX_BLOCK`] either side, not across a `}` that ends
/// the object). The secret is the private key's JSON string, as written.
///
/// The object's bounds and the key in them come from `memo`, so that a file repeating the
/// anchor does not have every occurrence search the same 64 KiB again.
fn service_account(content: &[u8], at: usize, end: usize, memo: &mut Memo) -> Hit {
    if !has_prefix(content, at, "\"service_account\"") {
        return None;
    }
    let colon = skip_space_back(content, at);
    if colon == 0 || content[colon - 1] != b':' {
        return None;
    }
    let label_end = skip_space_back(content, colon - 1);
    if !content[..label_end].ends_with(b"\"type\"") {
        return None;
    }
    let lo = at.saturating_sub(MAX_BLOCK);
    let hi = (end + MAX_BLOCK).min(content.len());
    // The object's bounds: the last `{` before the anchor and the first `}` after it that no
    // string holds; a PEM value in JSON holds neither brace.
    let open = memo.open_brace.last(content, b'{', lo..at)?;
    let close = memo.close_brace.first(content, b'}', end..hi).unwrap_or(hi);
    let value = memo
        .key_labels
        .get_or_insert_with(|| KeyLabels::new(content))
        .value_in(open..close)?;
    Some((SecretType::GoogleServiceAccount, value))
}

const KEY_LABEL: &[u8] = b"\"private_key\"";

/// Every `"private_key"` of a file, with the JSON string it introduces, for
/// [`service_account`]: built in one pass on the file's first service-account anchor, then
/// asked for any object's bounds in O(log n).
///
/// What it answers is what searching the object's bounds `open..close` label by label finds
/// (`memmem`'s non-overlapping matches from `open`; each label followed by `:`, a string
/// opening with `-----BEGIN `, and that string's closing quote before `close`), by two facts:
///
/// - Only the first label that opens such a string can give the answer: its string ends, at the
///   latest, at the closing quote of the next label in the file (a label is a quote and eleven
///   characters without a backslash, so a string cannot run past it), so every later string
///   closes later, and if the first does not close before `close`, none does.
/// - Labels overlap by at most their quote (`"private_key"private_key"`), and a label followed
///   by another cannot be followed by `:`; from each label, the first usable label of the chain
///   of non-overlapping matches that starts there is computed once, back to front.
struct KeyLabels {
    /// Where each label starts, in order, overlapping ones included.
    at: Vec<usize>,
    /// For each label, the index in `values` of the first label that opens a string among the
    /// non-overlapping matches from it on, or `NONE`.
    first_value: Vec<usize>,
    /// The labels that open a string: the label's start, the string's first character and its
    /// closing quote, if it has one.
    values: Vec<(usize, usize, Option<usize>)>,
}

const NONE: usize = usize::MAX;

impl KeyLabels {
    fn new(content: &[u8]) -> Self {
        let finder = memchr::memmem::Finder::new(KEY_LABEL);
        let mut at = Vec::new();
        let mut from = 0;
        while let Some(found) = finder.find(&content[from..]) {
            at.push(from + found);
            from += found + 1;
        }
        let mut first_value = vec![NONE; at.len()];
        let mut values = Vec::new();
        for (i, &label) in at.iter().enumerate() {
            if let Some(start) = string_after_label(content, label) {
                first_value[i] = values.len();
                values.push((label, start, closing_quote(content, start)));
            }
        }
        for i in (0..at.len()).rev() {
            if first_value[i] == NONE {
                let next = at[i + 1..]
                    .iter()
                    .position(|&label| label >= at[i] + KEY_LABEL.len())
                    .map(|k| i + 1 + k);
                first_value[i] = next.map_or(NONE, |k| first_value[k]);
            }
        }
        Self {
            at,
            first_value,
            values,
        }
    }

    /// The private key's string within `bounds`, as the label-by-label search finds it.
    fn value_in(&self, bounds: Range<usize>) -> Option<Range<usize>> {
        let first = self.at.partition_point(|&label| label < bounds.start);
        let &(label, start, quote) = self.values.get(*self.first_value.get(first)?)?;
        let quote = quote?;
        (label + KEY_LABEL.len() <= bounds.end && quote < bounds.end).then_some(start..quote)
    }
}

/// After a `"private_key"` at `label`: spaces, `:`, spaces, and a string whose text opens with
/// `-----BEGIN `; where that text starts.
fn string_after_label(content: &[u8], label: usize) -> Option<usize> {
    let mut value = skip_space(content, label + KEY_LABEL.len());
    if content.get(value) != Some(&b':') {
        return None;
    }
    value = skip_space(content, value + 1);
    if content.get(value) != Some(&b'"') || !has_prefix(content, value + 1, "-----BEGIN ") {
        return None;
    }
    Some(value + 1)
}

/// The quote that ends a JSON string whose text starts at `start`, stepping over escapes.
fn closing_quote(content: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    while i < content.len() {
        match content[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// `-----BEGIN <label>-----` where the label ends in `PRIVATE KEY`, a body of at least 64
/// base64 characters (a placeholder `...` is not a key) and the matching `-----END <label>-----`
/// within [`MAX_BLOCK`]. The body may be written with real or escaped (`\n`) newlines.
///
/// The end marker and the body's byte counts come from `memo`, so that a file repeating the
/// anchor does not have every occurrence search or count the same 64 KiB again.
fn pem<'a>(content: &'a [u8], at: usize, memo: &mut Memo<'a>) -> Hit {
    let label_start = at + "-----BEGIN ".len();
    if !has_prefix(content, at, "-----BEGIN ") {
        return None;
    }
    let label_len = run(content, label_start, 40, |b| {
        b.is_ascii_uppercase() || b == b' '
    });
    let label = &content[label_start..label_start + label_len];
    if label_len > 40
        || !label.ends_with(b"PRIVATE KEY")
        || !has_prefix(content, label_start + label_len, "-----")
    {
        return None;
    }
    let body_start = label_start + label_len + 5;
    let hi = (body_start + MAX_BLOCK).min(content.len());
    let end_marker_len = END.len() + label_len + 5;
    // The first end marker from the body on, if it ends within the window.
    let ends = memo
        .end_markers
        .get_or_insert_with(|| end_markers(content))
        .get(label)?;
    let end = *ends.get(ends.partition_point(|&end| end < body_start))?;
    if end + end_marker_len > hi {
        return None;
    }
    let body = body_start..end;
    let counts = memo.counts.of(content, body.clone());
    let base64: u32 = (0..=u8::MAX)
        .filter(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        .map(|b| counts[usize::from(b)])
        .sum();
    if base64 < 64 || entropy_of(&counts, body.len()) < 4.0 {
        return None;
    }
    Some((SecretType::PrivateKey, at..end + end_marker_len))
}

const END: &[u8] = b"-----END ";

/// Where every `-----END <label>-----` of a file starts, by label, for the labels a private key
/// can have. The label is the whole run of capitals and spaces after `-----END `, so a marker
/// `-----END <label>-----` occurs exactly where this lists it under `<label>`.
fn end_markers(content: &[u8]) -> HashMap<&[u8], Vec<usize>> {
    let mut by_label: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for end in memchr::memmem::find_iter(content, END) {
        let label_start = end + END.len();
        let label_len = run(content, label_start, 40, |b| {
            b.is_ascii_uppercase() || b == b' '
        });
        let label = &content[label_start..label_start + label_len];
        if label_len <= 40
            && label.ends_with(b"PRIVATE KEY")
            && has_prefix(content, label_start + label_len, "-----")
        {
            by_label.entry(label).or_default().push(end);
        }
    }
    by_label
}

/// What the checks remember between the anchors of one file, so that each of the large windows
/// ([`MAX_BLOCK`]) is not searched again for every anchor in it. Anchors come in order, so the
/// brace searches resume where the last one stopped; the rest is built for the whole file on
/// the first anchor that needs it.
#[derive(Default)]
struct Memo<'a> {
    open_brace: LastByte,
    close_brace: FirstByte,
    key_labels: Option<KeyLabels>,
    end_markers: Option<HashMap<&'a [u8], Vec<usize>>>,
    counts: RangeCounts,
}

/// The last occurrence of a byte (always the same one) in a range. Each byte of the file is
/// searched once while the ranges' ends only move forward; a range that moves back starts the
/// search over, so the answer is right for any range.
#[derive(Default)]
struct LastByte {
    /// Searched up to here (exclusive).
    searched: usize,
    /// The start of the last range: what lies below it was not necessarily searched.
    floor: usize,
    /// The last occurrence before `searched`, except that none below `floor` is remembered.
    last: Option<usize>,
}

impl LastByte {
    fn last(&mut self, content: &[u8], byte: u8, range: Range<usize>) -> Option<usize> {
        if range.end < self.searched || range.start < self.floor {
            *self = Self::default();
        }
        let from = self.searched.max(range.start);
        if let Some(found) = memchr::memrchr(byte, &content[from..range.end]) {
            self.last = Some(from + found);
        }
        self.searched = range.end;
        self.floor = range.start;
        self.last.filter(|&last| last >= range.start)
    }
}

/// The first occurrence of a byte (always the same one) in a range. Each byte of the file is
/// searched once while the ranges' ends only move forward; a range that moves back starts the
/// search over, so the answer is right for any range.
#[derive(Default)]
struct FirstByte {
    /// The start of the last range asked about.
    from: usize,
    /// Searched from `from` up to here (exclusive).
    searched: usize,
    /// The first occurrence from `from` on, if the search found one (then it stopped there).
    first: Option<usize>,
}

impl FirstByte {
    fn first(&mut self, content: &[u8], byte: u8, range: Range<usize>) -> Option<usize> {
        if range.start < self.from {
            *self = Self::default();
        }
        if let Some(first) = self.first.filter(|&first| first >= range.start) {
            return (first < range.end).then_some(first);
        }
        let from = self.searched.max(range.start);
        self.from = range.start;
        if from >= range.end {
            return None;
        }
        self.first = memchr::memchr(byte, &content[from..range.end]).map(|found| from + found);
        self.searched = self.first.map_or(range.end, |first| first + 1);
        self.first
    }
}

/// How far apart the running byte counts of [`RangeCounts`] are kept.
const STRIDE: usize = 1024;

/// Byte counts of ranges of one file. A short range is counted directly; for a long one the
/// counts of the file up to every [`STRIDE`]th byte are kept (built as far as asked), and the
/// range's counts are the difference of those at its ends, so that nested ranges (a PEM block
/// begun inside another's body) do not have every byte counted once per range.
#[derive(Default)]
struct RangeCounts {
    /// `kept[k]`: the counts of the file's first `k * STRIDE` bytes.
    kept: Vec<[u32; 256]>,
}

impl RangeCounts {
    fn of(&mut self, content: &[u8], range: Range<usize>) -> [u32; 256] {
        if range.len() <= STRIDE {
            return byte_counts(&content[range]);
        }
        let end = self.up_to(content, range.end);
        let start = self.up_to(content, range.start);
        std::array::from_fn(|b| end[b] - start[b])
    }

    /// The counts of `content[..at]`, from the nearest kept counts within the file.
    fn up_to(&mut self, content: &[u8], at: usize) -> [u32; 256] {
        let below = at / STRIDE;
        let above = below + 1;
        if at % STRIDE > STRIDE / 2 && above * STRIDE <= content.len() {
            let mut counts = *self.kept(content, above);
            for &b in &content[at..above * STRIDE] {
                counts[usize::from(b)] -= 1;
            }
            counts
        } else {
            let mut counts = *self.kept(content, below);
            for &b in &content[below * STRIDE..at] {
                counts[usize::from(b)] += 1;
            }
            counts
        }
    }

    fn kept(&mut self, content: &[u8], k: usize) -> &[u32; 256] {
        if self.kept.is_empty() {
            self.kept.push([0; 256]);
        }
        while self.kept.len() <= k {
            let done = self.kept.len() - 1;
            let mut counts = self.kept[done];
            for &b in &content[done * STRIDE..(done + 1) * STRIDE] {
                counts[usize::from(b)] += 1;
            }
            self.kept.push(counts);
        }
        &self.kept[k]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_counter_counts_from_one() {
        let text = b"a\nbc\n\nxyz";
        let mut lines = LineCounter::default();
        assert_eq!(lines.position(text, 0), (1, 1));
        assert_eq!(lines.position(text, 3), (2, 2));
        assert_eq!(lines.position(text, 8), (4, 3));
    }

    proptest::proptest! {
        /// Counts from the kept running counts are the counts of the range, however the
        /// ranges come.
        #[test]
        fn range_counts_are_the_counts_of_the_range(
            content in proptest::collection::vec(proptest::sample::select(b"ab\n".to_vec()), 0..5000),
            ranges in proptest::collection::vec((0..5000usize, 0..5000usize), 1..20),
        ) {
            let mut counts = RangeCounts::default();
            for (a, b) in ranges {
                let (a, b) = (a.min(content.len()), b.min(content.len()));
                let range = a.min(b)..a.max(b);
                proptest::prop_assert_eq!(counts.of(&content, range.clone()), byte_counts(&content[range]));
            }
        }

        /// The brace searches answer any sequence of ranges as a plain search would, not only
        /// the forward-moving ones the detector asks.
        #[test]
        fn byte_searches_answer_any_ranges(
            content in proptest::collection::vec(proptest::sample::select(b"{}x".to_vec()), 0..300),
            ranges in proptest::collection::vec((0..300usize, 0..300usize), 1..30),
        ) {
            let mut last = LastByte::default();
            let mut first = FirstByte::default();
            for (a, b) in ranges {
                let (a, b) = (a.min(content.len()), b.min(content.len()));
                let range = a.min(b)..a.max(b);
                let plain_last = content[range.clone()].iter().rposition(|&b| b == b'{').map(|p| range.start + p);
                let plain_first = content[range.clone()].iter().position(|&b| b == b'}').map(|p| range.start + p);
                proptest::prop_assert_eq!(last.last(&content, b'{', range.clone()), plain_last);
                proptest::prop_assert_eq!(first.first(&content, b'}', range), plain_first);
            }
        }
    }

    #[test]
    fn github_checksum_is_six_base62_characters() {
        assert_eq!(github_checksum(b"").len(), 6);
        assert_eq!(github_checksum(b""), "000000");
    }
}

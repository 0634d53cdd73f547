//! The secret detector's two large windows (64 KiB): the object around a service-account
//! anchor and the body after a PEM begin line. The detector answers them from what it
//! remembers between anchors; here its findings are compared, finding for finding, with the
//! obvious search that every anchor once made over its own window (`reference`, below), on
//! generated files and on the window's edges, and the files built to be expensive (the same
//! anchor repeated) are scanned whole.

use std::ops::Range;

use custos_core::discovery::secrets::{Detector, SecretMatch, SecretType, secret_sha256};
use proptest::prelude::*;

/// The detector's `MAX_BLOCK`.
const WINDOW: usize = 64 * 1024;

const PEM_BODY: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7V2m5Yx1Kq9R\nZt4Lw8Nc3Pf6Hd0Js2Ga7Ub5Ve1Xo9Ti4Qr8Wm3Ky6Cn0Bl2Dh7Fp5Gz1Aq4Es8Iu\n";

type Found = Vec<(SecretType, Range<usize>)>;

/// The service-account and private-key findings of `Detector::scan`, in its order.
fn scanned(content: &[u8]) -> Found {
    let found = Detector::new().scan(content);
    check(content, &found);
    found
        .into_iter()
        .filter(|m| {
            matches!(
                m.kind,
                SecretType::GoogleServiceAccount | SecretType::PrivateKey
            )
        })
        .map(|m| (m.kind, m.range))
        .collect()
}

/// What every finding must satisfy whatever the input.
fn check(content: &[u8], found: &[SecretMatch]) {
    let mut last = (0, 0);
    for m in found {
        assert!(m.range.start < m.range.end && m.range.end <= content.len());
        assert!((m.range.start, m.range.end) >= last, "sorted by position");
        last = (m.range.start, m.range.end);
        assert_eq!(m.secret_sha256, secret_sha256(&content[m.range.clone()]));
        let secret = &content[m.range.clone()];
        match m.kind {
            SecretType::PrivateKey => {
                assert!(secret.starts_with(b"-----BEGIN ") && secret.ends_with(b"-----"));
                assert!(m.range.len() <= WINDOW + 2 * 64, "{:?}", m.range);
            }
            SecretType::GoogleServiceAccount => {
                assert!(secret.starts_with(b"-----BEGIN "));
                assert_eq!(content[m.range.start - 1], b'"');
                assert_eq!(content[m.range.end], b'"');
            }
            _ => {}
        }
    }
}

/// The service-account and private-key findings as every anchor once searched its own window:
/// slow on a file that repeats an anchor, and obviously what the detector means.
fn reference(content: &[u8]) -> Found {
    let mut found = Found::new();
    for at in 0..content.len() {
        let rest = &content[at..];
        if rest.starts_with(b"\"service_account\"") {
            found.extend(service_account(
                content,
                at,
                at + "\"service_account\"".len(),
            ));
        }
        if rest.starts_with(b"-----BEGIN ") {
            found.extend(pem(content, at));
        }
    }
    found.sort_by_key(|(kind, range)| (range.start, range.end, *kind));
    found.dedup();
    let accounts: Vec<Range<usize>> = found
        .iter()
        .filter(|(kind, _)| *kind == SecretType::GoogleServiceAccount)
        .map(|(_, range)| range.clone())
        .collect();
    found.retain(|(kind, range)| {
        *kind != SecretType::PrivateKey
            || !accounts
                .iter()
                .any(|outer| outer.start <= range.start && range.end <= outer.end)
    });
    found
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

fn entropy(text: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in text {
        counts[usize::from(b)] += 1;
    }
    let len = text.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

fn service_account(content: &[u8], at: usize, end: usize) -> Option<(SecretType, Range<usize>)> {
    let colon = skip_space_back(content, at);
    if colon == 0 || content[colon - 1] != b':' {
        return None;
    }
    let label_end = skip_space_back(content, colon - 1);
    if !content[..label_end].ends_with(b"\"type\"") {
        return None;
    }
    let lo = at.saturating_sub(WINDOW);
    let hi = (end + WINDOW).min(content.len());
    let open = content[lo..at].iter().rposition(|&b| b == b'{')? + lo;
    let close = content[end..hi]
        .iter()
        .position(|&b| b == b'}')
        .map_or(hi, |p| end + p);
    let finder = memchr::memmem::Finder::new(b"\"private_key\"");
    for label in finder.find_iter(&content[open..close]) {
        let mut value = skip_space(content, open + label + "\"private_key\"".len());
        if content.get(value) != Some(&b':') {
            continue;
        }
        value = skip_space(content, value + 1);
        if content.get(value) != Some(&b'"') || !content[value + 1..].starts_with(b"-----BEGIN ") {
            continue;
        }
        let start = value + 1;
        let mut i = start;
        while i < close {
            match content[i] {
                b'\\' => i += 2,
                b'"' => return Some((SecretType::GoogleServiceAccount, start..i)),
                _ => i += 1,
            }
        }
    }
    None
}

fn pem(content: &[u8], at: usize) -> Option<(SecretType, Range<usize>)> {
    let label_start = at + "-----BEGIN ".len();
    let label_len = content[label_start..]
        .iter()
        .take(41)
        .take_while(|&&b| b.is_ascii_uppercase() || b == b' ')
        .count();
    let label = &content[label_start..label_start + label_len];
    if label_len > 40
        || !label.ends_with(b"PRIVATE KEY")
        || !content[label_start + label_len..].starts_with(b"-----")
    {
        return None;
    }
    let body_start = label_start + label_len + 5;
    let hi = (body_start + WINDOW).min(content.len());
    let mut end_marker = b"-----END ".to_vec();
    end_marker.extend_from_slice(label);
    end_marker.extend_from_slice(b"-----");
    let body_len = memchr::memmem::find(&content[body_start..hi], &end_marker)?;
    let body = &content[body_start..body_start + body_len];
    let base64 = body
        .iter()
        .filter(|&&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        .count();
    if base64 < 64 || entropy(body) < 4.0 {
        return None;
    }
    Some((
        SecretType::PrivateKey,
        at..body_start + body_len + end_marker.len(),
    ))
}

fn assert_same(content: &[u8]) -> Found {
    let found = scanned(content);
    assert_eq!(found, reference(content));
    found
}

/// A service-account file whose key is `body` (JSON-escaped newlines).
fn account(body: &str) -> String {
    let escaped = body.replace('\n', "\\n");
    format!(
        "{{\n  \"type\": \"service_account\",\n  \"private_key\": \
         \"-----BEGIN PRIVATE KEY-----\\n{escaped}-----END PRIVATE KEY-----\\n\",\n  \
         \"client_email\": \"ci@demo.iam.gserviceaccount.com\"\n}}\n"
    )
}

fn pem_block(label: &str, body: &str) -> String {
    format!("-----BEGIN {label}-----\n{body}-----END {label}-----\n")
}

/// Random base64 lines, so that a body of any length passes the entropy floor.
fn base64_lines(len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = seed | 1;
    let mut out = String::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let c = if out.len() % 65 == 64 {
            '\n'
        } else {
            ALPHABET[(state % 64) as usize] as char
        };
        out.push(c);
    }
    out
}

#[test]
fn windows_a_planted_account_and_key_are_found_as_before() {
    let text = format!(
        "{}\n{}{}",
        account(PEM_BODY),
        pem_block("RSA PRIVATE KEY", PEM_BODY),
        account(PEM_BODY)
    );
    let found = assert_same(text.as_bytes());
    assert_eq!(
        found.iter().map(|(kind, _)| *kind).collect::<Vec<_>>(),
        [
            SecretType::GoogleServiceAccount,
            SecretType::PrivateKey,
            SecretType::GoogleServiceAccount
        ]
    );
}

/// The end marker must end within 64 KiB of the body's start: found when it ends exactly
/// there, not one byte further.
#[test]
fn windows_pem_end_marker_at_the_edge() {
    let begin = "-----BEGIN PRIVATE KEY-----";
    let end = "-----END PRIVATE KEY-----";
    for (extra, expected) in [(0, 1), (1, 0)] {
        let body = base64_lines(WINDOW - end.len() + extra, 7);
        let text = format!("x{begin}{body}{end}\n");
        assert_eq!(assert_same(text.as_bytes()).len(), expected, "{extra}");
    }
    // A later marker is past the edge too when the first one is: still nothing.
    let body = base64_lines(WINDOW - end.len() + 1, 7);
    let text = format!("{begin}{body}{end}{end}");
    assert!(assert_same(text.as_bytes()).is_empty());
}

/// The object's `{` may be up to 64 KiB before the `"service_account"` anchor, its `}` up to
/// 64 KiB after, and the key's closing quote must come before either bound. Out of bounds,
/// the key in the string is still a PEM private key.
#[test]
fn windows_service_account_bounds_at_the_edge() {
    let anchor = "\"type\": \"service_account\"";
    let key = format!(
        "\"private_key\": \"-----BEGIN PRIVATE KEY-----\\n{}-----END PRIVATE KEY-----\\n\"",
        PEM_BODY.replace('\n', "\\n")
    );
    let kind = |text: &str| {
        let found = assert_same(text.as_bytes());
        assert_eq!(found.len(), 1);
        found[0].0
    };
    // `{` exactly 64 KiB before the anchor (which starts 8 bytes into `anchor`), then one
    // byte further.
    for (gap, expected) in [
        (WINDOW - 9, SecretType::GoogleServiceAccount),
        (WINDOW - 8, SecretType::PrivateKey),
    ] {
        let text = format!("{{{}{anchor}, {key}}}", " ".repeat(gap));
        assert_eq!(kind(&text), expected, "{gap}");
    }
    // No `}`: the object ends 64 KiB after the anchor, and the key's closing quote must be
    // before that: it is the last byte of the window, then one byte past it.
    for (shift, expected) in [
        (0, SecretType::GoogleServiceAccount),
        (1, SecretType::PrivateKey),
    ] {
        let pad = WINDOW - key.len() + shift;
        let text = format!("{{{anchor}{}{key}", " ".repeat(pad));
        assert_eq!(kind(&text), expected, "{shift}");
    }
    // A `}` closes the object before the key.
    let text = format!("{{{anchor} }} {key}");
    assert_eq!(kind(&text), SecretType::PrivateKey);
}

/// Several objects one after the other, some without their key, some keys before the type:
/// what each anchor sees depends on its own braces, as before.
#[test]
fn windows_many_objects() {
    let key = format!(
        "\"private_key\": \"-----BEGIN PRIVATE KEY-----\\n{}-----END PRIVATE KEY-----\\n\"",
        PEM_BODY.replace('\n', "\\n")
    );
    let anchor = "\"type\": \"service_account\"";
    let mut text = String::new();
    for i in 0..40 {
        match i % 5 {
            0 => text += &format!("{{{anchor}, {key}}}\n"),
            1 => text += &format!("{{{key}, {anchor}}}\n"),
            2 => text += &format!("{{{anchor}}}\n"),
            3 => text += &format!("{anchor} {{ {key}\n"),
            _ => text += &format!("{{\"private_key\": \"x\", {anchor}, {key}, {anchor}}}\n"),
        }
    }
    assert!(assert_same(text.as_bytes()).len() >= 24);
    // An object without a key, then a key in an object without the type: the first object's
    // `}` ends the search, however far the last search for a `}` went.
    let text = format!("{{{anchor}}}\n{{{anchor}}}\n{{{key}}}\n");
    let start = text.find("-----BEGIN").unwrap();
    let end = text.find("-----END PRIVATE KEY-----").unwrap() + "-----END PRIVATE KEY-----".len();
    assert_eq!(
        assert_same(text.as_bytes()),
        [(SecretType::PrivateKey, start..end)]
    );
}

/// Overlapping labels: `memmem` steps over the second of `"private_key"private_key"`, so
/// which one is read depends on where the object starts.
#[test]
fn windows_overlapping_key_labels() {
    let value = format!(
        ": \"-----BEGIN PRIVATE KEY-----\\n{}-----END PRIVATE KEY-----\\n\"",
        PEM_BODY.replace('\n', "\\n")
    );
    for chain in 1..5 {
        let labels = format!("\"private_key{}\"", "\"private_key".repeat(chain));
        for lead in ["{", "{\"", "{x"] {
            let text = format!("{lead}{labels}{value}, \"type\": \"service_account\"}}");
            assert_same(text.as_bytes());
            let text = format!("{{\"type\": \"service_account\", {labels}{value}}}");
            assert_same(text.as_bytes());
        }
    }
}

/// PEM blocks begun inside other blocks' bodies, under several labels, sharing end markers:
/// every begin line is checked against its own body.
#[test]
fn windows_nested_pem_blocks() {
    let mut text = String::new();
    for i in 0..120u64 {
        let label = ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"][(i % 3) as usize];
        text += &format!("-----BEGIN {label}-----\n");
        text += &base64_lines(40 + (i as usize * 37) % 3000, i);
        if i % 17 == 16 {
            text += "-----END PRIVATE KEY-----\n-----END RSA PRIVATE KEY-----\n";
        }
        if i % 29 == 28 {
            text += "-----END EC PRIVATE KEY-----\n";
        }
    }
    assert!(assert_same(text.as_bytes()).len() > 60);
}

/// The files built to be expensive: the same anchor repeated over 1 MiB. Nothing in them is a
/// secret; what matters is that they are scanned at all in a debug build (each anchor once
/// searched 64 KiB; `benches/secret_scan.rs` times them).
#[test]
fn windows_repeated_anchors_over_a_mebibyte() {
    let size = 1024 * 1024;
    for unit in [
        &b"\"type\":\"service_account\""[..],
        b"-----BEGIN PRIVATE KEY-----",
        b"{\"type\":\"service_account\"",
    ] {
        let file: Vec<u8> = unit.iter().copied().cycle().take(size).collect();
        assert!(
            scanned(&file).is_empty(),
            "{}",
            String::from_utf8_lossy(unit)
        );
    }
    // Every object holds a key whose string closes at the next object's first quote.
    let unit = b"{\"private_key\": \"-----BEGIN PRIVATE KEY-----\\n\"type\": \"service_account\"";
    let file: Vec<u8> = unit.iter().copied().cycle().take(size).collect();
    let found = scanned(&file);
    assert_eq!(found.len(), size / unit.len());
    assert!(
        found
            .iter()
            .all(|(kind, _)| *kind == SecretType::GoogleServiceAccount)
    );
    // Smaller, the same shapes agree with the reference search.
    for unit in [
        &b"\"type\":\"service_account\""[..],
        b"-----BEGIN PRIVATE KEY-----",
        b"{\"type\":\"service_account\"",
        b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSj\n-----END PRIVATE KEY-----\n",
        unit,
    ] {
        let file: Vec<u8> = unit.iter().copied().cycle().take(8 * 1024).collect();
        assert_same(&file);
    }
}

/// Files made of the pieces that matter to the two windows, with long stretches (up to past
/// 64 KiB) now and then, so that windows end inside them.
fn windowed() -> impl Strategy<Value = Vec<u8>> {
    let escaped = PEM_BODY.replace('\n', "\\n");
    let fragments: Vec<String> = vec![
        "{".into(),
        "}".into(),
        "\"type\"".into(),
        ": ".into(),
        "\"service_account\"".into(),
        "\"type\": \"service_account\"".into(),
        "\"private_key\"".into(),
        "\"private_key\": \"".into(),
        "\"private_key".into(),
        "\"private_key\"private_key\"".into(),
        "{\"type\": \"service_account\"}".into(),
        format!(
            "\"private_key\": \"-----BEGIN PRIVATE KEY-----\\n{escaped}-----END PRIVATE KEY-----\\n\""
        ),
        "-----BEGIN ".into(),
        "PRIVATE KEY-----".into(),
        "-----BEGIN PRIVATE KEY-----\n".into(),
        "-----BEGIN RSA PRIVATE KEY-----\\n".into(),
        "-----END PRIVATE KEY-----".into(),
        "-----END RSA PRIVATE KEY-----\n".into(),
        "-----END ".into(),
        "RSA ".into(),
        PEM_BODY.into(),
        escaped.clone(),
        "\\".into(),
        "\\\"".into(),
        "\"".into(),
        "\\n".into(),
        "\n".into(),
        " ".into(),
        ",".into(),
    ];
    let stretch = (
        proptest::sample::select(vec![200usize, 3_000, 20_000, 40_000, 66_000]),
        0..3u8,
        any::<u64>(),
    )
        .prop_map(|(len, kind, seed)| match kind {
            0 => base64_lines(len, seed).into_bytes(),
            1 => vec![b' '; len],
            _ => vec![b'x'; len],
        });
    proptest::collection::vec(
        prop_oneof![
            30 => proptest::sample::select(fragments).prop_map(String::into_bytes),
            4 => proptest::collection::vec(any::<u8>(), 0..6),
            1 => stretch,
        ],
        0..48,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn windows_findings_are_the_reference_search(content in windowed()) {
        let found = scanned(&content);
        prop_assert_eq!(found, reference(&content));
    }
}

//! The secret detector: every kind it knows found where planted, with its position, preview
//! and digest; placeholders, documented examples, bad checksums and near misses not found;
//! and, by property, no panic and nothing outside the input on arbitrary bytes.

use custos_core::discovery::secrets::{Detector, SecretMatch, SecretType, secret_sha256};
use custos_core::token::{SecretKind, mint};
use proptest::prelude::*;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn base62_6(mut n: u32) -> String {
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).unwrap()
}

/// A classic GitHub token with the checksum GitHub computes: base62 CRC32 of the 30 random
/// characters, zero-padded to 6.
fn github(prefix: &str, random: &str) -> String {
    assert_eq!(random.len(), 30);
    format!(
        "{prefix}{random}{}",
        base62_6(crc32fast::hash(random.as_bytes()))
    )
}

const AWS_ID: &str = "AKIA2OGYBAH6STMMNXNN";
const AWS_SECRET: &str = "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";
const OPENAI: &str = "sk-proj-Zk3J9vQm2xR7tLp0WbN4cY8dF1gH6sK5aE3uI9oT2rV7yM0nB4xC8zQ1wS6eD5fG";
const ANTHROPIC: &str =
    "sk-ant-api03-Xb7Kq2Lm9Vn4Rt8Wc1Yd6Fg3Hj0Ps5Ua2Ie7Oz4Bx9Nv1Mk8Ql3Wr6Ty0Cu5Ji2Gh-AA";
const SLACK_BOT: &str = "xoxb-1234567890123-2345678901234-Zx8Vb3Nm6Qw1Er4Ty7Ui0Op";
const SLACK_HOOK: &str =
    "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/Xy7Zq2Wv9Ut4Sr1Po6Nm3Lk";
const PEM_BODY: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7V2m5Yx1Kq9R\nZt4Lw8Nc3Pf6Hd0Js2Ga7Ub5Ve1Xo9Ti4Qr8Wm3Ky6Cn0Bl2Dh7Fp5Gz1Aq4Es8Iu\n";

fn kinds(found: &[SecretMatch]) -> Vec<SecretType> {
    found.iter().map(|m| m.kind).collect()
}

fn scan(text: &str) -> Vec<SecretMatch> {
    Detector::new().scan(text.as_bytes())
}

#[test]
fn scan_finds_custos_keys_with_position_preview_and_digest() {
    let key = mint(SecretKind::StaticKey, &[9; 32]);
    let op = mint(SecretKind::Operator, &[3; 32]);
    let text = format!("# config\nCUSTOS_KEY={key}\n  token: \"{op}\"\n");
    let found = scan(&text);
    assert_eq!(
        kinds(&found),
        [SecretType::CustosStaticKey, SecretType::CustosOperatorToken]
    );
    assert_eq!((found[0].line, found[0].column), (2, 12));
    assert_eq!((found[1].line, found[1].column), (3, 11));
    assert_eq!(&text[found[0].range.clone()], key);
    assert_eq!(&text[found[1].range.clone()], op);
    assert_eq!(found[0].preview, "custos…");
    assert_eq!(found[0].secret_sha256, secret_sha256(key.as_bytes()));
    assert_eq!(found[0].secret_sha256.len(), 32);
    assert!(!found[0].preview.contains(&key[10..]));
}

#[test]
fn scan_ignores_custos_keys_with_a_bad_checksum_or_inside_a_word() {
    let key = mint(SecretKind::StaticKey, &[9; 32]);
    let mut typo = key.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let text = format!("{typo}\nx{key}\n{key}0\n{}\n", &key[..key.len() - 1]);
    assert!(scan(&text).is_empty(), "{:?}", scan(&text));
}

#[test]
fn scan_finds_aws_pairs_labelled_or_adjacent_and_skips_the_documented_example() {
    let env = format!("AWS_ACCESS_KEY_ID={AWS_ID}\nAWS_SECRET_ACCESS_KEY={AWS_SECRET}\n");
    assert_eq!(
        kinds(&scan(&env)),
        [SecretType::AwsAccessKeyId, SecretType::AwsSecretAccessKey]
    );
    // Unlabelled, next to the id: still found, and only once.
    let json = format!("{{\"id\": \"{AWS_ID}\", \"key\": \"{AWS_SECRET}\"}}");
    assert_eq!(
        kinds(&scan(&json)),
        [SecretType::AwsAccessKeyId, SecretType::AwsSecretAccessKey]
    );
    // Labelled, with no id around.
    let labelled = format!("aws_secret_access_key = {AWS_SECRET}\n");
    assert_eq!(kinds(&scan(&labelled)), [SecretType::AwsSecretAccessKey]);
    // AWS's documented example pair is everywhere in docs: not reported.
    let example = "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n\
                   aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n";
    assert!(scan(example).is_empty());
    // A 40-character run far from any id and without a label is just a hash.
    let far = format!("commit {}\n", "a1b2c3d4e5".repeat(4));
    assert!(scan(&far).is_empty());
    // Too short, too long, lower case, glued to a word.
    for bad in [
        "AKIA2OGYBAH6STMMNXN",
        "AKIA2OGYBAH6STMMNXNNQ",
        "akia2ogybah6stmmnxnn",
        "XAKIA2OGYBAH6STMMNXNN",
    ] {
        assert!(scan(bad).is_empty(), "{bad}");
    }
}

#[test]
fn scan_finds_openai_and_anthropic_keys_but_not_placeholders() {
    let text = format!("OPENAI_API_KEY={OPENAI}\nANTHROPIC_API_KEY={ANTHROPIC}\n");
    let found = scan(&text);
    assert_eq!(
        kinds(&found),
        [SecretType::OpenaiApiKey, SecretType::AnthropicApiKey]
    );
    assert_eq!(&text[found[0].range.clone()], OPENAI);
    assert_eq!(&text[found[1].range.clone()], ANTHROPIC);
    let legacy = "sk-Ab3De5Fg7Hi9Jk1Lm3No5Pq7Rs9Tu1Vw3Xy5Za7Bc9De1Fg3Hi";
    assert_eq!(kinds(&scan(legacy)), [SecretType::OpenaiApiKey]);
    for placeholder in [
        "sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "sk-proj-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "sk-your-api-key-here",
        "sk-ant-api03-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "sk-1234567890abcdef",
        "task-Ab3De5Fg7Hi9Jk1Lm3No5Pq7Rs9Tu1Vw3Xy5Za7Bc9De1Fg3Hi",
    ] {
        assert!(scan(placeholder).is_empty(), "{placeholder}");
    }
}

#[test]
fn scan_verifies_github_checksums() {
    let good = github("ghp_", "Zk3J9vQm2xR7tLp0WbN4cY8dF1gH6s");
    let found = scan(&format!("token: {good}\n"));
    assert_eq!(kinds(&found), [SecretType::GithubToken]);
    for prefix in ["gho_", "ghu_", "ghs_", "ghr_"] {
        let token = github(prefix, "Zk3J9vQm2xR7tLp0WbN4cY8dF1gH6s");
        assert_eq!(kinds(&scan(&token)), [SecretType::GithubToken], "{token}");
    }
    // One character changed: the checksum fails.
    let bad = good.replacen("Zk3", "Zk4", 1);
    assert!(scan(&bad).is_empty());
    assert!(scan("ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx").is_empty());
    let pat = format!(
        "github_pat_11ABCDEFG0aBcDeFgHiJkL_{}",
        "Qz8Wx7Vc6Bn5Ml4Kj3Hg2Fd1Sa9Po8Iu7Yt6Re5Wq4Az3Sx2Dc1Fv0Gb9Hn"
    );
    assert_eq!(kinds(&scan(&pat)), [SecretType::GithubToken]);
}

#[test]
fn scan_finds_slack_tokens_and_webhooks() {
    let text = format!("SLACK_BOT_TOKEN={SLACK_BOT}\nhook = \"{SLACK_HOOK}\"\n");
    let found = scan(&text);
    assert_eq!(
        kinds(&found),
        [SecretType::SlackToken, SecretType::SlackToken]
    );
    assert_eq!(
        &text[found[1].range.clone()],
        SLACK_HOOK.trim_start_matches("https://")
    );
    assert_eq!(
        kinds(&scan(
            "xapp-1-A0123456789-1234567890123-Ab3De5Fg7Hi9Jk1Lm3No5Pq7Rs9"
        )),
        [SecretType::SlackToken]
    );
    for placeholder in [
        "xoxb-your-token-here",
        "xoxb-xxxxxxxxxxxx-xxxxxxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxx",
        "https://hooks.slack.com/services/XXX/YYY/ZZZ",
    ] {
        assert!(scan(placeholder).is_empty(), "{placeholder}");
    }
}

#[test]
fn scan_finds_pem_private_keys_and_service_accounts_once() {
    for label in [
        "PRIVATE KEY",
        "RSA PRIVATE KEY",
        "EC PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
    ] {
        let pem = format!("-----BEGIN {label}-----\n{PEM_BODY}-----END {label}-----\n");
        let found = scan(&format!("key:\n{pem}"));
        assert_eq!(kinds(&found), [SecretType::PrivateKey], "{label}");
        assert_eq!(found[0].preview, format!("-----BEGIN {label}-----…"));
        assert_eq!(found[0].line, 2);
    }
    // Public keys, certificates and placeholders are not private keys.
    for not_key in [
        format!("-----BEGIN PUBLIC KEY-----\n{PEM_BODY}-----END PUBLIC KEY-----\n"),
        "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----\n".to_owned(),
        format!("-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}"),
    ] {
        assert!(scan(&not_key).is_empty(), "{not_key}");
    }
    let escaped = PEM_BODY.replace('\n', "\\n");
    let account = format!(
        r#"{{
  "type": "service_account",
  "project_id": "demo",
  "private_key_id": "0123456789abcdef",
  "private_key": "-----BEGIN PRIVATE KEY-----\n{escaped}-----END PRIVATE KEY-----\n",
  "client_email": "ci@demo.iam.gserviceaccount.com"
}}"#
    );
    let found = scan(&account);
    assert_eq!(kinds(&found), [SecretType::GoogleServiceAccount]);
    assert!(account[found[0].range.clone()].starts_with("-----BEGIN PRIVATE KEY-----\\n"));
    assert!(account[found[0].range.clone()].ends_with("-----END PRIVATE KEY-----\\n"));
    // `service_account` as some other field's value is not a key file.
    let other = account.replace("\"type\"", "\"kind\"");
    assert_eq!(kinds(&scan(&other)), [SecretType::PrivateKey]);
}

#[test]
fn scan_digest_is_the_same_wherever_the_secret_is() {
    let a = scan(&format!("X={AWS_ID}\n"));
    let b = scan(&format!("{{\n  \"k\": [\"{AWS_ID}\"]\n}}"));
    assert_eq!(a[0].secret_sha256, b[0].secret_sha256);
    assert_ne!((a[0].line, a[0].column), (b[0].line, b[0].column));
}

#[test]
fn scan_wire_names() {
    let names: Vec<_> = [
        SecretType::CustosStaticKey,
        SecretType::CustosOperatorToken,
        SecretType::AwsAccessKeyId,
        SecretType::AwsSecretAccessKey,
        SecretType::OpenaiApiKey,
        SecretType::AnthropicApiKey,
        SecretType::GithubToken,
        SecretType::SlackToken,
        SecretType::GoogleServiceAccount,
        SecretType::PrivateKey,
    ]
    .into_iter()
    .map(|k| {
        assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        k.as_str()
    })
    .collect();
    assert_eq!(names.len(), 10);
}

/// Text built from fragments of real keys, anchors and separators: near misses are common.
fn secretish() -> impl Strategy<Value = Vec<u8>> {
    let key = mint(SecretKind::StaticKey, &[1; 32]);
    let fragments: Vec<String> = vec![
        key,
        AWS_ID.into(),
        AWS_SECRET.into(),
        OPENAI.into(),
        ANTHROPIC.into(),
        SLACK_BOT.into(),
        SLACK_HOOK.into(),
        "-----BEGIN PRIVATE KEY-----\n".into(),
        "-----END PRIVATE KEY-----".into(),
        PEM_BODY.into(),
        "\"type\": \"service_account\"".into(),
        "\"private_key\": \"".into(),
        "aws_secret_access_key=".into(),
        "{".into(),
        "}".into(),
        "\"".into(),
        "\\".into(),
        "\n".into(),
        "ghp_".into(),
        "github_pat_".into(),
        "sk-ant-api03-".into(),
    ];
    proptest::collection::vec(
        prop_oneof![
            3 => proptest::sample::select(fragments).prop_map(String::into_bytes),
            1 => proptest::collection::vec(any::<u8>(), 0..8),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn scan_never_panics_and_stays_in_bounds(content in secretish()) {
        check(&content)?;
    }

    #[test]
    fn scan_arbitrary_bytes(content in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&content)?;
    }

    /// A planted key is found, with its exact range, whatever surrounds it (given a separator).
    #[test]
    fn scan_finds_a_planted_key_anywhere(
        before in "[ -~\n]{0,40}", after in "[ -~\n]{0,40}", bytes in any::<[u8; 32]>()
    ) {
        let key = mint(SecretKind::StaticKey, &bytes);
        let text = format!("{before}\n{key}\n{after}");
        let found = Detector::new().scan(text.as_bytes());
        let start = before.len() + 1;
        prop_assert!(found.iter().any(|m| m.kind == SecretType::CustosStaticKey && m.range == (start..start + key.len())));
    }
}

fn check(content: &[u8]) -> Result<(), TestCaseError> {
    let found = Detector::new().scan(content);
    let mut last = 0;
    for m in &found {
        prop_assert!(m.range.start < m.range.end && m.range.end <= content.len());
        prop_assert!(m.range.start >= last, "sorted by position");
        last = m.range.start;
        prop_assert_eq!(&m.secret_sha256, &secret_sha256(&content[m.range.clone()]));
        let line = content[..m.range.start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        prop_assert_eq!(m.line, line);
        prop_assert!(m.preview.ends_with('…'));
    }
    Ok(())
}

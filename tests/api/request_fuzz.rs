//! Fuzzing `ExecuteRequest::parse`, the first code every request body meets,
//! with proptest: random bytes, random JSON, and byte mutations of the seed
//! corpus in `tests/fuzz/execute_request.txt`. Whatever the body, parsing
//! must return (never panic or overflow the stack), fail only as
//! `invalid-request` or `too-large`, and accept only requests that respect
//! every rule. A failure is shrunk and its seed recorded by proptest in a
//! regressions file beside this test: commit it (it is replayed first) and
//! add the body to the seed corpus.
//!
//! `PROPTEST_CASES=100000 cargo test --test api request_fuzz::` runs longer.

use proptest::prelude::*;
use pyexec::gateway::ExecuteRequest;
use pyexec::tenants::Tenant;
use serde_json::Value;

fn seeds() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fuzz/execute_request.txt"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// The contract of a parse, whatever the input.
fn check(body: &[u8]) -> Result<(), TestCaseError> {
    let tenant = Tenant::bootstrap();
    match ExecuteRequest::parse(body, &tenant) {
        Ok(request) => {
            prop_assert!(!request.script.trim().is_empty());
            prop_assert!(request.script.len() <= tenant.request.max_script_bytes);
            prop_assert!(!request.script.contains('\0'));
            prop_assert!(request.args.keys().all(|k| is_identifier(k)));
            let max = tenant.sandbox.limits.wall_timeout.as_millis() as u64;
            prop_assert!(request.timeout_ms.is_none_or(|t| (1..=max).contains(&t)));
        }
        Err(e) => prop_assert!(
            ["invalid-request", "too-large"].contains(&e.kind()),
            "unexpected error kind {}",
            e.kind()
        ),
    }
    Ok(())
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// JSON values shaped like requests: the right field names with values of
/// any type, plus stray fields.
fn request_like() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "def main\\([a-z, ]{0,10}\\):\n    return [0-9a-z]{0,5}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[_a-zA-Z0-9 é]{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(
        prop_oneof![
            Just("script".to_string()),
            Just("args".to_string()),
            Just("timeout_ms".to_string()),
            Just("cache".to_string()),
            "[a-z_]{1,8}",
        ],
        value,
        0..5,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// A seed with a few bytes flipped, inserted or removed.
fn mutated_seed() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    (
        0..seeds.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..8),
    )
        .prop_map(move |(i, edits)| {
            let mut body = seeds[i].clone();
            for (at, byte, kind) in edits {
                let pos = if body.is_empty() {
                    0
                } else {
                    at.index(body.len())
                };
                match kind {
                    0 if !body.is_empty() => body[pos] = byte,
                    1 => body.insert(pos, byte),
                    _ if !body.is_empty() => {
                        body.remove(pos);
                    }
                    _ => body.push(byte),
                }
            }
            body
        })
}

#[test]
fn every_seed_parses_within_the_contract() {
    for seed in seeds() {
        check(&seed).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_break_parsing(body in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&body)?;
    }

    #[test]
    fn request_shaped_json_is_accepted_only_when_valid(value in request_like()) {
        check(value.to_string().as_bytes())?;
    }

    #[test]
    fn mutated_seeds_never_break_parsing(body in mutated_seed()) {
        check(&body)?;
    }
}

//! Fuzzing the page parser, as a property over bytes: the real recorded answers mutated at
//! random, pages of coin objects with odd values, and plain random bytes. The parser must never
//! panic, and never accept a page that is not a JSON array of objects; what it accepts must hold
//! only what the store can keep. proptest records any failure in `parser_fuzz.proptest-regressions`,
//! which then runs first every time.
//!
//! `PARSER_FUZZ_CASES` sets the inputs tried per property (default 5,000; three properties).

use coingecko_cdc::market::{jsonb_storable, parse_page, Entry};
use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

const SEEDS: [&str; 4] = [
    "markets-2024-09-05.json",
    "markets-2024-09-08.json",
    "markets-2026-04-30.json",
    "error-403.json",
];

/// Text that tends to break JSON number and string handling.
const TOKENS: [&str; 16] = [
    "null",
    "-0",
    "1e400",
    "-1e-400",
    "99999999999999999999999999999999",
    "0.00000000000000000000000000001",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "{",
    "]",
    ",",
    "\"id\":",
    "\"current_price\":",
    "🚀",
];

fn seed(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/coingecko/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Delete(Index, usize),
    Insert(Index, &'static str),
    Replace(Index, usize, &'static str),
    Duplicate(Index, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let token = prop::sample::select(TOKENS.to_vec());
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip(at, byte)),
        (any::<Index>(), 1..64usize).prop_map(|(at, len)| Mutation::Delete(at, len)),
        (any::<Index>(), token.clone()).prop_map(|(at, t)| Mutation::Insert(at, t)),
        (any::<Index>(), 1..16usize, token).prop_map(|(at, len, t)| Mutation::Replace(at, len, t)),
        (any::<Index>(), 1..512usize).prop_map(|(at, len)| Mutation::Duplicate(at, len)),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let at = |index: &Index| index.index(bytes.len() + 1);
        match mutation {
            Mutation::Flip(index, byte) if !bytes.is_empty() => {
                let at = index.index(bytes.len());
                bytes[at] = *byte;
            }
            Mutation::Flip(..) => {}
            Mutation::Delete(index, len) => {
                let from = at(index);
                let to = (from + len).min(bytes.len());
                bytes.drain(from..to);
            }
            Mutation::Insert(index, token) => {
                let from = at(index);
                bytes.splice(from..from, token.bytes());
            }
            Mutation::Replace(index, len, token) => {
                let from = at(index);
                let to = (from + len).min(bytes.len());
                bytes.splice(from..to, token.bytes());
            }
            Mutation::Duplicate(index, len) => {
                let from = at(index);
                let to = (from + len).min(bytes.len());
                let copy = bytes[from..to].to_vec();
                bytes.splice(to..to, copy);
            }
            Mutation::Truncate(index) => {
                let len = at(index);
                bytes.truncate(len);
            }
        }
    }
    bytes
}

/// A JSON value of the kinds CoinGecko sends, with odd numbers and strings among them.
fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        "-?[0-9]{1,40}(\\.[0-9]{0,40})?([eE][-+]?[0-9]{1,4})?",
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        prop::sample::select(TOKENS.to_vec()).prop_map(|t| serde_json::to_string(t).unwrap()),
        Just("[]".to_string()),
        Just("{}".to_string()),
    ]
}

const FIELDS: [&str; 8] = [
    "id",
    "symbol",
    "name",
    "current_price",
    "market_cap",
    "market_cap_rank",
    "total_supply",
    "last_updated",
];

/// A page of coin objects whose fields hold any of the values above.
fn odd_page() -> impl Strategy<Value = String> {
    let object =
        prop::collection::vec((prop::sample::select(FIELDS.to_vec()), json_value()), 0..10)
            .prop_map(|fields| {
                let members: Vec<String> =
                    fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", members.join(","))
            });
    prop::collection::vec(object, 0..20).prop_map(|objects| format!("[{}]", objects.join(",")))
}

/// Any JSON object. The check of what the parser accepted is built on serde's `IgnoredAny`, not
/// on the parser's `RawValue`, and reads no number (`1e400` is valid JSON, though no f64).
struct AnyObject;

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = AnyObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyObject, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyObject)
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// Never a panic; an accepted page is an array of objects, entry for entry, and every quote is
/// one the store can keep.
fn judge(bytes: &[u8]) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(bytes);
    let Ok(page) = parse_page(&text) else {
        return Ok(());
    };
    // serde refuses an unpaired surrogate, which JSON allows and the store keeps as U+FFFD.
    let objects: Vec<AnyObject> = serde_json::from_str(&jsonb_storable(&text)).map_err(|e| {
        TestCaseError::fail(format!(
            "accepted a page that is not an array of objects ({e})"
        ))
    })?;
    prop_assert_eq!(page.entries.len(), objects.len());
    for entry in &page.entries {
        if let Entry::Quote(quote) = entry {
            prop_assert!(!quote.coin_id.trim().is_empty());
            let texts = [
                Some(&quote.coin_id),
                quote.name.as_ref(),
                quote.symbol.as_ref(),
            ];
            prop_assert!(texts.iter().flatten().all(|t| !t.contains('\0')));
            prop_assert!(!quote.price.is_sign_negative() || quote.price.is_zero());
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PARSER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn mutated_recorded_answers(
        seed_name in prop::sample::select(SEEDS.to_vec()),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        judge(&mutate(seed(seed_name), &mutations))?;
    }

    #[test]
    fn pages_of_coins_with_odd_values(page in odd_page()) {
        judge(page.as_bytes())?;
    }

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        judge(&bytes)?;
    }
}

#[test]
fn the_recorded_answers_themselves_are_accepted_or_refused_as_they_should_be() {
    for name in SEEDS {
        let outcome = parse_page(&String::from_utf8(seed(name)).unwrap());
        assert_eq!(outcome.is_ok(), name.starts_with("markets"), "{name}");
    }
}

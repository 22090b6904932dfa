//! No panic on outside input: every parser of `parsers.rs` is fed arbitrary bytes and
//! structured mutations of its seeds (proptest, a fixed number of cases, so that CI stays
//! bounded), and its known worst inputs, which it must refuse with an error value.
//!
//! The long runs are cargo-fuzz's (`fuzz/`, docs/FUZZING.md); this module is what CI runs.

use crate::common::repo;
use crate::parsers::{self, Parser};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Cases per parser: arbitrary bytes, and mutations of its seeds.
const ARBITRARY_CASES: u32 = 48;
const MUTATED_CASES: u32 = 160;

/// Pieces that parsers of CSV, JSON, TOML and headers treat specially.
const TOKENS: &[&[u8]] = &[
    b",",
    b"\"",
    b"\n",
    b"\r\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"-",
    b"=",
    b";",
    b"<",
    b">",
    b"@",
    b"#",
    b"\\",
    b"1e400",
    b"-1",
    b"0.5",
    b"99999999999999999999999999999999",
    b"18446744073709551616",
    b"null",
    b"true",
    b"\xef\xbb\xbf",
    b"\0",
    b"\xff",
    b"\xc3",
    b"\t=",
    b"\"\"",
    b"[[",
    b"{{",
    b"rel=\"next\"",
    b"page=0",
    b"2026-02-30",
    b"9999-12-31",
];

/// One structured change to a seed; positions wrap around the input's length.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, byte: u8 },
    Insert { at: usize, token: usize },
    Delete { at: usize, len: usize },
    Repeat { at: usize, len: usize, times: usize },
    Splice { at: usize, seed: usize, from: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, token)| Mutation::Insert { at, token }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 1usize..32, 2usize..64).prop_map(|(at, len, times)| Mutation::Repeat {
            at,
            len,
            times
        }),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(at, seed, from)| Mutation::Splice { at, seed, from }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn mutate(seeds: &[Vec<u8>], seed: usize, mutations: &[Mutation]) -> Vec<u8> {
    let mut data = seeds[seed % seeds.len()].clone();
    for m in mutations {
        let at = |at: usize, data: &[u8]| at % (data.len() + 1);
        match *m {
            Mutation::Flip { at: i, byte } => {
                if !data.is_empty() {
                    let i = i % data.len();
                    data[i] = byte;
                }
            }
            Mutation::Insert { at: i, token } => {
                let i = at(i, &data);
                data.splice(i..i, TOKENS[token].iter().copied());
            }
            Mutation::Delete { at: i, len } => {
                let i = at(i, &data);
                let end = (i + len).min(data.len());
                data.drain(i..end);
            }
            Mutation::Repeat { at: i, len, times } => {
                let i = at(i, &data);
                let end = (i + len).min(data.len());
                let piece: Vec<u8> = data[i..end].to_vec();
                let copies: Vec<u8> = piece
                    .iter()
                    .copied()
                    .cycle()
                    .take(piece.len() * times)
                    .collect();
                data.splice(end..end, copies);
            }
            Mutation::Splice { at: i, seed, from } => {
                let other = &seeds[seed % seeds.len()];
                let from = from % (other.len() + 1);
                let i = at(i, &data);
                data.splice(i..i, other[from..].iter().copied());
            }
            Mutation::Truncate { at: i } => {
                let i = at(i, &data);
                data.truncate(i);
            }
        }
    }
    data
}

/// Runs `cases` inputs of `strategy` through `parser`; a panic fails with the smallest input
/// proptest can find.
fn never_panics(
    parser: &Parser,
    cases: u32,
    strategy: impl Strategy<Value = Vec<u8>>,
) -> Result<(), String> {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    });
    runner
        .run(&strategy, |input| {
            let _ = (parser.parse)(&input);
            Ok(())
        })
        .map_err(|e| format!("{}: {e}", parser.name))
}

fn check_all(pick: impl Fn(&Parser) -> bool) {
    let repo = repo();
    let mut failures = Vec::new();
    for parser in parsers::all().iter().filter(|p| pick(p)) {
        let seeds = (parser.seeds)(&repo);
        assert!(!seeds.is_empty(), "{} has no seed", parser.name);
        let arbitrary = proptest::collection::vec(any::<u8>(), 0..2_048);
        if let Err(e) = never_panics(parser, ARBITRARY_CASES, arbitrary) {
            failures.push(e);
        }
        let count = seeds.len();
        let mutated = (0..count, proptest::collection::vec(mutation(), 1..6))
            .prop_map(move |(seed, mutations)| mutate(&seeds, seed, &mutations));
        if let Err(e) = never_panics(parser, MUTATED_CASES, mutated) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "parsers panicked:\n{}",
        failures.join("\n")
    );
}

/// The test that fuzzes a parser: three, so that the two cores share the work.
fn group(name: &str) -> Option<usize> {
    match name {
        "pricing_csv" | "customer_map" | "rambase_mapping" | "config_toml" => Some(0),
        "billable_users_json"
        | "billable_users_csv"
        | "link_header"
        | "ccc_users_page"
        | "ccc_usage"
        | "genesys_report" => Some(1),
        n if n.starts_with("rambase_") || n.starts_with("activeplatform_") => Some(2),
        "redact_url" => Some(2),
        _ => None,
    }
}

#[test]
fn files_of_the_operators_never_panic_a_parser() {
    check_all(|p| group(p.name) == Some(0));
}

#[test]
fn answers_of_the_sources_never_panic_a_parser() {
    check_all(|p| group(p.name) == Some(1));
}

#[test]
fn answers_of_the_billing_systems_never_panic_a_parser() {
    check_all(|p| group(p.name) == Some(2));
}

#[test]
fn every_parser_is_fuzzed_by_one_of_the_tests() {
    let left_out: Vec<&str> = parsers::all()
        .iter()
        .map(|p| p.name)
        .filter(|name| group(name).is_none())
        .collect();
    assert!(left_out.is_empty(), "give these a group: {left_out:?}");
    assert_eq!(parsers::all().len(), 19);
}

/// The seeds are real inputs that the parsers read as values, so the mutations start from the
/// paths that read something rather than from the first error. (The configuration files name
/// secrets that only the environment gives, so only their secrets are missing; the production
/// overlay is not a whole configuration on its own.)
#[test]
fn the_seeds_are_read_as_values() {
    let repo = repo();
    for parser in parsers::all() {
        for (i, seed) in (parser.seeds)(&repo).iter().enumerate() {
            if parser.name == "config_toml" && i == 2 {
                continue;
            }
            match (parser.parse)(seed) {
                Ok(()) => {}
                Err(why) if parser.name == "config_toml" => {
                    for problem in why.split("; ") {
                        assert!(
                            problem.contains("environment variable") || problem.contains("TALLY__"),
                            "config seed {i}: {problem}"
                        );
                    }
                }
                Err(why) => panic!("{} seed {i} refused: {why}", parser.name),
            }
        }
    }
}

/// Inputs every parser must refuse, never panic on, and never take as a value.
fn worst_cases() -> Vec<(&'static str, Vec<u8>)> {
    let mb = 1 << 20;
    let nested = |open: &str, n: usize| open.repeat(n).into_bytes();
    vec![
        ("empty", Vec::new()),
        ("a huge number", "9".repeat(100_000).into_bytes()),
        ("a huge exponent", b"1e999999999".to_vec()),
        ("deep JSON nesting", nested("[", 100_000)),
        ("deep JSON objects", nested("{\"a\":", 100_000)),
        (
            "deep TOML arrays",
            [b"a = ".to_vec(), nested("[", 100_000)].concat(),
        ),
        (
            "deep TOML tables",
            [b"a = ".to_vec(), nested("{b = ", 100_000)].concat(),
        ),
        (
            "invalid UTF-8",
            b"\xff\xfe\xfd\n\xc3\x28,\xa0\xa1\n".to_vec(),
        ),
        ("a byte order mark alone", b"\xef\xbb\xbf".to_vec()),
        (
            "two byte order marks",
            b"\xef\xbb\xbf\xef\xbb\xbf\n".to_vec(),
        ),
        ("NUL bytes", vec![0; 4_096]),
        ("a 1 MB line", vec![b'a'; mb]),
        ("a 1 MB line of commas", vec![b','; mb]),
        (
            "a 1 MB quoted cell",
            [b"\"".to_vec(), vec![b'x'; mb]].concat(),
        ),
    ]
}

/// Worst cases of one parser: its seeds with numbers too large for their fields.
fn worst_of(name: &str) -> Vec<(&'static str, Vec<u8>)> {
    let texts = |t: &[&'static str]| {
        t.iter()
            .map(|t| ("a number too large", t.as_bytes().to_vec()))
            .collect()
    };
    match name {
        "billable_users_json" => texts(&[
            r#"[{"id":1e400,"organization":"Acme"}]"#,
            r#"[{"id":18446744073709551616,"organization":"Acme"}]"#,
            r#"[{"id":-1,"organization":"Acme"}]"#,
        ]),
        "billable_users_csv" => texts(&[
            "id,primary_email,name,organization,business_unit,region,sign_ins,last_visit,updates\n18446744073709551616,a@b.c,A,Acme,,EU,0,,0\n",
        ]),
        "ccc_usage" => texts(&[
            r#"{"usage":{"totalMessagesSent":1e400}}"#,
            r#"{"usage":{"totalMessagesSent":18446744073709551616}}"#,
            r#"{"usage":{"totalMessagesSent":-1}}"#,
        ]),
        "ccc_users_page" => texts(&[
            r#"{"totalPages":18446744073709551616,"currentPage":1,"results":[]}"#,
            r#"{"totalPages":1,"currentPage":-1,"results":[]}"#,
        ]),
        "genesys_report" => texts(&[
            r#"{"status":"Complete","usages":[{"name":"CX 1","totalUsage":"99999999999999999999999999999999"}]}"#,
            r#"{"status":"Complete","usages":[{"name":"CX 1","totalUsage":"79228162514264337593543950335"},{"name":"CX 1","totalUsage":"79228162514264337593543950335"}]}"#,
            r#"{"status":"Complete","usages":[{"name":"CX 1","totalUsage":1e400}]}"#,
        ]),
        "rambase_usages_page" => texts(&[
            r#"{"usages":[{"usageId":1,"date":"2026-10-31","quantity":9223372036854775808}]}"#,
            r#"{"usages":[{"usageId":-1,"date":"2026-10-31","quantity":1}]}"#,
            r#"{"usages":[{"usageId":1,"date":"+262143-12-31","quantity":1}]}"#,
        ]),
        "rambase_created" => {
            texts(&[r#"{"usage":{"usageId":1e400,"date":"2026-10-31","quantity":1}}"#])
        }
        "pricing_csv" => texts(&[
            "price_id,license_type,customer,currency,model,tier_from,tier_to,unit_price,flat_fee,package_size,included_quantity,min_charge,effective_from,effective_to\nSD,Service desk user,,EUR,graduated,1,,99999999999999999999999999999999,,,,,2026-01-01,\n",
            "price_id,license_type,customer,currency,model,tier_from,tier_to,unit_price,flat_fee,package_size,included_quantity,min_charge,effective_from,effective_to\nSD,Service desk user,,EUR,graduated,18446744073709551616,,1,,,,,2026-01-01,\n",
        ]),
        "rambase_mapping" => texts(&[
            "billing_account,license_type,plan_id,item_id,month,period_id\nACME-001,Service desk user,18446744073709551616,1,2026-10,100310\n",
        ]),
        "config_toml" => texts(&[
            "[general]\nshutdown_timeout_secs = 18446744073709551616\n",
            "[general]\nshutdown_timeout_secs = 1e400\n",
        ]),
        _ => Vec::new(),
    }
}

#[test]
fn every_parser_refuses_its_worst_inputs_with_an_error() {
    let mut wrong = Vec::new();
    for parser in parsers::all() {
        // A URL is shown as given when it does not parse: that is its answer, not an error.
        if parser.name == "redact_url" {
            for (what, input) in worst_cases() {
                let _ = (parser.parse)(&input);
                let _ = what;
            }
            continue;
        }
        for (what, input) in worst_cases().into_iter().chain(worst_of(parser.name)) {
            let outcome = std::panic::catch_unwind(|| (parser.parse)(&input));
            match outcome {
                Ok(Err(_)) => {}
                Ok(Ok(())) => wrong.push(format!("{}: {what} was read as a value", parser.name)),
                Err(_) => wrong.push(format!("{}: {what} panicked", parser.name)),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

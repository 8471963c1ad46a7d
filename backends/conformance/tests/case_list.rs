//! The suite's case list and `cases.rs` agree: every public case function (one taking the
//! backend) is in [`CASES`], from which the macro generates the tests, once, and nothing
//! else is.

use std::collections::BTreeSet;

use backend_conformance::CASES;

/// Names of the `pub fn NAME(backend: B, ...)` functions in `src/cases.rs`.
fn case_functions() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/cases.rs");
    let src = std::fs::read_to_string(path).expect("reading src/cases.rs");
    // rustfmt may break a long signature after the opening parenthesis: join the lines.
    let flat: String = src.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.split("pub fn ")
        .skip(1)
        .filter_map(|rest| {
            let (name, after) = rest.split_once('(')?;
            after
                .trim_start()
                .starts_with("backend: B")
                .then(|| name.trim().to_string())
        })
        .collect()
}

#[test]
fn every_case_function_is_in_the_list_and_nothing_else() {
    let functions = case_functions();
    assert!(
        functions.len() >= 18,
        "found only {} case functions: the parser no longer matches cases.rs",
        functions.len()
    );
    let defined: BTreeSet<&str> = functions.iter().map(String::as_str).collect();
    assert_eq!(
        defined.len(),
        functions.len(),
        "a case function defined twice"
    );
    let listed: BTreeSet<&str> = CASES.iter().copied().collect();
    assert_eq!(
        listed.len(),
        CASES.len(),
        "a case listed twice in __for_each_case"
    );
    let missing: Vec<_> = defined.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "cases defined in cases.rs but not in __for_each_case (lib.rs), so never run: {missing:?}"
    );
    let unknown: Vec<_> = listed.difference(&defined).collect();
    assert!(
        unknown.is_empty(),
        "listed cases with no case function: {unknown:?}"
    );
}

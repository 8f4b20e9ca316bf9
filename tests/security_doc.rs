//! SECURITY.md promises a test for every threat it lists: each table row must name at least
//! one test in its last column, and every name there must be a function that exists in
//! `src/` or `tests/` (so a renamed or deleted test cannot leave a row claiming a proof).

use std::collections::BTreeSet;
use std::path::Path;

fn collect_fns(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect_fns(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("utf-8 source");
            for line in text.lines() {
                let line = line.trim_start();
                let rest = line
                    .strip_prefix("async fn ")
                    .or_else(|| line.strip_prefix("fn "))
                    .or_else(|| line.strip_prefix("pub fn "))
                    .or_else(|| line.strip_prefix("pub async fn "));
                if let Some(rest) = rest {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    out.insert(name);
                }
            }
        }
    }
}

/// What a backticked item in the test column refers to.
#[derive(Debug, PartialEq, Eq)]
enum Reference {
    /// A test file (`tests/sip_props.rs`).
    File(String),
    /// A unit-test module (`transport::rate::tests`): `src/transport/rate.rs` must exist.
    Module(String),
    /// A test function, by its name (the last `::` segment).
    Function(String),
}

fn references(cell: &str) -> Vec<Reference> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|quoted| {
            if quoted.ends_with(".rs") {
                Reference::File(quoted.to_owned())
            } else if let Some(module) = quoted.strip_suffix("::tests") {
                Reference::Module(format!("src/{}.rs", module.replace("::", "/")))
            } else {
                Reference::Function(quoted.rsplit("::").next().unwrap_or(quoted).to_owned())
            }
        })
        .collect()
}

#[test]
fn every_threat_names_tests_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("SECURITY.md")).expect("SECURITY.md");
    let mut fns = BTreeSet::new();
    collect_fns(&root.join("src"), &mut fns);
    collect_fns(&root.join("tests"), &mut fns);
    let mut rows = 0;
    let mut missing = Vec::new();
    for line in doc.lines() {
        let Some(body) = line.strip_prefix("| ") else {
            continue;
        };
        let cells: Vec<&str> = body.trim_end_matches('|').split(" | ").collect();
        if cells.len() != 4 || cells[0] == "threat" {
            continue;
        }
        rows += 1;
        let refs = references(cells[3]);
        if !refs.iter().any(|r| matches!(r, Reference::Function(_))) {
            missing.push(format!("row without a test function: {}", cells[0]));
        }
        for r in refs {
            let found = match &r {
                Reference::File(f) | Reference::Module(f) => root.join(f).is_file(),
                Reference::Function(name) => fns.contains(name),
            };
            if !found {
                missing.push(format!("{}: {r:?} not found", cells[0]));
            }
        }
    }
    assert!(
        rows >= 40,
        "only {rows} threat rows found: is the table format intact?"
    );
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn references_are_read_as_files_modules_and_functions() {
    assert_eq!(
        references("`tests/e2e/x.rs::a_test`, `transport::rate::tests` proptest `prop_name`, `tests/sip_props.rs`"),
        [
            Reference::Function("a_test".into()),
            Reference::Module("src/transport/rate.rs".into()),
            Reference::Function("prop_name".into()),
            Reference::File("tests/sip_props.rs".into()),
        ]
    );
    assert!(references("nothing quoted").is_empty());
}

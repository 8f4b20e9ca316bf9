//! The three rules, applied to the references [`scan`](super::scan) found:
//! - purity: a PURE file names no I/O, no clock read and no randomness;
//! - layers: a top-level module names only the modules its row of the layer table allows;
//! - cycles: no circle between top-level modules, nor between the submodules of the modules
//!   listed in [`Rules::acyclic_within`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::scan::{self, Origin, Reference, Scopes, Source};

/// What the checker enforces; the values live in `tests/architecture.rs`.
pub struct Rules {
    /// Files (or folders, with a trailing `/`) under `src/` that are PURE.
    pub pure: &'static [&'static str],
    /// Path prefixes a PURE file may not name (any path starting with one of them).
    pub impure: &'static [&'static str],
    /// `std::net` items that are plain values (no socket, no name lookup): allowed in PURE.
    pub net_values: &'static [&'static str],
    /// Method names that read a clock (`Instant::elapsed`): refused in PURE files.
    pub clock_methods: &'static [&'static str],
    /// Top-level module → the top-level modules it may name.
    pub layers: &'static [(&'static str, &'static [&'static str])],
    /// Known violations kept on purpose: (from, to, why). Each must still be needed.
    pub allow: &'static [(&'static str, &'static str, &'static str)],
    /// Top-level modules whose submodules must not form a circle.
    pub acyclic_within: &'static [&'static str],
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub rule: &'static str,
    pub file: String,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.rule, self.file, self.detail)
    }
}

/// Every source file of a tree, parsed, with the scopes of all of them.
pub struct Tree {
    pub sources: Vec<Source>,
    pub scopes: Scopes,
}

impl Tree {
    /// `files`: (path relative to the crate root, text).
    pub fn new(files: &[(String, String)]) -> Result<Self, String> {
        let mut sources = Vec::new();
        for (rel, text) in files {
            sources.push(scan::parse(rel, text)?);
        }
        let mut scopes = Scopes::default();
        for s in &sources {
            scopes.add(s);
        }
        // Files of `#[cfg(test)] mod x;` are test code.
        let tests = scopes.test_modules.clone();
        sources.retain(|s| !tests.iter().any(|t| s.module.starts_with(t)));
        Ok(Self { sources, scopes })
    }

    /// The top-level modules of the crate (children of `lib.rs`) and the binary, `main`.
    pub fn top_modules(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .scopes
            .children
            .get(&vec!["crate".to_string()])
            .cloned()
            .unwrap_or_default();
        if self.sources.iter().any(|s| s.module == ["main"]) {
            out.insert("main".into());
        }
        out
    }
}

/// The top-level module a module path belongs to; `None` for the crate root.
fn top(module: &[String]) -> Option<&str> {
    match module.first().map(String::as_str) {
        Some("main") => Some("main"),
        Some("crate") => module.get(1).map(String::as_str),
        _ => None,
    }
}

pub fn check(tree: &Tree, rules: &Rules) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    let mut inner: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut allow_used = BTreeSet::new();
    // One layer violation per file and arrow (the first path that draws it), not per path.
    let mut drawn: BTreeSet<(String, String)> = BTreeSet::new();
    for source in &tree.sources {
        let refs = scan::references(&tree.scopes, source);
        if is_pure(rules, &source.rel) {
            purity(rules, source, &refs, &mut out);
        }
        let Some(from) = top(&source.module) else {
            continue;
        };
        for r in &refs {
            if r.path.first().map(String::as_str) != Some("crate") || r.path.len() < 2 {
                continue;
            }
            let to = r.path[1].clone();
            if to != from {
                edges.insert((from.to_string(), to.clone()));
                let allowed = rules
                    .layers
                    .iter()
                    .find(|(m, _)| *m == from)
                    .map(|(_, ok)| ok.contains(&to.as_str()));
                let excused = rules
                    .allow
                    .iter()
                    .position(|(f, t, _)| *f == from && *t == to);
                match (allowed, excused) {
                    (Some(true), _) => {}
                    (_, Some(i)) => {
                        allow_used.insert(i);
                    }
                    (None, None) if drawn.insert((source.rel.clone(), String::new())) => {
                        out.push(Violation {
                            rule: "layers",
                            file: source.rel.clone(),
                            detail: format!("module `{from}` has no row in the layer table"),
                        })
                    }
                    (None, None) => {}
                    (Some(false), None) if drawn.insert((source.rel.clone(), to.clone())) => out
                        .push(Violation {
                            rule: "layers",
                            file: source.rel.clone(),
                            detail: format!("{from} → {to} is not an allowed arrow: {}", r.text()),
                        }),
                    (Some(false), None) => {}
                }
            }
            if rules.acyclic_within.contains(&from) && to == from {
                if let Some(edge) = inner_edge(tree, &source.module, &r.path) {
                    inner.entry(from.to_string()).or_default().insert(edge);
                }
            }
        }
    }
    for (i, (from, to, _)) in rules.allow.iter().enumerate() {
        if !allow_used.contains(&i) {
            out.push(Violation {
                rule: "layers",
                file: "tests/architecture.rs".into(),
                detail: format!("allow-list entry {from} → {to} is not needed any more: remove it"),
            });
        }
    }
    for cycle in cycles(&edges) {
        out.push(Violation {
            rule: "cycles",
            file: "src/".into(),
            detail: format!("top-level modules in a circle: {}", cycle.join(" ⇄ ")),
        });
    }
    for (module, edges) in &inner {
        for cycle in cycles(edges) {
            out.push(Violation {
                rule: "cycles",
                file: format!("src/{module}/"),
                detail: format!("{module} submodules in a circle: {}", cycle.join(" ⇄ ")),
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

fn is_pure(rules: &Rules, rel: &str) -> bool {
    rules.pure.iter().any(|p| {
        let p = format!("src/{p}");
        if p.ends_with('/') {
            rel.starts_with(&p)
        } else {
            rel == p
        }
    })
}

fn purity(rules: &Rules, source: &Source, refs: &[Reference], out: &mut Vec<Violation>) {
    for r in refs {
        let text = r.text();
        let bad = match r.origin {
            Origin::Method => rules.clock_methods.contains(&text.as_str()),
            Origin::Glob => {
                // A glob is impure when it could bring in anything impure.
                let prefix = format!("{}::", r.path.join("::"));
                rules.impure.iter().chain(["std::net"].iter()).any(|b| {
                    format!("{b}::").starts_with(&prefix) || prefix.starts_with(&format!("{b}::"))
                })
            }
            _ => impure_path(rules, &r.path),
        };
        if bad {
            out.push(Violation {
                rule: "purity",
                file: source.rel.clone(),
                detail: format!("PURE file names `{text}` ({:?})", r.origin),
            });
        }
    }
}

fn impure_path(rules: &Rules, path: &[String]) -> bool {
    let joined = path.join("::");
    if rules
        .impure
        .iter()
        .any(|b| joined == *b || joined.starts_with(&format!("{b}::")))
    {
        return true;
    }
    // std::net: only its plain value types (an address is data; a socket or a name lookup
    // — `ToSocketAddrs` — is I/O). Naming the module itself (`use std::net;`) is refused too,
    // so every use spells which value it takes.
    if path.len() >= 2 && path[0] == "std" && path[1] == "net" {
        return !path
            .get(2)
            .is_some_and(|item| rules.net_values.contains(&item.as_str()));
    }
    false
}

/// The (from, to) submodules of one top-level module that `reference` draws, after
/// following re-exports of the module root (whose own items belong to no submodule).
fn inner_edge(tree: &Tree, module: &[String], path: &[String]) -> Option<(String, String)> {
    let from = module.get(2)?.clone();
    let canonical = tree.scopes.canonical(path);
    let to = canonical.get(2)?.clone();
    let children = tree.scopes.children.get(&canonical[..2])?;
    (children.contains(&to) && to != from).then_some((from, to))
}

/// Every strongly connected component of more than one node (Tarjan, iterative enough for
/// a few dozen nodes).
fn cycles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.iter().flat_map(|(a, b)| [a, b]).collect();
    let reach = |start: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.clone()];
        while let Some(n) = stack.pop() {
            for (a, b) in edges {
                if *a == n && seen.insert(b.clone()) {
                    stack.push(b.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for n in &nodes {
        let scc: Vec<String> = nodes
            .iter()
            .filter(|m| reachable[*n].contains(**m) && reachable[**m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        if scc.len() > 1 && !out.contains(&scc) {
            out.push(scc);
        }
    }
    out
}

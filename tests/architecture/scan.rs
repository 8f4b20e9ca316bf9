//! Reads Rust source with `syn` and lists every path it names — `use` trees (groups, globs,
//! renames), paths in expressions, types and patterns, macro paths and the paths inside macro
//! bodies — each resolved to an absolute form: `crate::…` for our modules, `std::…` for the
//! standard library (`core::` and `alloc::` count as `std::`), or the external crate's name.
//!
//! Resolution follows what the compiler does closely enough for a layering check: `self::`,
//! `super::` and `crate::` are made absolute against the file's module; a first segment that
//! a `use` of the same module brought into scope (`use tokio as rt;` → `rt::spawn`) is
//! replaced by what it names; a child module declared in the file is made absolute. Code under
//! `#[cfg(test)]` / `#[test]` is skipped: tests may use clocks and sockets.

use std::collections::{BTreeMap, BTreeSet};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// Where a path was named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// A leaf of a `use` tree.
    Use,
    /// A `use` glob (`use std::net::*;`): everything under the path.
    Glob,
    /// A path in an expression, a type or a pattern.
    Path,
    /// A macro's own path (`tokio::select!`).
    Macro,
    /// A path written inside a macro's arguments (`format!("{}", std::fs::read(p)?)`).
    MacroBody,
    /// A method call by name (`.elapsed()`); the path is the method name alone.
    Method,
}

/// One path named by a file, absolute.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    pub path: Vec<String>,
    pub origin: Origin,
}

impl Reference {
    pub fn text(&self) -> String {
        let mut s = self.path.join("::");
        if self.origin == Origin::Glob {
            s.push_str("::*");
        }
        s
    }
}

/// A parsed source file and the module it is.
pub struct Source {
    /// Path relative to the crate root, with `/` (`src/media/relay.rs`).
    pub rel: String,
    /// `["crate", "media", "relay"]`; `["crate"]` for lib.rs, `["main"]` for the binary root.
    pub module: Vec<String>,
    pub file: syn::File,
}

/// The module a file under `src/` is (Rust 2018 layout: `a/mod.rs` and `a.rs` are both `a`).
pub fn module_of(rel: &str) -> Vec<String> {
    let inner = rel.strip_prefix("src/").unwrap_or(rel);
    let inner = inner.strip_suffix(".rs").unwrap_or(inner);
    if inner == "main" {
        return vec!["main".into()];
    }
    let mut module = vec!["crate".to_string()];
    module.extend(inner.split('/').map(str::to_string));
    if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
        module.pop();
    }
    module
}

pub fn parse(rel: &str, text: &str) -> Result<Source, String> {
    let file = syn::parse_file(text).map_err(|e| format!("{rel}: {e}"))?;
    Ok(Source {
        rel: rel.to_string(),
        module: module_of(rel),
        file,
    })
}

/// Whether attributes put an item under test only (`#[cfg(test)]`, `#[test]`).
pub fn test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        if a.path().is_ident("test") {
            return true;
        }
        if !a.path().is_ident("cfg") {
            return false;
        }
        let tokens = match &a.meta {
            syn::Meta::List(list) => list.tokens.to_string(),
            _ => return false,
        };
        tokens.trim() == "test"
    })
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item::*;
    match item {
        Const(i) => &i.attrs,
        Enum(i) => &i.attrs,
        ExternCrate(i) => &i.attrs,
        Fn(i) => &i.attrs,
        ForeignMod(i) => &i.attrs,
        Impl(i) => &i.attrs,
        Macro(i) => &i.attrs,
        Mod(i) => &i.attrs,
        Static(i) => &i.attrs,
        Struct(i) => &i.attrs,
        Trait(i) => &i.attrs,
        TraitAlias(i) => &i.attrs,
        Type(i) => &i.attrs,
        Union(i) => &i.attrs,
        Use(i) => &i.attrs,
        _ => &[],
    }
}

fn impl_item_attrs(item: &syn::ImplItem) -> &[syn::Attribute] {
    match item {
        syn::ImplItem::Const(i) => &i.attrs,
        syn::ImplItem::Fn(i) => &i.attrs,
        syn::ImplItem::Type(i) => &i.attrs,
        syn::ImplItem::Macro(i) => &i.attrs,
        _ => &[],
    }
}

/// A name a `use` brought into scope → (written with a leading `::`, the path as written).
pub type Names = BTreeMap<String, (bool, Vec<String>)>;

/// What `use` items and `mod` declarations bring into each module's scope.
#[derive(Default, Debug)]
pub struct Scopes {
    /// module → name → the path it stands for (as written; resolved on demand).
    pub names: BTreeMap<Vec<String>, Names>,
    /// module → child modules declared in it.
    pub children: BTreeMap<Vec<String>, BTreeSet<String>>,
    /// Modules declared `#[cfg(test)] mod x;` in another file: their files are test code.
    pub test_modules: BTreeSet<Vec<String>>,
}

impl Scopes {
    pub fn add(&mut self, source: &Source) {
        if test_only(&source.file.attrs) {
            return;
        }
        let mut collector = Collector {
            scopes: self,
            module: source.module.clone(),
        };
        collector.visit_file(&source.file);
    }

    /// Resolves a path as written in `module` to its absolute form; `None` for `Self::…`.
    pub fn resolve(
        &self,
        module: &[String],
        leading: bool,
        segs: &[String],
    ) -> Option<Vec<String>> {
        self.resolve_depth(module, leading, segs, 0)
    }

    fn resolve_depth(
        &self,
        module: &[String],
        leading: bool,
        segs: &[String],
        depth: usize,
    ) -> Option<Vec<String>> {
        let first = segs.first()?;
        let rest = &segs[1..];
        if leading {
            return Some(normalise(segs.to_vec()));
        }
        let crate_root = |m: &[String]| -> Vec<String> {
            // The binary's `crate` is itself; it reaches the library as `pbx_edge`.
            if m.first().map(String::as_str) == Some("main") {
                vec!["main".into()]
            } else {
                vec!["crate".into()]
            }
        };
        let joined = |mut base: Vec<String>, rest: &[String]| {
            base.extend(rest.iter().cloned());
            base
        };
        match first.as_str() {
            "crate" => return Some(joined(crate_root(module), rest)),
            "pbx_edge" => return Some(joined(vec!["crate".into()], rest)),
            "Self" => return None,
            "self" => return Some(joined(module.to_vec(), rest)),
            "super" => {
                let mut base = module.to_vec();
                let mut rest = segs;
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
                return Some(joined(base, rest));
            }
            _ => {}
        }
        if depth < 8 {
            if let Some((lead, target)) = self.names.get(module).and_then(|n| n.get(first)) {
                // `use tokio;` names `tokio` as itself: stop there.
                if !(target.len() == 1 && &target[0] == first && !lead) {
                    let base = self.resolve_depth(module, *lead, target, depth + 1)?;
                    return Some(joined(base, rest));
                }
            }
        }
        if self.children.get(module).is_some_and(|c| c.contains(first)) {
            return Some(joined(module.to_vec(), segs));
        }
        Some(normalise(segs.to_vec()))
    }

    /// Follows re-exports: `crate::media::StreamId` → `crate::media::types::StreamId` when
    /// `media/mod.rs` has `pub use types::StreamId`, so an edge is drawn to the module that
    /// defines the item, not to the façade that re-exports it.
    pub fn canonical(&self, path: &[String]) -> Vec<String> {
        let mut path = path.to_vec();
        'outer: for _ in 0..8 {
            for split in (1..path.len()).rev() {
                let (module, tail) = path.split_at(split);
                let Some(name) = tail.first() else { continue };
                let is_child = self.children.get(module).is_some_and(|c| c.contains(name));
                if is_child {
                    // `module::name` is a module: the item lives there already.
                    break 'outer;
                }
                if let Some((lead, target)) = self.names.get(module).and_then(|n| n.get(name)) {
                    if let Some(abs) = self.resolve(module, *lead, target) {
                        if abs != path[..=split] && abs.first().map(String::as_str) == Some("crate")
                        {
                            let mut next = abs;
                            next.extend(tail[1..].iter().cloned());
                            path = next;
                            continue 'outer;
                        }
                    }
                }
                if self.names.contains_key(module) || self.children.contains_key(module) {
                    break 'outer;
                }
            }
            break;
        }
        path
    }
}

/// `core::` and `alloc::` are the standard library under another name: `core::net::IpAddr`
/// is `std::net::IpAddr` for every rule here.
fn normalise(mut segs: Vec<String>) -> Vec<String> {
    if matches!(segs.first().map(String::as_str), Some("core" | "alloc")) {
        segs[0] = "std".into();
    }
    segs
}

fn idents(path: &syn::Path) -> Vec<String> {
    path.segments.iter().map(|s| s.ident.to_string()).collect()
}

/// Pass 1: the names each module's `use` items and `mod` declarations introduce.
struct Collector<'a> {
    scopes: &'a mut Scopes,
    module: Vec<String>,
}

impl Collector<'_> {
    fn use_tree(&mut self, prefix: &mut Vec<String>, leading: bool, tree: &syn::UseTree) {
        let names = self.scopes.names.entry(self.module.clone()).or_default();
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, leading, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let (name, target) = leaf(prefix, &n.ident);
                if name != "_" {
                    names.insert(name, (leading, target));
                }
            }
            syn::UseTree::Rename(r) => {
                let (_, target) = leaf(prefix, &r.ident);
                let name = r.rename.to_string();
                if name != "_" {
                    names.insert(name, (leading, target));
                }
            }
            syn::UseTree::Glob(_) => {}
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, leading, t);
                }
            }
        }
    }
}

/// `use a::b::{self}` names `b` as `a::b`; `use a::b::c` names `c` as `a::b::c`.
fn leaf(prefix: &[String], ident: &syn::Ident) -> (String, Vec<String>) {
    let id = ident.to_string();
    if id == "self" {
        (prefix.last().cloned().unwrap_or_default(), prefix.to_vec())
    } else {
        let mut target = prefix.to_vec();
        target.push(id.clone());
        (id, target)
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if test_only(item_attrs(item)) {
            if let syn::Item::Mod(m) = item {
                let mut child = self.module.clone();
                child.push(m.ident.to_string());
                self.scopes.test_modules.insert(child);
            }
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        if !test_only(impl_item_attrs(item)) {
            syn::visit::visit_impl_item(self, item);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), u.leading_colon.is_some(), &u.tree);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        let name = m.ident.to_string();
        self.scopes
            .children
            .entry(self.module.clone())
            .or_default()
            .insert(name.clone());
        if m.content.is_some() {
            self.module.push(name);
            syn::visit::visit_item_mod(self, m);
            self.module.pop();
        }
    }
}

/// Pass 2: every path a file names, resolved.
pub fn references(scopes: &Scopes, source: &Source) -> Vec<Reference> {
    if test_only(&source.file.attrs) {
        return Vec::new();
    }
    let mut walker = Walker {
        scopes,
        module: source.module.clone(),
        out: Vec::new(),
    };
    walker.visit_file(&source.file);
    walker.out.sort();
    walker.out.dedup();
    walker.out
}

struct Walker<'a> {
    scopes: &'a Scopes,
    module: Vec<String>,
    out: Vec<Reference>,
}

impl Walker<'_> {
    fn push(&mut self, leading: bool, segs: &[String], origin: Origin) {
        if let Some(path) = self.scopes.resolve(&self.module, leading, segs) {
            self.out.push(Reference { path, origin });
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, leading: bool, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, leading, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(syn::UseName { ident })
            | syn::UseTree::Rename(syn::UseRename { ident, .. }) => {
                let (_, target) = leaf(prefix, ident);
                // Resolve against the module without this very name, or `use tokio as rt`
                // would resolve `tokio` through itself.
                self.push(leading, &target, Origin::Use);
            }
            syn::UseTree::Glob(_) => self.push(leading, prefix, Origin::Glob),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, leading, t);
                }
            }
        }
    }

    /// Paths inside a macro's tokens: `a::b::c` runs (with an optional leading `::`), and
    /// single names a `use` brought in (`spawn(…)` after `use tokio::spawn;`).
    fn macro_tokens(&mut self, tokens: TokenStream) {
        let mut run: Vec<String> = Vec::new();
        let mut leading = false;
        let mut colons = 0;
        let flush = |w: &mut Self, run: &mut Vec<String>, leading: &mut bool| {
            let imported = run.len() == 1
                && w.scopes
                    .names
                    .get(&w.module)
                    .is_some_and(|n| n.contains_key(&run[0]));
            if run.len() > 1 || imported || (*leading && !run.is_empty()) {
                let segs = std::mem::take(run);
                w.push(*leading, &segs, Origin::MacroBody);
            }
            run.clear();
            *leading = false;
        };
        for tt in tokens {
            match tt {
                TokenTree::Ident(id) => {
                    if colons == 2 || run.is_empty() {
                        if colons != 2 && !run.is_empty() {
                            flush(self, &mut run, &mut leading);
                        }
                        run.push(id.to_string());
                    } else {
                        flush(self, &mut run, &mut leading);
                        run.push(id.to_string());
                    }
                    colons = 0;
                }
                TokenTree::Punct(p) if p.as_char() == ':' => {
                    colons += 1;
                    if colons == 2 && run.is_empty() {
                        leading = true;
                    }
                    if colons > 2 {
                        flush(self, &mut run, &mut leading);
                        colons = 0;
                    }
                }
                TokenTree::Group(g) => {
                    flush(self, &mut run, &mut leading);
                    colons = 0;
                    self.macro_tokens(g.stream());
                }
                _ => {
                    flush(self, &mut run, &mut leading);
                    colons = 0;
                }
            }
        }
        flush(self, &mut run, &mut leading);
    }
}

impl<'ast> Visit<'ast> for Walker<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if !test_only(item_attrs(item)) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        if !test_only(impl_item_attrs(item)) {
            syn::visit::visit_impl_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.content.is_some() {
            self.module.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.module.pop();
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), u.leading_colon.is_some(), &u.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.push(path.leading_colon.is_some(), &idents(path), Origin::Path);
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.push(
            mac.path.leading_colon.is_some(),
            &idents(&mac.path),
            Origin::Macro,
        );
        self.macro_tokens(mac.tokens.clone());
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        self.out.push(Reference {
            path: vec![call.method.to_string()],
            origin: Origin::Method,
        });
        syn::visit::visit_expr_method_call(self, call);
    }
}

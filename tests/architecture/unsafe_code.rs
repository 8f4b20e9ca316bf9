//! The `unsafe` rule: the crate denies `unsafe_code`, and only [`UNSAFE_MODULE`] may use it
//! (allowed on its `mod` line in its parent, nowhere else). Found on the parsed source:
//! `unsafe` blocks, fns, impls and traits, `extern` blocks, any attribute naming
//! `unsafe_code` other than `deny`/`forbid` (`allow`, `expect`, `warn`, inside `cfg_attr`),
//! and the `unsafe` keyword inside macro bodies (`macro_rules!`, a macro call's tokens).

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// The one file allowed to contain `unsafe`.
pub const UNSAFE_MODULE: &str = "src/media/batch_io.rs";
/// Its parent, where `#[allow(unsafe_code)]` may stand on `mod batch_io;` only.
const UNSAFE_PARENT: &str = "src/media/mod.rs";
const UNSAFE_MOD_NAME: &str = "batch_io";

/// Every use or allowance of `unsafe` outside the allowed module, as `file: what`.
pub fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (rel, text) in files {
        if rel == UNSAFE_MODULE {
            continue;
        }
        let file = match syn::parse_file(text) {
            Ok(f) => f,
            Err(e) => {
                out.push(format!("{rel}: does not parse: {e}"));
                continue;
            }
        };
        let mut v = Finder {
            rel,
            found: Vec::new(),
        };
        v.visit_file(&file);
        out.extend(v.found.into_iter().map(|what| format!("{rel}: {what}")));
    }
    out
}

struct Finder<'a> {
    rel: &'a str,
    found: Vec<String>,
}

fn names_unsafe_code(tokens: &TokenStream) -> bool {
    tokens.clone().into_iter().any(|t| match t {
        TokenTree::Ident(i) => i == "unsafe_code",
        TokenTree::Group(g) => names_unsafe_code(&g.stream()),
        _ => false,
    })
}

fn has_unsafe_keyword(tokens: &TokenStream) -> bool {
    tokens.clone().into_iter().any(|t| match t {
        TokenTree::Ident(i) => i == "unsafe",
        TokenTree::Group(g) => has_unsafe_keyword(&g.stream()),
        _ => false,
    })
}

impl<'ast> Visit<'ast> for Finder<'_> {
    fn visit_attribute(&mut self, a: &'ast syn::Attribute) {
        let strict = a.path().is_ident("deny") || a.path().is_ident("forbid");
        if let syn::Meta::List(l) = &a.meta {
            if !strict && names_unsafe_code(&l.tokens) {
                self.found
                    .push(format!("allows unsafe: #[{}]", quote_attr(a)));
            }
        }
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if self.rel == UNSAFE_PARENT && m.ident == UNSAFE_MOD_NAME && m.content.is_none() {
            // The one allowance: `#[allow(unsafe_code)] pub mod batch_io;`.
            visit::visit_visibility(self, &m.vis);
            return;
        }
        visit::visit_item_mod(self, m);
    }

    fn visit_expr_unsafe(&mut self, e: &'ast syn::ExprUnsafe) {
        self.found.push("unsafe block".into());
        visit::visit_expr_unsafe(self, e);
    }

    fn visit_signature(&mut self, s: &'ast syn::Signature) {
        if s.unsafety.is_some() {
            self.found.push(format!("unsafe fn {}", s.ident));
        }
        visit::visit_signature(self, s);
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        if i.unsafety.is_some() {
            self.found.push("unsafe impl".into());
        }
        visit::visit_item_impl(self, i);
    }

    fn visit_item_trait(&mut self, t: &'ast syn::ItemTrait) {
        if t.unsafety.is_some() {
            self.found.push(format!("unsafe trait {}", t.ident));
        }
        visit::visit_item_trait(self, t);
    }

    fn visit_item_foreign_mod(&mut self, f: &'ast syn::ItemForeignMod) {
        self.found.push("extern block".into());
        visit::visit_item_foreign_mod(self, f);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        if has_unsafe_keyword(&m.tokens) {
            self.found.push("unsafe inside a macro".into());
        }
        visit::visit_macro(self, m);
    }
}

fn quote_attr(a: &syn::Attribute) -> String {
    match &a.meta {
        syn::Meta::List(l) => format!("{}({})", path_text(&l.path), l.tokens),
        _ => path_text(a.path()),
    }
}

fn path_text(p: &syn::Path) -> String {
    p.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

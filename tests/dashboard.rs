//! The Grafana dashboard uses only metrics that exist: every `pbx_edge_*` name in
//! `grafana/pbx-edge.json` must be registered by the code (a string literal in `src/`).

use std::path::Path;

fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("pbx_edge_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end] == b'_'
                || bytes[end].is_ascii_digit())
        {
            end += 1;
        }
        names.push(text[start..end].to_owned());
        i = end;
    }
    names.sort();
    names.dedup();
    names
}

fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).expect("src readable") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).expect("source readable"));
        }
    }
}

#[test]
fn dashboard_metrics_exist_in_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard = std::fs::read_to_string(root.join("grafana/pbx-edge.json")).expect("dashboard");
    let json: serde_json::Value =
        serde_json::from_str(&dashboard).expect("dashboard is valid JSON");
    assert!(json["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let mut src = String::new();
    sources(&root.join("src"), &mut src);
    let used = metric_names(&dashboard);
    assert!(!used.is_empty());
    for name in used {
        // Histograms are queried through their `_bucket` series.
        let name = name.strip_suffix("_bucket").unwrap_or(&name);
        // The media relay registers `pbx_edge_media_` + a suffix at scrape time.
        let registered = src.contains(&format!("\"{name}\""))
            || name.strip_prefix("pbx_edge_media_").is_some_and(|suffix| {
                src.contains("\"pbx_edge_media_\"") && src.contains(&format!("\"{suffix}\""))
            });
        assert!(
            registered,
            "grafana/pbx-edge.json uses {name}, which no code registers"
        );
    }
}

//! The asset table is complete, self-contained, small, and free of ways to run markup from
//! data.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use failed_tasks_ui::{fnv1a, get, total_bytes, ASSETS, INDEX, MAX_TOTAL_BYTES};

fn assets_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

fn files_under(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, base, out);
        } else {
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.insert(rel);
        }
    }
}

#[test]
fn every_file_under_assets_is_served_and_nothing_else() {
    let mut on_disk = BTreeSet::new();
    files_under(&assets_dir(), &assets_dir(), &mut on_disk);
    let served: BTreeSet<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
    assert_eq!(on_disk, served);
    for asset in ASSETS {
        let bytes = std::fs::read(assets_dir().join(asset.path)).unwrap();
        assert_eq!(asset.body, bytes.as_slice(), "{}", asset.path);
    }
}

#[test]
fn lookups_and_etags() {
    assert_eq!(get("").unwrap().path, INDEX);
    assert_eq!(get("index.html").unwrap().path, INDEX);
    assert!(get("views/failures.js").is_some());
    assert!(get("nope.js").is_none());
    assert!(get("../Cargo.toml").is_none());
    assert!(get("/app.js").is_none());
    let mut etags = BTreeSet::new();
    for a in ASSETS {
        assert_eq!(a.hash, fnv1a(a.body), "{}", a.path);
        let etag = a.etag();
        assert_eq!(etag.len(), 18, "{etag}");
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        etags.insert(etag);
        let want = match a.path.rsplit('.').next().unwrap() {
            "html" => "text/html; charset=utf-8",
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("no content type decided for .{other}"),
        };
        assert_eq!(a.content_type, want, "{}", a.path);
    }
    assert_eq!(etags.len(), ASSETS.len(), "distinct files, distinct ETags");
    // FNV-1a's published test vectors.
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn the_assets_stay_under_the_size_budget() {
    let total = total_bytes();
    assert!(
        total < MAX_TOTAL_BYTES,
        "{total} bytes of assets, budget {MAX_TOTAL_BYTES}"
    );
    assert_eq!(total, ASSETS.iter().map(|a| a.body.len()).sum::<usize>());
}

fn text(path: &str) -> &'static str {
    std::str::from_utf8(get(path).unwrap().body).unwrap()
}

/// Values of `attr="..."` in `html`.
fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!(" {attr}=\"");
    html.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

/// Resolve `reference` (relative to the file at `from`) to a path below /ui/.
fn resolve(from: &str, reference: &str) -> String {
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for seg in reference.split('/') {
        match seg {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

#[test]
fn every_reference_resolves_to_an_asset() {
    let html = text(INDEX);
    let mut refs: Vec<(String, String)> = Vec::new();
    for attr in ["src", "href"] {
        for v in attribute_values(html, attr) {
            if !v.starts_with('#') {
                refs.push((INDEX.to_owned(), v.to_owned()));
            }
        }
    }
    for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
        let js = std::str::from_utf8(a.body).unwrap();
        for line in js.lines() {
            let line = line.trim();
            if !(line.starts_with("import ") || line.contains("} from '")) {
                continue;
            }
            if let Some(start) = line
                .find(" from '")
                .map(|i| i + 7)
                .or_else(|| line.strip_prefix("import '").map(|_| 8))
            {
                let end = start + line[start..].find('\'').unwrap();
                refs.push((a.path.to_owned(), line[start..end].to_owned()));
            }
        }
    }
    assert!(refs.len() > 10, "found the references: {refs:?}");
    for (from, reference) in refs {
        assert!(
            reference.starts_with("./") || reference.starts_with("../") || !reference.contains(':'),
            "{from}: {reference} is not a relative reference"
        );
        let target = resolve(&from, &reference);
        assert!(
            get(&target).is_some(),
            "{from} refers to {reference} ({target}), which is not served"
        );
    }
}

#[test]
fn the_page_has_no_inline_script_or_style_and_scripts_build_no_markup() {
    let html = text(INDEX);
    for (i, _) in html.match_indices("<script") {
        let tag = &html[i..i + html[i..].find('>').unwrap()];
        assert!(tag.contains(" src=\""), "inline script: {tag}");
        assert!(
            html[i..].trim_start_matches(tag).starts_with("></script>"),
            "script with a body"
        );
    }
    assert!(!html.contains("<style"), "inline <style>");
    assert!(!html.contains(" style=\""), "inline style attribute");
    for attr in ["onclick", "onload", "onerror", "onsubmit", "onchange"] {
        assert!(
            !html.contains(&format!(" {attr}=")),
            "inline handler {attr}"
        );
    }
    for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
        let js = std::str::from_utf8(a.body).unwrap();
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setAttribute('style'",
            "createContextualFragment",
            "DOMParser",
        ] {
            assert!(!js.contains(banned), "{} uses {banned}", a.path);
        }
    }
    let api = text("api.js");
    assert!(api.contains("sessionStorage.setItem(TOKEN_KEY"));
    assert!(
        !api.contains("localStorage"),
        "the token is kept for the tab only, never in localStorage"
    );
}

/// The keys of one dictionary of i18n.js (`const NAME = { 'key': ..., };`).
fn dictionary(js: &str, name: &str) -> BTreeSet<String> {
    let start = js.find(&format!("const {name} = {{")).unwrap();
    let body = &js[start..start + js[start..].find("\n};").unwrap()];
    body.lines()
        .filter_map(|l| l.trim().strip_prefix('\''))
        .map(|l| l[..l.find('\'').unwrap()].to_owned())
        .collect()
}

#[test]
fn both_languages_have_every_label_the_scripts_use() {
    let i18n = text("i18n.js");
    let en = dictionary(i18n, "en");
    let zh = dictionary(i18n, "zh");
    assert!(en.len() > 100, "{} keys", en.len());
    assert_eq!(
        en.symmetric_difference(&zh).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "English and Chinese differ"
    );
    let mut used = BTreeSet::new();
    for a in ASSETS.iter().filter(|a| a.path != "i18n.js") {
        let body = std::str::from_utf8(a.body).unwrap();
        for needle in ["t('", "data-i18n=\""] {
            for (i, _) in body.match_indices(needle) {
                // `t(` as a call, not the end of another name (`split('.')`).
                let before = body[..i].chars().next_back().unwrap_or(' ');
                if before.is_alphanumeric() || before == '_' || before == '.' {
                    continue;
                }
                let rest = &body[i + needle.len()..];
                let key = &rest[..rest.find(['\'', '"']).unwrap()];
                used.insert(key.to_owned());
            }
        }
    }
    assert!(used.len() > 50, "{used:?}");
    for key in &used {
        assert!(en.contains(key), "{key} is used but has no label");
    }
}

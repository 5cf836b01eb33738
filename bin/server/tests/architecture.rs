//! `docs/ARCHITECTURE.md`'s dependency table is the crate graph: each of our crates depends
//! (normal dependencies, not dev) on exactly the crates the table names, as `cargo metadata`
//! reads them from the manifests. A new dependency between layers fails here until the map
//! says so.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

mod support;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Our crates' short names: `failed-tasks-store` is `store`; the facade keeps its name.
fn short(name: &str) -> String {
    name.strip_prefix("failed-tasks-")
        .unwrap_or(name)
        .to_owned()
}

/// The table of docs/ARCHITECTURE.md: crate → the crates it depends on.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    text.lines()
        .filter(|l| l.starts_with("| `failed-tasks"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = short(cells[1].trim_matches('`'));
            let deps = cells[2]
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty() && *d != "—")
                .map(str::to_owned)
                .collect();
            (name, deps)
        })
        .collect()
}

/// The same from the manifests.
fn actual() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = support::stdout_of(
        Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .current_dir(root()),
    );
    let meta: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let ours: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap())
                .filter(|d| ours.contains(d))
                .map(short)
                .collect();
            (short(p["name"].as_str().unwrap()), deps)
        })
        .collect()
}

#[test]
fn the_documented_crate_graph_is_the_real_one() {
    let documented = documented();
    assert!(
        documented.len() >= 9,
        "ARCHITECTURE.md's table lists {} crates",
        documented.len()
    );
    assert_eq!(documented, actual());
}

/// The server is built from the facade, as embedders build their service: among our crates
/// it depends on the facade and the HTTP adapter only, never on a store adapter or the
/// layers underneath (it reaches them through the facade's re-exports).
#[test]
fn the_server_depends_on_the_facade_and_http_only() {
    let server = actual().remove("server").unwrap();
    let want: BTreeSet<String> = ["failed-tasks", "http"].map(str::to_owned).into();
    assert_eq!(server, want);
}

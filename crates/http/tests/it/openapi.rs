//! `docs/openapi.yaml` documents exactly the API's routes and methods the router serves (the
//! dashboard's `/ui/` files are not API and are left out).

use std::collections::BTreeSet;

use failed_tasks_http::{ROUTES, UI_ROUTES};
use yaml_rust2::YamlLoader;

#[test]
fn documented_routes_are_the_served_routes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("docs/openapi.yaml");
    let docs = YamlLoader::load_from_str(&text).expect("openapi.yaml is YAML");
    let doc = &docs[0];
    assert_eq!(doc["openapi"].as_str(), Some("3.1.0"));
    let paths = doc["paths"].as_hash().expect("paths");
    let mut documented = BTreeSet::new();
    for (path, ops) in paths {
        let path = path.as_str().expect("path is a string").to_owned();
        for (method, _) in ops.as_hash().expect("operations") {
            let method = method.as_str().expect("method").to_ascii_uppercase();
            documented.insert((path.clone(), method));
        }
    }
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .flat_map(|(path, methods)| {
            methods
                .iter()
                .map(move |m| ((*path).to_owned(), (*m).to_owned()))
        })
        .collect();
    assert_eq!(documented, served);
    // The dashboard's files are served by the same router but are not API: not documented.
    for (path, _) in UI_ROUTES {
        assert!(path.starts_with("/ui"), "{path}");
        assert!(
            !documented.iter().any(|(p, _)| p.starts_with("/ui")),
            "docs/openapi.yaml documents the dashboard's {path}"
        );
        assert!(
            !ROUTES.iter().any(|(p, _)| p == path),
            "{path} is in ROUTES"
        );
    }
}

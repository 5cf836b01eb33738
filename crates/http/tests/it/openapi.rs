//! `docs/openapi.yaml` documents exactly the routes and methods of the route table (those
//! marked documented: the API, not the dashboard's files).

use std::collections::BTreeSet;

use failed_tasks_http::ROUTES;
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
        .filter(|route| route.documented)
        .flat_map(|route| {
            route
                .methods()
                .map(move |m| (route.template.to_owned(), m.to_owned()))
        })
        .collect();
    assert_eq!(documented, served);
    // What is left out is the dashboard's static files, and only them.
    for route in ROUTES.iter().filter(|route| !route.documented) {
        assert!(
            route.template.starts_with("/ui"),
            "{} is not documented",
            route.template
        );
    }
    assert!(
        !documented.iter().any(|(p, _)| p.starts_with("/ui")),
        "docs/openapi.yaml documents the dashboard's files"
    );
}

//! The route table: every path this adapter serves, the methods it answers, who may call it,
//! what body it reads and which handler answers. Dispatch, `Allow` on 405, the metrics'
//! route labels and the OpenAPI check all read this one table, so adding a route is one
//! entry here and one handler.

use crate::app::App;
use crate::auth::Role;
use crate::export;
use crate::handlers;
use crate::request::{Answer, Call, Handler};
use crate::ui;

/// The contract's path prefix.
pub const BASE_PATH: &str = "/codebase-embedder/api/v1";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone (health, metrics, the dashboard's files).
    Open,
    /// A token with this role or a higher one (reads: only once reads need a token,
    /// `Tokens::reads_need_a_token`). Without any token of such a role, 403.
    Role(Role),
}

/// What an endpoint does for a token limited to one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientLimit {
    /// Its query takes the listing's filters: `clientId` is set to the token's client (a
    /// different `clientId` is 403).
    Filters,
    /// A bulk route's filters: as `Filters`, but a request with no filter stays without one
    /// (and is refused as for anyone) instead of meaning every failure of the client.
    BulkFilters,
    /// It names one task (`{taskId}`): another client's task is 404, as if it did not exist.
    Task,
    /// Its handler checks the body (every recorded task must be the token's client's).
    Body,
    /// It cannot be limited to one client: 403 for such a token.
    Refused,
}

/// What body a method of a route reads before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// None: the handler gets an empty body.
    None,
    /// A JSON body: exactly one `Content-Type: application/json`, not encoded, under the
    /// size limit and the body-read timeout.
    Json,
    /// Whatever is sent (routes that take no body but tolerate an empty or `{}` one), under
    /// the same limits.
    Any,
}

/// One method of a route.
#[derive(Debug)]
pub struct Endpoint {
    /// The HTTP method.
    pub method: &'static str,
    pub(crate) body: BodyKind,
    pub(crate) handler: Handler,
    pub(crate) client: ClientLimit,
}

/// One route: a path template in OpenAPI style (`{taskId}` matches one non-empty path
/// segment; a last `{name*}` matches the rest of the path, slashes included).
#[derive(Debug)]
pub struct Route {
    /// The path template.
    pub template: &'static str,
    /// A short label for logs and metrics.
    pub name: &'static str,
    /// Whether `docs/openapi.yaml` documents the route (the API does; the dashboard's
    /// static files do not).
    pub documented: bool,
    pub(crate) access: Access,
    /// The methods the route answers.
    pub endpoints: &'static [Endpoint],
}

impl Route {
    /// The methods the route answers, as `Allow` lists them.
    pub fn methods(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.endpoints.iter().map(|e| e.method)
    }

    /// The endpoint of `method`, if the route answers it.
    pub(crate) fn endpoint(&self, method: &str) -> Option<&'static Endpoint> {
        self.endpoints.iter().find(|e| e.method == method)
    }
}

/// A handler in the table: an `async fn(&App, Call) -> Reply` of `handlers`, boxed.
macro_rules! handler {
    ($f:path) => {{
        fn boxed<'a>(app: &'a App, call: Call<'a>) -> Answer<'a> {
            Box::pin($f(app, call))
        }
        boxed as Handler
    }};
}

/// An endpoint: method, body kind, handler and what it does for a token limited to one
/// client (refused unless said).
macro_rules! endpoint {
    ($method:literal, $body:ident, $f:path) => {
        endpoint!($method, $body, $f, Refused)
    };
    ($method:literal, $body:ident, $f:path, $client:ident) => {
        Endpoint {
            method: $method,
            body: BodyKind::$body,
            handler: handler!($f),
            client: ClientLimit::$client,
        }
    };
}

/// Every route served, in no particular order: a path matches one template, or a literal
/// one and a template (`…/tasks/failed/export` and `…/tasks/failed/{taskId}`), and then the
/// literal one is its route ([`find`]).
pub static ROUTES: &[Route] = &[
    Route {
        template: "/codebase-embedder/api/v1/tasks/failed",
        name: "list_failed",
        documented: true,
        access: Access::Role(Role::Read),
        endpoints: &[endpoint!("GET", None, handlers::list_failed, Filters)],
    },
    Route {
        template: "/codebase-embedder/api/v1/tasks/failed/export",
        name: "export_failed",
        documented: true,
        access: Access::Role(Role::Read),
        endpoints: &[endpoint!("GET", None, export::export_failed, Filters)],
    },
    Route {
        template: "/codebase-embedder/api/v1/tasks/failed/{taskId}",
        name: "get_failed",
        documented: true,
        access: Access::Role(Role::Read),
        endpoints: &[endpoint!("GET", None, handlers::get_failed, Task)],
    },
    Route {
        template: "/codebase-embedder/api/v1/tasks/failed/{taskId}/files",
        name: "failed_files",
        documented: true,
        access: Access::Role(Role::Read),
        endpoints: &[endpoint!("GET", None, handlers::failed_files, Task)],
    },
    Route {
        template: "/codebase-embedder/api/v1/admin/failed-tasks",
        name: "admin_tasks",
        documented: true,
        access: Access::Role(Role::Admin),
        endpoints: &[
            endpoint!("POST", Json, handlers::record_tasks, Body),
            endpoint!("DELETE", None, handlers::remove_matching, BulkFilters),
        ],
    },
    Route {
        template: "/codebase-embedder/api/v1/admin/failed-tasks/{taskId}",
        name: "admin_task",
        documented: true,
        access: Access::Role(Role::Admin),
        endpoints: &[endpoint!("DELETE", None, handlers::remove_task, Task)],
    },
    Route {
        template: "/codebase-embedder/api/v1/admin/failed-tasks/{taskId}/retry",
        name: "admin_task_retry",
        documented: true,
        access: Access::Role(Role::Operate),
        endpoints: &[
            endpoint!("POST", Any, handlers::retry_task, Task),
            endpoint!("DELETE", None, handlers::cancel_retry, Task),
        ],
    },
    Route {
        template: "/codebase-embedder/api/v1/admin/failed-tasks/{taskId}/resolve",
        name: "admin_task_resolve",
        documented: true,
        access: Access::Role(Role::Operate),
        endpoints: &[endpoint!("POST", Any, handlers::resolve_task, Task)],
    },
    Route {
        template: "/codebase-embedder/api/v1/admin/retries",
        name: "admin_retries",
        documented: true,
        access: Access::Role(Role::Operate),
        endpoints: &[endpoint!(
            "POST",
            Any,
            handlers::retry_matching,
            BulkFilters
        )],
    },
    // Replays: paced retries of every match of filters, followed and stoppable.
    Route {
        template: "/codebase-embedder/api/v1/replays",
        name: "replays",
        documented: true,
        access: Access::Role(Role::Read),
        endpoints: &[endpoint!("GET", None, handlers::list_replays)],
    },
    Route {
        template: "/codebase-embedder/api/v1/replays/{replayId}",
        name: "replay",
        documented: true,
        access: Access::Role(Role::Read),
        endpoints: &[endpoint!("GET", None, handlers::get_replay)],
    },
    Route {
        template: "/codebase-embedder/api/v1/admin/replays",
        name: "admin_replays",
        documented: true,
        access: Access::Role(Role::Operate),
        endpoints: &[endpoint!("POST", Json, handlers::create_replay)],
    },
    Route {
        template: "/codebase-embedder/api/v1/admin/replays/{replayId}",
        name: "admin_replay",
        documented: true,
        access: Access::Role(Role::Operate),
        endpoints: &[endpoint!("DELETE", None, handlers::abort_replay)],
    },
    // Retry gates: hold or pace the retries of a scope.
    Route {
        template: "/codebase-embedder/api/v1/retry-gates",
        name: "retry_gates",
        documented: true,
        access: Access::Role(Role::Read),
        endpoints: &[endpoint!("GET", None, handlers::retry_gates)],
    },
    Route {
        template: "/codebase-embedder/api/v1/retry-breakers",
        name: "retry_breakers",
        documented: true,
        access: Access::Role(Role::Read),
        endpoints: &[endpoint!("GET", None, handlers::retry_breakers)],
    },
    Route {
        template: "/codebase-embedder/api/v1/admin/retry-gates",
        name: "admin_retry_gates",
        documented: true,
        access: Access::Role(Role::Operate),
        endpoints: &[endpoint!("POST", Json, handlers::create_gate)],
    },
    Route {
        template: "/codebase-embedder/api/v1/admin/retry-gates/{gateId}",
        name: "admin_retry_gate",
        documented: true,
        access: Access::Role(Role::Operate),
        endpoints: &[endpoint!("DELETE", None, handlers::release_gate)],
    },
    Route {
        template: "/codebase-embedder/api/v1/tasks/failed-stats",
        name: "failed_stats",
        documented: true,
        access: Access::Role(Role::Read),
        endpoints: &[endpoint!("GET", None, handlers::failure_stats)],
    },
    Route {
        template: "/codebase-embedder/api/v1/tasks/failed-groups",
        name: "failed_groups",
        documented: true,
        access: Access::Role(Role::Read),
        endpoints: &[endpoint!("GET", None, handlers::failure_groups)],
    },
    Route {
        template: "/codebase-embedder/api/v1/admin/task-attempts",
        name: "task_attempts",
        documented: true,
        access: Access::Role(Role::Admin),
        endpoints: &[endpoint!("POST", Json, handlers::record_attempts)],
    },
    // Successful runs: the older failures of the same task type, client and codebase are
    // superseded.
    Route {
        template: "/codebase-embedder/api/v1/admin/task-successes",
        name: "task_successes",
        documented: true,
        access: Access::Role(Role::Admin),
        endpoints: &[endpoint!("POST", Json, handlers::record_successes, Body)],
    },
    // What the presented token may do (open: it answers nulls for no token).
    Route {
        template: "/codebase-embedder/api/v1/access",
        name: "access",
        documented: true,
        access: Access::Open,
        endpoints: &[endpoint!("GET", None, handlers::access)],
    },
    // The audit log of actions.
    Route {
        template: "/codebase-embedder/api/v1/audit",
        name: "audit",
        documented: true,
        access: Access::Role(Role::Read),
        endpoints: &[endpoint!("GET", None, handlers::audit_log)],
    },
    // Notifications: the targets' delivery.
    Route {
        template: "/codebase-embedder/api/v1/notifications",
        name: "notifications",
        documented: true,
        access: Access::Role(Role::Read),
        endpoints: &[endpoint!("GET", None, handlers::notifications)],
    },
    Route {
        template: "/healthz",
        name: "healthz",
        documented: true,
        access: Access::Open,
        endpoints: &[endpoint!("GET", None, handlers::healthz)],
    },
    Route {
        template: "/readyz",
        name: "readyz",
        documented: true,
        access: Access::Open,
        endpoints: &[endpoint!("GET", None, handlers::readyz)],
    },
    Route {
        template: "/metrics",
        name: "metrics",
        documented: true,
        access: Access::Open,
        endpoints: &[endpoint!("GET", None, handlers::metrics)],
    },
    // The dashboard's static files: open (they hold no data; the API they call checks the
    // tokens), and not API, so not in docs/openapi.yaml.
    Route {
        template: "/ui",
        name: "ui_root",
        documented: false,
        access: Access::Open,
        endpoints: &[endpoint!("GET", None, ui::redirect)],
    },
    Route {
        template: "/ui/{asset*}",
        name: "ui",
        documented: false,
        access: Access::Open,
        endpoints: &[endpoint!("GET", None, ui::asset)],
    },
];

/// The label of requests that match no route.
pub(crate) const NOT_FOUND: &str = "not_found";

/// `path` against one template: the path parameter (empty when the template has none), or
/// `None` when it does not match.
fn match_template<'p>(template: &str, path: &'p str) -> Option<&'p str> {
    let mut param = "";
    let mut rest = path;
    let mut segments = template.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        rest = rest.strip_prefix('/')?;
        if segment.starts_with('{') && segment.ends_with("*}") && segments.peek().is_none() {
            return Some(rest);
        }
        let (head, tail) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        if segment.starts_with('{') && segment.ends_with('}') {
            if head.is_empty() {
                return None;
            }
            param = head;
        } else if head != segment {
            return None;
        }
        rest = tail;
    }
    rest.is_empty().then_some(param)
}

/// The route of `path` (without the query string) and its parameter. A path with one
/// trailing slash that matches nothing is tried without it (`/tasks/failed/` is the list).
pub(crate) fn find(path: &str) -> Option<(&'static Route, &str)> {
    fn exact(p: &str) -> Option<(&'static Route, &str)> {
        // A literal path wins over a template that also matches it (`tasks/failed/export`
        // over `tasks/failed/{taskId}`).
        let literal = |r: &&Route| !r.template.contains('{');
        ROUTES
            .iter()
            .filter(literal)
            .chain(ROUTES.iter().filter(|r| !literal(r)))
            .find_map(|r| match_template(r.template, p).map(|param| (r, param)))
    }
    exact(path).or_else(|| {
        path.strip_suffix('/')
            .filter(|p| !p.is_empty())
            .and_then(exact)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> Option<(&'static str, &str)> {
        find(path).map(|(r, param)| (r.name, param))
    }

    #[test]
    fn paths_find_their_route_and_parameter() {
        let table = [
            (
                "/codebase-embedder/api/v1/tasks/failed",
                Some(("list_failed", "")),
            ),
            (
                "/codebase-embedder/api/v1/tasks/failed/",
                Some(("list_failed", "")),
            ),
            (
                "/codebase-embedder/api/v1/tasks/failed/task_001",
                Some(("get_failed", "task_001")),
            ),
            ("/codebase-embedder/api/v1/tasks/failed/a/b", None),
            (
                "/codebase-embedder/api/v1/tasks/failed/export",
                Some(("export_failed", "")),
            ),
            (
                "/codebase-embedder/api/v1/tasks/failed/exports",
                Some(("get_failed", "exports")),
            ),
            (
                "/codebase-embedder/api/v1/admin/failed-tasks",
                Some(("admin_tasks", "")),
            ),
            (
                "/codebase-embedder/api/v1/admin/failed-tasks/",
                Some(("admin_tasks", "")),
            ),
            (
                "/codebase-embedder/api/v1/admin/failed-tasks/x",
                Some(("admin_task", "x")),
            ),
            (
                "/codebase-embedder/api/v1/admin/failed-tasks/x/retry",
                Some(("admin_task_retry", "x")),
            ),
            (
                "/codebase-embedder/api/v1/admin/failed-tasks/a%2Fb/resolve",
                Some(("admin_task_resolve", "a%2Fb")),
            ),
            ("/codebase-embedder/api/v1/admin/failed-tasks/x/other", None),
            (
                "/codebase-embedder/api/v1/admin/failed-tasks/x/retry/y",
                None,
            ),
            ("/codebase-embedder/api/v1/admin/failed-tasks//retry", None),
            (
                "/codebase-embedder/api/v1/admin/retries",
                Some(("admin_retries", "")),
            ),
            (
                "/codebase-embedder/api/v1/tasks/failed-stats",
                Some(("failed_stats", "")),
            ),
            (
                "/codebase-embedder/api/v1/retry-gates",
                Some(("retry_gates", "")),
            ),
            (
                "/codebase-embedder/api/v1/admin/retry-gates/g1",
                Some(("admin_retry_gate", "g1")),
            ),
            (
                "/codebase-embedder/api/v1/replays/r1",
                Some(("replay", "r1")),
            ),
            (
                "/codebase-embedder/api/v1/admin/replays",
                Some(("admin_replays", "")),
            ),
            ("/codebase-embedder/api/v1/tasks", None),
            ("/codebase-embedder/api/v2/tasks/failed", None),
            ("/healthz", Some(("healthz", ""))),
            ("/readyz", Some(("readyz", ""))),
            ("/metrics", Some(("metrics", ""))),
            ("/metrics/", Some(("metrics", ""))),
            ("/ui", Some(("ui_root", ""))),
            ("/ui/", Some(("ui", ""))),
            ("/ui/views/task.js", Some(("ui", "views/task.js"))),
            ("/uix", None),
            ("/", None),
            ("", None),
        ];
        for (path, want) in table {
            assert_eq!(route(path), want, "{path}");
        }
    }

    #[test]
    fn a_rest_parameter_takes_the_rest_of_the_path() {
        assert_eq!(match_template("/ui/{asset*}", "/ui/"), Some(""));
        assert_eq!(
            match_template("/ui/{asset*}", "/ui/views/task.js"),
            Some("views/task.js")
        );
        assert_eq!(match_template("/ui/{asset*}", "/ui"), None);
        assert_eq!(match_template("/ui/{asset*}", "/uix/a"), None);
    }

    #[test]
    fn every_template_finds_its_own_route_and_names_are_unique() {
        let mut names = std::collections::BTreeSet::new();
        for r in ROUTES {
            let path = r
                .template
                .replace("{taskId}", "t1")
                .replace("{gateId}", "g1")
                .replace("{replayId}", "r1")
                .replace("{asset*}", "a.js");
            let (found, _) = find(&path).unwrap_or_else(|| panic!("{} finds nothing", r.template));
            assert_eq!(found.template, r.template);
            assert!(names.insert(r.name), "{} named twice", r.name);
            assert!(!r.endpoints.is_empty(), "{} answers no method", r.template);
        }
    }
}

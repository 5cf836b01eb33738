//! The web dashboard served at `/ui/`: its static files, compiled into the binary.
//!
//! The dashboard is plain HTML, CSS and ES-module JavaScript under `assets/`, with no build
//! step: what is in the repository is what is served. This crate only knows the files
//! ([`ASSETS`]): each one's path below `/ui/`, bytes, content type and a strong ETag computed
//! at compile time. Serving them (headers, `304`, the security policy) is the HTTP adapter's
//! job; this crate does no IO and has no dependencies.
//!
//! # Layout of `assets/`
//! - `index.html`: the page shell (header, navigation, dialogs); no inline script or style.
//! - `app.js`: routing by the URL hash, the header controls, auto-refresh, error retry.
//! - `api.js`: the one place that calls the API (bearer token from `sessionStorage`).
//! - `dom.js`, `format.js`, `i18n.js`, `chart.js`: element building (text only, never HTML
//!   from data), times and numbers, English and Chinese labels, SVG charts.
//! - `gates.js`: retry gates in the views (a scope from the filters or a group, as text; the
//!   "Hold retries" action).
//! - `views/*.js`: Failures, Task, Overview (with the retry gates), Groups, Replays and Audit.
//!
//! # Invariants (checked by this crate's tests)
//! - Every file under `assets/` is in [`ASSETS`], and every file a page or module refers to is.
//! - No script builds markup from strings (`innerHTML` and friends are never used), so a
//!   value from the store can only ever be shown as text.
//! - The assets total less than [`MAX_TOTAL_BYTES`].

#![forbid(unsafe_code)]

/// Upper bound on the assets' total size, uncompressed (the budget).
pub const MAX_TOTAL_BYTES: usize = 300 * 1024;

/// One static file of the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// Path below `/ui/` (`index.html`, `views/failures.js`).
    pub path: &'static str,
    /// The file's bytes.
    pub body: &'static [u8],
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// A 64-bit FNV-1a hash of `body`, computed at compile time; the ETag's value.
    pub hash: u64,
}

impl Asset {
    /// The strong ETag of this file, quoted: `"0123456789abcdef"`.
    pub fn etag(&self) -> String {
        format!("\"{:016x}\"", self.hash)
    }
}

/// 64-bit FNV-1a, evaluated by the compiler for every asset.
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            body: include_bytes!(concat!("../assets/", $path)),
            content_type: $content_type,
            hash: fnv1a(include_bytes!(concat!("../assets/", $path))),
        }
    };
}

/// Every file served below `/ui/`.
pub const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("favicon.svg", SVG),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("format.js", JS),
    asset!("i18n.js", JS),
    asset!("chart.js", JS),
    asset!("gates.js", JS),
    asset!("pager.js", JS),
    asset!("views/failures.js", JS),
    asset!("views/task.js", JS),
    asset!("views/overview.js", JS),
    asset!("views/groups.js", JS),
    asset!("views/audit.js", JS),
    asset!("views/replays.js", JS),
];

/// The page served at `/ui/` itself.
pub const INDEX: &str = "index.html";

/// The asset at `path` below `/ui/` (`""` is the index page).
pub fn get(path: &str) -> Option<&'static Asset> {
    let path = if path.is_empty() { INDEX } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

/// Total size of every asset, in bytes.
pub fn total_bytes() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

//! The dashboard: plain ES modules and one stylesheet, embedded in the binary and served by
//! every master (`/` and `/ui/*`), open like `/health` since they hold no data: the page asks
//! the API with the token it is given.
//!
//! Why no front-end build: the whole UI is a few thousand lines; modern browsers load ES
//! modules natively, so `cargo build` needs no Node toolchain, nothing generated is
//! embedded, and what runs in the browser is the source in this directory. No third-party
//! code is used. See `docs/DASHBOARD.md`.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Under this path the assets are served (`/ui/app.js`).
pub const ASSETS_PREFIX: &str = "/ui";

/// What the page may load and where it may connect: only this origin, no inline script or
/// style, no framing (clickjacking), no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("index.html");

/// Every asset: its path under `/ui/`, media type and content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("style.css"),
    ),
    ("app.js", JS, include_str!("app.js")),
    ("api.js", JS, include_str!("api.js")),
    ("ui.js", JS, include_str!("ui.js")),
    ("editor.js", JS, include_str!("editor.js")),
    ("diff.js", JS, include_str!("diff.js")),
    ("chart.js", JS, include_str!("chart.js")),
    ("graph.js", JS, include_str!("graph.js")),
    ("pages/overview.js", JS, include_str!("pages/overview.js")),
    ("pages/services.js", JS, include_str!("pages/services.js")),
    ("pages/tasks.js", JS, include_str!("pages/tasks.js")),
    ("pages/jobs.js", JS, include_str!("pages/jobs.js")),
    (
        "pages/frameworks.js",
        JS,
        include_str!("pages/frameworks.js"),
    ),
    ("pages/nodes.js", JS, include_str!("pages/nodes.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// `GET /`: the page.
pub async fn index() -> Response {
    with_headers("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /ui/{*path}`: one asset, or 404.
pub async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == path) {
        Some((_, media_type, body)) => with_headers(media_type, body),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

fn with_headers(media_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let set = [
        (header::CONTENT_TYPE, media_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // Revalidated every load: a master upgraded in place serves its own build's page.
        (header::CACHE_CONTROL, "no-cache"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module the page imports is served: a missing entry would break the page.
    #[test]
    fn every_imported_module_is_an_asset() {
        let files = ASSETS
            .iter()
            .map(|(name, _, body)| (*name, *body))
            .chain(std::iter::once(("index.html", INDEX_HTML)));
        for (from, source) in files {
            let base = from.rsplit_once('/').map_or("", |(dir, _)| dir);
            let imports = source.split("from \"").skip(1);
            let scripts = source.split("src=\"/ui/").skip(1);
            for import in imports.chain(scripts) {
                let target = import.split('"').next().unwrap();
                let resolved = resolve(base, target);
                assert!(
                    ASSETS.iter().any(|(name, _, _)| *name == resolved),
                    "{from} imports {target} ({resolved}), which is not in ASSETS"
                );
            }
        }
    }

    /// `./x.js` and `../x.js` against the importing module's directory.
    fn resolve(base: &str, target: &str) -> String {
        let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
        for segment in target.split('/') {
            match segment {
                "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        parts.join("/")
    }
}

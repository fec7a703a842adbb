//! The page's files, embedded in the binary.

/// (path served at, content type, body). Path "/" is index.html.
pub(crate) const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("index.html")),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("style.css"),
    ),
];

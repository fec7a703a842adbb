//! The page's files, embedded in the binary: the HTML, the stylesheet, the
//! ES modules (no build step, the stage history's SVG charts drawn by
//! `history.js`), the vendored ANSI-to-HTML library with its
//! licence, and one favicon per job outcome (the page switches between them).

/// A favicon: a filled circle in the outcome's colour.
macro_rules! favicon {
    ($color:literal) => {
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">"#,
            r#"<circle cx="8" cy="8" r="7" fill=""#,
            $color,
            r#""/></svg>"#
        )
    };
}

/// (path served at, content type, body). Path "/" is index.html.
pub(crate) const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("index.html")),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("style.css"),
    ),
    ("/app.js", JS, include_str!("app.js")),
    ("/ansi.js", JS, include_str!("ansi.js")),
    ("/api.js", JS, include_str!("api.js")),
    ("/format.js", JS, include_str!("format.js")),
    ("/history.js", JS, include_str!("history.js")),
    ("/hub.js", JS, include_str!("hub.js")),
    ("/state.js", JS, include_str!("state.js")),
    ("/stream.js", JS, include_str!("stream.js")),
    ("/stream-worker.js", JS, include_str!("stream-worker.js")),
    ("/terminal.js", JS, include_str!("terminal.js")),
    ("/vendor/ansi_up.js", JS, include_str!("vendor/ansi_up.js")),
    (
        "/vendor/ansi_up.LICENSE.txt",
        "text/plain; charset=utf-8",
        include_str!("vendor/ansi_up.LICENSE.txt"),
    ),
    ("/favicon-idle.svg", SVG, favicon!("#8c959f")),
    ("/favicon-queued.svg", SVG, favicon!("#54aeff")),
    ("/favicon-running.svg", SVG, favicon!("#0969da")),
    ("/favicon-success.svg", SVG, favicon!("#1a7f37")),
    ("/favicon-partial.svg", SVG, favicon!("#bf8700")),
    ("/favicon-error.svg", SVG, favicon!("#cf222e")),
    ("/favicon-cancelled.svg", SVG, favicon!("#8250df")),
    ("/favicon-interrupted.svg", SVG, favicon!("#bc4c00")),
    ("/favicon.ico", SVG, favicon!("#8c959f")),
];

const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

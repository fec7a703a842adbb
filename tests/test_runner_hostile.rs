//! Hostile input to the runner: crafted job ids in every route, bodies and
//! requests no well-behaved client sends, pipeline output that tries to
//! inject HTML or SSE frames, and the headers that keep the page safe.
//! `test_runner_routes.rs` covers the plain cases (ids in a JSON body, a
//! 20 KiB body, `DELETE /api/jobs`, a cross-origin POST); this file goes
//! further. `docs/reliability.md` lists which test covers what.
#![cfg(feature = "runner")]

mod runner_common;

use std::process::Command;

use runner_common::{
    assert_well_formed, collect, create_job, events_named, get_json, raw_http, raw_status, sh,
    Server, TempDir, BIN,
};
use serde_json::{json, Value};

/// Every `Content-Security-Policy` the runner sends must forbid inline
/// script and anything not from the page's own origin.
fn assert_safe_headers(what: &str, headers: &reqwest::header::HeaderMap) {
    assert_eq!(
        headers.get("x-content-type-options").map(|v| v.as_bytes()),
        Some(&b"nosniff"[..]),
        "{what}: nosniff"
    );
    let csp = headers
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"))
        .to_str()
        .unwrap();
    for directive in ["default-src 'self'", "frame-ancestors 'none'"] {
        assert!(
            csp.split(';').any(|d| d.trim() == directive),
            "{what}: {csp} lacks {directive}"
        );
    }
    for loose in [
        "unsafe-inline",
        "unsafe-eval",
        "*",
        "data:",
        "http:",
        "https:",
    ] {
        assert!(!csp.contains(loose), "{what}: CSP allows {loose}: {csp}");
    }
    assert!(
        headers.get("access-control-allow-origin").is_none(),
        "{what}: CORS"
    );
}

#[tokio::test]
async fn hostile_job_ids_in_every_route_are_refused_not_served() {
    let srv = Server::start(sh("echo hi")).await;
    create_job(&srv.url, Some("real")).await.unwrap();
    let long = "x".repeat(10 * 1024);
    let c = runner_common::client();
    for id in [
        long.as_str(),
        &"y".repeat(65),
        "%2e%2e",
        "%2E%2E%2Fx",
        "..%2Fx",
        "..%2freal",
        "%2Freal",
        "%C3%A9",
        "%F0%9F%92%A9",
        "%EF%BC%A1",   // fullwidth A
        "a%E2%80%AEb", // right-to-left override
        "a%E2%80%8Bb", // zero-width space
        "%ff",         // not UTF-8 once decoded
        "%00",
        "a%0Ab",
        "a%0D%0Ab",
        "real%20",
        "%",
        "%zz",
        "real;rm%20-rf",
        "$(id)",
    ] {
        for (method, path) in [
            ("GET", format!("/api/jobs/{id}")),
            ("GET", format!("/api/jobs/{id}/events")),
            ("GET", format!("/api/jobs/{id}/lines")),
            ("GET", format!("/api/jobs/{id}/log")),
            ("GET", format!("/api/jobs/{id}/search?q=x")),
            ("GET", format!("/api/stream?job={id}:0")),
            ("POST", format!("/api/jobs/{id}/cancel")),
        ] {
            let req = c.request(method.parse().unwrap(), format!("{}{path}", srv.url));
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            assert_safe_headers(&path, resp.headers());
            assert!(
                status == 400 || status == 404,
                "{method} {path}: {status} (want 400 or 404)"
            );
            let body = resp.bytes().await.unwrap();
            let v: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| panic!("{path}: {}", String::from_utf8_lossy(&body)));
            assert!(v["error"].is_string(), "{path}: {v}");
        }
    }
    // An empty id.
    for path in ["/api/jobs//events", "/api/jobs//cancel", "/api/jobs/"] {
        let resp = c.get(format!("{}{path}", srv.url)).send().await.unwrap();
        let status = resp.status().as_u16();
        assert!(
            status == 400 || status == 404 || status == 405,
            "{path}: {status}"
        );
    }
    // `..` sent as is (clients normalise it away, so over a raw socket).
    for (path, want) in [
        ("/api/jobs/../events", 400),
        ("/api/jobs/../real/events", 404),
        ("/api/jobs/real/../../../etc/passwd", 404),
        ("/../../../../etc/passwd", 404),
        ("/app.js/../../Cargo.toml", 404),
    ] {
        let reply = raw_http(
            &srv.url,
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(raw_status(&reply), Some(want), "{path}");
        let text = String::from_utf8_lossy(&reply);
        assert!(!text.contains("root:") && !text.contains("[package]"));
    }
    // Nothing outside `real` was created, on disk or in the list.
    let jobs = get_json(&format!("{}/api/jobs", srv.url)).await.unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1);
    let dirs: Vec<_> = std::fs::read_dir(srv.runner.data_dir().join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(dirs, ["real"]);
    srv.shutdown().await;
}

#[tokio::test]
async fn an_id_that_looks_like_a_flag_reaches_the_child_only_as_data() {
    // Valid ids ([A-Za-z0-9_-]) can still look like options; they must never
    // become arguments.
    let srv = Server::start(sh(r#"printf '%s|%s\n' "$JOB_ID" "$#""#)).await;
    for id in ["--help", "-rf", "-", "--", "_"] {
        create_job(&srv.url, Some(id)).await.unwrap();
        let all = collect(&srv.url, id, None).await;
        assert_eq!(
            all[0].data,
            json!({"type":"output","text":format!("{id}|0")}),
            "{id}"
        );
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_4xx_never_5xx() {
    let srv = Server::start(sh("true")).await;
    let post = |body: &str, extra: &str| {
        format!(
            "POST /api/jobs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let nested = format!("{}{}", "[".repeat(8000), "]".repeat(8000));
    let deep_object = format!("{}1{}", r#"{"job_id":"#.repeat(1000), "}".repeat(1000));
    let cases: Vec<(String, Vec<u16>, &str)> = vec![
        (post(&nested, ""), vec![400], "8000-deep array"),
        (post(&deep_object, ""), vec![400], "1000-deep object"),
        (
            post(r#"{"job_id":"a","job_id":"b"}"#, ""),
            vec![400],
            "duplicate field",
        ),
        (
            post(r#"{"job_id":"a"} {"job_id":"b"}"#, ""),
            vec![400],
            "two documents",
        ),
        (
            post(r#"{"job_id":"\u002e\u002e"}"#, ""),
            vec![400],
            "escaped ..",
        ),
        (post("\u{feff}{}", ""), vec![400], "byte order mark"),
        (
            post(r#"{"job_id":"\ud800"}"#, ""),
            vec![400],
            "lone surrogate",
        ),
        (post("1e999999", ""), vec![400], "huge number"),
        (
            post("{}", "Content-Type: text/html\r\n"),
            vec![201],
            "any content type",
        ),
        (
            "POST /api/jobs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Length: 99999999999\r\n\r\n{}"
                .to_owned(),
            vec![413],
            "a huge Content-Length is refused before the body",
        ),
        (
            format!(
                "POST /api/jobs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
                format!("4000\r\n{}\r\n", " ".repeat(0x4000)).repeat(64)
            ),
            vec![413],
            "a 1 MiB chunked body without a length",
        ),
        (
            "POST /api/jobs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Transfer-Encoding: chunked\r\n\r\nzz\r\n"
                .to_owned(),
            vec![400],
            "a broken chunk size",
        ),
        (
            "POST /api/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
                .to_owned(),
            // RFC 9112 6.3: chunked wins (hyper), or the request is refused.
            vec![400, 201],
            "both Content-Length and chunked",
        ),
        (
            format!(
                "GET /api/jobs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
                "a".repeat(1024 * 1024)
            ),
            vec![431, 400],
            "a 1 MiB header",
        ),
        ("GARBAGE\r\n\r\n".to_owned(), vec![400], "not HTTP"),
        (
            "GET /api/jobs HTTP/9.9\r\nHost: localhost\r\n\r\n".to_owned(),
            vec![505, 400],
            "an unknown HTTP version",
        ),
    ];
    let mut cases: Vec<(Vec<u8>, Vec<u16>, &str)> = cases
        .into_iter()
        .map(|(r, w, what)| (r.into_bytes(), w, what))
        .collect();
    cases.push((
        b"GET /api/jobs/real/events HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
          Last-Event-ID: \xff\xfe\r\n\r\n"
            .to_vec(),
        vec![400, 404],
        "Last-Event-ID not UTF-8",
    ));
    let mut created = 0;
    for (request, want, what) in cases {
        let reply = raw_http(&srv.url, &request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = raw_status(&reply);
        assert!(
            status.is_some_and(|s| want.contains(&s)),
            "{what}: {status:?}, want {want:?}: {}",
            String::from_utf8_lossy(&reply[..reply.len().min(300)])
        );
        created += usize::from(status == Some(201));
        if status != Some(201) && status != Some(505) {
            let text = String::from_utf8_lossy(&reply);
            // Our own errors are JSON; hyper's (not HTTP at all) have no body.
            let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
            assert!(
                body.is_empty() || body.starts_with("{\"error\":"),
                "{what}: {text}"
            );
        }
    }
    // A body shorter than its Content-Length, then the client goes away.
    let reply = raw_http(
        &srv.url,
        b"POST /api/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"job",
    );
    let reply = tokio::time::timeout(std::time::Duration::from_millis(500), reply).await;
    assert!(reply.is_err(), "the server waits for the rest of the body");
    // Still serving, and only the valid requests made jobs.
    let list = get_json(&format!("{}/api/jobs", srv.url)).await.unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), created, "{list}");
    srv.shutdown().await;
}

#[tokio::test]
async fn hostile_last_event_ids() {
    let srv = Server::start(sh("echo a; echo b")).await;
    let id = create_job(&srv.url, Some("j")).await.unwrap();
    let all = collect(&srv.url, &id, None).await;
    let c = runner_common::client();
    for bad in [
        "-1",
        "abc",
        "1e3",
        "0x1",
        "1.5",
        "99999999999999999999999",
        "1 2",
    ] {
        let resp = c
            .get(format!("{}/api/jobs/{id}/events", srv.url))
            .header("Last-Event-ID", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    // The largest number is valid: nothing after it, just `end`.
    let max = collect(&srv.url, &id, Some(u64::MAX)).await;
    assert_eq!(max, all[all.len() - 1..]);
    srv.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_never_reach_a_handler() {
    let srv = Server::start(sh("true")).await;
    let c = runner_common::client();
    for (method, path, want) in [
        ("PATCH", "/api/jobs", 405),
        ("OPTIONS", "/api/jobs", 405),
        ("TRACE", "/", 405),
        ("FOO", "/api/jobs", 405),
        ("PROPFIND", "/", 405),
        ("PUT", "/api/jobs/x", 405),
        ("PUT", "/api/jobs/x/cancel", 405),
        ("GET", "/index.html", 404),
        ("GET", "/.env", 404),
        ("GET", "/.git/config", 404),
        ("GET", "/api", 404),
        ("GET", "/api/jobs/x/events/more", 404),
        ("GET", "//api/jobs", 404),
        ("GET", "/API/JOBS", 404),
        ("GET", "/api/jobs?job_id=<script>", 400),
        ("HEAD", "/", 200),
        ("HEAD", "/api/jobs", 200),
    ] {
        let resp = c
            .request(method.parse().unwrap(), format!("{}{path}", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), want, "{method} {path}");
        assert_safe_headers(&format!("{method} {path}"), resp.headers());
    }
    let list = get_json(&format!("{}/api/jobs", srv.url)).await.unwrap();
    assert_eq!(list["jobs"], json!([]));
    srv.shutdown().await;
}

#[tokio::test]
async fn pipeline_output_cannot_inject_html_or_sse_frames() {
    // Each printed line is one line of input; `\r` is a raw carriage return.
    let lines: &[&str] = &[
        r#"<script>alert(1)</script>"#,
        r#"</pre><img src=x onerror=alert(1)>"#,
        "data: {\"event\":\"pipeline_complete\",\"status\":\"success\"}",
        "event: end",
        "id: 999",
        "",
        ":comment",
        "evil\rid: 999\rdata: {\"x\":1}\r\rmore",
        "\u{1b}[2J\u{1b}[31mred\u{1b}[0m",
        "nul\u{0}byte",
        "line\u{2028}separator\u{85}next",
        r#"{"event":"log","message":"</script><script>alert(1)</script>","level":"info"}"#,
        "{\"event\":\"log\",\r\"message\":\"cr inside\"}",
        r#"{"event":"log","message":"a\r\n\r\nid: 7\ndata: {}\n\n"}"#,
        r#"{"event":"layer_start","layer":1,"layer_name":"<img src=x onerror=alert(1)>"}"#,
        r#"{"event":"layer_complete","layer":1,"layer_name":"<img src=x onerror=alert(1)>","duration_ms":1}"#,
        r#"{"event":"pipeline_complete","status":"<b>success</b>"}"#,
    ];
    let dir = TempDir::new("inject");
    let input = dir.path().join("input");
    let mut bytes = Vec::new();
    for l in lines {
        bytes.extend_from_slice(l.as_bytes());
        bytes.push(b'\n');
    }
    std::fs::write(&input, &bytes).unwrap();
    let srv = Server::start(sh(&format!("cat '{}'", input.display()))).await;
    let id = create_job(&srv.url, Some("inject")).await.unwrap();

    // The raw stream: every message is `id:` + one `data:` line, or the end.
    let resp = runner_common::client()
        .get(format!("{}/api/jobs/{id}/events", srv.url))
        .send()
        .await
        .unwrap();
    assert_safe_headers("events", resp.headers());
    let raw = String::from_utf8(resp.bytes().await.unwrap().to_vec()).unwrap();
    assert!(!raw.contains('\r'));
    let frames: Vec<&str> = raw.split("\n\n").filter(|f| !f.is_empty()).collect();
    for (i, frame) in frames.iter().enumerate() {
        let mut parts = frame.split('\n');
        if i + 1 < frames.len() {
            assert_eq!(parts.next(), Some(format!("id: {}", i + 1).as_str()));
        } else {
            assert_eq!(parts.next(), Some("event: end"));
        }
        assert!(parts.next().unwrap().starts_with("data: {"), "{frame:?}");
        assert_eq!(parts.next(), None, "{frame:?}");
    }

    let all = collect(&srv.url, &id, None).await;
    assert_well_formed(&all, 0);
    // One message per line; the child printed its own pipeline_complete.
    assert_eq!(all.len(), lines.len() + 1);
    for (line, msg) in lines.iter().zip(&all) {
        let as_event: Option<Value> = serde_json::from_str(line).ok();
        match as_event {
            Some(v @ Value::Object(_)) => assert_eq!(msg.data, v, "{line:?}"),
            _ => assert_eq!(msg.data, json!({"type":"output","text":line}), "{line:?}"),
        }
    }
    // The stage name is kept as data in the JSON API too.
    let stages = runner_common::client()
        .get(format!("{}/api/stages", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(stages.headers()["content-type"], "application/json");
    assert_safe_headers("stages", stages.headers());
    let stages: Value = serde_json::from_slice(&stages.bytes().await.unwrap()).unwrap();
    assert_eq!(
        (
            &stages["stages"][0]["layer"],
            &stages["stages"][0]["layer_name"]
        ),
        (&json!(1), &json!("<img src=x onerror=alert(1)>"))
    );
    // An unknown status counts as `error`, the worst.
    let detail = get_json(&format!("{}/api/jobs/{id}", srv.url))
        .await
        .unwrap();
    assert_eq!(detail["status"], "error");
    assert_eq!(events_named(&all, "pipeline_complete").len(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn every_response_carries_nosniff_and_a_strict_csp() {
    let srv = Server::start(sh("echo hi; sleep 30")).await;
    let c = runner_common::client();
    let u = |p: &str| format!("{}{p}", srv.url);
    let running = create_job(&srv.url, Some("running")).await.unwrap();
    let mut responses = vec![
        ("page", c.get(u("/")).send().await.unwrap()),
        ("js", c.get(u("/app.js")).send().await.unwrap()),
        ("css", c.get(u("/style.css")).send().await.unwrap()),
        ("list", c.get(u("/api/jobs")).send().await.unwrap()),
        (
            "detail",
            c.get(u("/api/jobs/running")).send().await.unwrap(),
        ),
        ("stages", c.get(u("/api/stages")).send().await.unwrap()),
        ("health", c.get(u("/api/health")).send().await.unwrap()),
        (
            "lines",
            c.get(u("/api/jobs/running/lines")).send().await.unwrap(),
        ),
        (
            "log",
            c.get(u("/api/jobs/running/log")).send().await.unwrap(),
        ),
        (
            "search",
            c.get(u("/api/jobs/running/search?q=hi"))
                .send()
                .await
                .unwrap(),
        ),
        (
            "stream",
            c.get(u("/api/stream?job=running:0&jobs=1"))
                .send()
                .await
                .unwrap(),
        ),
        ("404", c.get(u("/nope")).send().await.unwrap()),
        ("405", c.delete(u("/api/jobs")).send().await.unwrap()),
        ("400", c.get(u("/api/jobs/a%20b")).send().await.unwrap()),
        (
            "413",
            c.post(u("/api/jobs"))
                .body(vec![b' '; 20_000])
                .send()
                .await
                .unwrap(),
        ),
        (
            "403",
            c.post(u("/api/jobs"))
                .header("Origin", "http://evil.example")
                .send()
                .await
                .unwrap(),
        ),
        (
            "409",
            c.post(u("/api/jobs"))
                .body(r#"{"job_id":"running"}"#)
                .send()
                .await
                .unwrap(),
        ),
        (
            "201",
            c.post(u("/api/jobs"))
                .body(r#"{"job_id":"other"}"#)
                .send()
                .await
                .unwrap(),
        ),
        (
            "events",
            c.get(u(&format!("/api/jobs/{running}/events")))
                .send()
                .await
                .unwrap(),
        ),
        (
            "202",
            c.post(u(&format!("/api/jobs/{running}/cancel")))
                .send()
                .await
                .unwrap(),
        ),
    ];
    for (what, resp) in responses.drain(..) {
        assert_safe_headers(what, resp.headers());
        if what == "405" {
            let allow = resp.headers()["allow"].to_str().unwrap();
            assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
        }
        if let Ok(code) = what.parse::<u16>() {
            assert_eq!(resp.status().as_u16(), code, "{what}");
            let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
            assert!(v.is_object(), "{what}: {v}");
        }
    }
    srv.shutdown().await;
}

/// The page must work under its own CSP: no inline script, style or event
/// handler. (That app.js inserts pipeline text as text is the browser
/// test's to show.)
#[test]
fn the_page_needs_nothing_inline() {
    let html = include_str!("../src/runner/page/index.html").to_ascii_lowercase();
    let mut rest = html.as_str();
    while let Some(i) = rest.find("<script") {
        let tag_end = rest[i..].find('>').unwrap() + i;
        let tag = &rest[i..=tag_end];
        // A same-origin file: a relative path (so the page also works under
        // a proxy's sub-path), never another host.
        let src = tag
            .split("src=\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .unwrap_or_else(|| panic!("inline script: {tag}"));
        assert!(
            !src.is_empty() && !src.contains(':') && !src.starts_with("//"),
            "external script: {tag}"
        );
        assert!(
            rest[tag_end + 1..].starts_with("</script>"),
            "a script element with a body"
        );
        rest = &rest[tag_end + 1..];
    }
    assert!(!html.contains("<style"), "inline <style>");
    assert!(!html.contains("style="), "a style attribute");
    assert!(!html.contains("javascript:"));
    let handler = html.split(|c: char| c.is_whitespace()).find(|w| {
        w.starts_with("on")
            && w.contains('=')
            && w[2..w.find('=').unwrap()]
                .chars()
                .all(|c| c.is_ascii_alphabetic())
    });
    assert_eq!(handler, None, "an inline event handler");
}

#[test]
fn listening_beyond_loopback_needs_a_flag_and_warns() {
    // Refused without --allow-remote, for IPv6 and an IPv4-mapped address too
    // (`test_runner_process.rs` covers 0.0.0.0).
    for addr in ["[::]:0", "[::ffff:127.0.0.1]:0", "192.0.2.1:0"] {
        let out = Command::new(BIN).args(["--bind", addr]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{addr}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--allow-remote") && err.contains("no authentication"));
    }
    // With the flag, the warning comes first, before anything else happens.
    // (The data directory is made to fail so that nothing listens on a
    // non-loopback address during the test.)
    let dir = TempDir::new("remote");
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let out = Command::new(BIN)
        .args(["--bind", "0.0.0.0:0", "--allow-remote", "--data-dir"])
        .arg(file.join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.contains("WARNING") && first.contains("no authentication"),
        "{err}"
    );
    assert!(err.contains("data directory"), "{err}");
    assert!(out.stdout.is_empty(), "it must not claim to listen");
}

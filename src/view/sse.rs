//! Following a runner's job: its URL, its Server-Sent Events, reconnects.
//!
//! Only the job's event stream, `GET /api/jobs/{id}/events`, is read: each
//! message's `data` is one line of the job (`id: N` numbers it), and an
//! `event: end` message closes the job. When the connection drops before
//! `end`, the view connects again with `Last-Event-ID: N`, so the runner
//! sends only the lines after the last one shown: none is shown twice or
//! lost. It gives up after [`GIVE_UP_AFTER`] (or `--retry SECS`) without a
//! working connection.

use std::io::{BufRead, BufReader};
use std::sync::mpsc::Sender;
use std::thread;
use std::time::{Duration, Instant};

use super::input::{line_text, read_line_capped, End, Message, MAX_LINE};
use super::model::classify_runner_data;

/// How long the view keeps trying to reconnect before it gives up, unless
/// told otherwise.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// The runner sends a comment every 15 s: a read that waits much longer
/// than that is a dead connection.
const READ_TIMEOUT: Duration = Duration::from_secs(45);

/// The event-stream URL for a job's page URL (`http://HOST:PORT/#/jobs/ID`,
/// also under a sub-path) or API URL (`http://HOST:PORT/api/jobs/ID`, with
/// or without `/events`); `None` when `url` is neither.
pub fn events_url(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    if rest.is_empty() {
        return None;
    }
    let scheme = &url[..url.len() - rest.len()];
    let valid_id = |id: &str| {
        !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let (before_hash, hash) = match rest.split_once('#') {
        Some((b, h)) => (b, Some(h)),
        None => (rest, None),
    };
    if let Some(hash) = hash.filter(|h| !h.is_empty()) {
        let id = hash.strip_prefix("/jobs/")?;
        if !valid_id(id) {
            return None;
        }
        let base = before_hash.trim_end_matches('/');
        let base = base.split_once('?').map_or(base, |(b, _)| b);
        return Some(format!("{scheme}{base}/api/jobs/{id}/events"));
    }
    let path = before_hash.trim_end_matches('/');
    let (base, tail) = path.split_once("/api/jobs/")?;
    let id = tail.strip_suffix("/events").unwrap_or(tail);
    if !valid_id(id) {
        return None;
    }
    Some(format!("{scheme}{base}/api/jobs/{id}/events"))
}

/// One message of an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseMessage {
    /// Its `id`, if it had one.
    pub id: Option<String>,
    /// Its `event` type; `None` for the default `message`.
    pub event: Option<String>,
    /// Its `data` lines, joined with `\n`.
    pub data: String,
}

/// Event-stream lines in, messages out (the WHATWG rules: `field: value`,
/// one optional space after the colon, comments start with `:`, a blank
/// line dispatches, a message without data is dropped).
#[derive(Debug, Default)]
pub struct SseParser {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// A parser between messages.
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Takes one line (without its line ending); a message when it ends one.
    pub fn line(&mut self, line: &str) -> Option<SseMessage> {
        if line.is_empty() {
            let id = self.id.take();
            let event = self.event.take();
            let data = self.data.take()?;
            return Some(SseMessage { id, event, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

/// What one connection achieved.
enum Outcome {
    /// `event: end` arrived.
    Ended,
    /// The stream broke after `progress` new lines.
    Broken { why: String, progress: bool },
    /// The runner refused the request: retrying will not help.
    Refused(String),
    /// The view is gone.
    Closed,
}

/// Follows `url` (an event-stream URL) on a thread.
pub(crate) fn spawn_follow(url: String, give_up_after: Duration, tx: Sender<Message>) {
    thread::spawn(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout_read(READ_TIMEOUT)
            .build();
        let mut last_id: Option<String> = None;
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        let end = loop {
            match connect_once(&agent, &url, &mut last_id, &tx) {
                Outcome::Ended => break End::Done,
                Outcome::Closed => return,
                Outcome::Refused(why) => break End::Failed(why),
                Outcome::Broken { why, progress } => {
                    if progress {
                        failing_since = None;
                        backoff = Duration::from_millis(100);
                    }
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= give_up_after {
                        break End::Failed(format!(
                            "{why}; gave up after {}s of retrying",
                            give_up_after.as_secs_f64()
                        ));
                    }
                    let resume = last_id
                        .as_deref()
                        .map(|id| format!(" after line {id}"))
                        .unwrap_or_default();
                    if tx
                        .send(Message::Notice(format!("{why}; reconnecting{resume}")))
                        .is_err()
                    {
                        return;
                    }
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
        let _ = tx.send(Message::End(end));
    });
}

fn connect_once(
    agent: &ureq::Agent,
    url: &str,
    last_id: &mut Option<String>,
    tx: &Sender<Message>,
) -> Outcome {
    let mut req = agent
        .get(url)
        .set("Accept", "text/event-stream")
        .set("Cache-Control", "no-cache");
    if let Some(id) = last_id.as_deref() {
        req = req.set("Last-Event-ID", id);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, resp)) => {
            let body = resp.into_string().unwrap_or_default();
            let why = format!("{url}: HTTP {code} {}", body.trim());
            return if code >= 500 {
                Outcome::Broken {
                    why,
                    progress: false,
                }
            } else {
                Outcome::Refused(why)
            };
        }
        Err(e) => {
            return Outcome::Broken {
                why: format!("{url}: {e}"),
                progress: false,
            }
        }
    };
    let mut reader = BufReader::with_capacity(64 * 1024, resp.into_reader());
    let mut parser = SseParser::new();
    let mut buf = Vec::new();
    let mut progress = false;
    loop {
        let total = match read_line_capped(&mut reader, &mut buf, MAX_LINE + 64) {
            Ok(Some(total)) => total,
            Ok(None) => {
                return Outcome::Broken {
                    why: "the event stream closed before its end".to_owned(),
                    progress,
                }
            }
            Err(e) => {
                return Outcome::Broken {
                    why: format!("the event stream broke: {e}"),
                    progress,
                }
            }
        };
        let line = line_text(&buf, total);
        let Some(msg) = parser.line(&line) else {
            continue;
        };
        if msg.event.as_deref() == Some("end") {
            return Outcome::Ended;
        }
        if msg.id.is_some() {
            *last_id = msg.id.clone();
        }
        progress = true;
        if tx
            .send(Message::Item(classify_runner_data(&msg.data)))
            .is_err()
        {
            return Outcome::Closed;
        }
    }
}

/// Reads every message of a whole event stream (for tests and tools).
pub fn parse_all<R: BufRead>(mut reader: R) -> std::io::Result<Vec<SseMessage>> {
    let mut parser = SseParser::new();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(total) = read_line_capped(&mut reader, &mut buf, MAX_LINE + 64)? {
        if let Some(m) = parser.line(&line_text(&buf, total)) {
            out.push(m);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_urls_map_to_the_event_stream() {
        let want = Some("http://127.0.0.1:8000/api/jobs/abc-1/events".to_owned());
        for url in [
            "http://127.0.0.1:8000/#/jobs/abc-1",
            "http://127.0.0.1:8000#/jobs/abc-1",
            "http://127.0.0.1:8000/api/jobs/abc-1",
            "http://127.0.0.1:8000/api/jobs/abc-1/",
            "http://127.0.0.1:8000/api/jobs/abc-1/events",
        ] {
            assert_eq!(events_url(url), want, "{url}");
        }
        assert_eq!(
            events_url("https://h/runner/#/jobs/x_2").as_deref(),
            Some("https://h/runner/api/jobs/x_2/events")
        );
        for bad in [
            "ftp://h/api/jobs/a",
            "http://h/",
            "http://h/#/jobs/",
            "http://h/#/jobs/../x",
            "http://h/api/jobs/a/b",
            "http://h/#/other",
            "http://",
        ] {
            assert_eq!(events_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn sse_lines_make_messages() {
        let text =
            "id: 7\ndata: {\"a\":1}\n\n: keep-alive\n\nevent: end\ndata: x\ndata:y\n\nid: 9\n\n";
        let msgs = parse_all(text.as_bytes()).unwrap();
        assert_eq!(
            msgs,
            vec![
                SseMessage {
                    id: Some("7".into()),
                    event: None,
                    data: "{\"a\":1}".into()
                },
                SseMessage {
                    id: None,
                    event: Some("end".into()),
                    data: "x\ny".into()
                },
            ]
        );
    }

    #[test]
    fn crlf_streams_parse_too() {
        let msgs = parse_all("id: 1\r\ndata: z\r\n\r\n".as_bytes()).unwrap();
        assert_eq!(msgs[0].data, "z");
        assert_eq!(msgs[0].id.as_deref(), Some("1"));
    }
}

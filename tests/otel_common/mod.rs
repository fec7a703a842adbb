//! A real OTLP/HTTP receiver for the OpenTelemetry tests: a plain HTTP/1.1
//! server on 127.0.0.1 port 0 (a thread per connection) that decodes each
//! request with the protocol's generated types (`opentelemetry-proto`,
//! prost), or answers 500, or reads and never answers.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    Accept,
    Fail500,
    Hang,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: ExportTraceServiceRequest,
}

/// A real OTLP/HTTP receiver on a loopback port, stopped on drop.
pub struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start(mode: Mode) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopped) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let reqs = Arc::clone(&reqs);
                let stopped = Arc::clone(&stopped);
                std::thread::spawn(move || serve(conn, mode, &reqs, &stopped));
            }
        });
        Receiver {
            addr,
            requests,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn spans(&self) -> Vec<(Span, HashMap<String, any_value::Value>)> {
        let mut out = Vec::new();
        for r in self.requests() {
            for rs in r.body.resource_spans {
                let resource = attrs(&rs.resource.map(|r| r.attributes).unwrap_or_default());
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        out.push((s, resource.clone()));
                    }
                }
            }
        }
        out
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, mode: Mode, reqs: &Mutex<Vec<Request>>, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        match mode {
            Mode::Hang => {
                // Accepts, reads, never answers.
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            Mode::Fail500 => {
                let _ = conn.write_all(
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nboom",
                );
            }
            Mode::Accept => {
                let decoded = ExportTraceServiceRequest::decode(body.as_slice())
                    .expect("an OTLP protobuf request");
                reqs.lock().unwrap().push(Request {
                    path,
                    headers,
                    body: decoded,
                });
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                );
            }
        }
    }
}

pub fn attrs(kvs: &[KeyValue]) -> HashMap<String, any_value::Value> {
    kvs.iter()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?.value?)))
        .collect()
}

pub fn string(v: Option<&any_value::Value>) -> Option<&str> {
    match v {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

pub fn int(v: Option<&any_value::Value>) -> Option<i64> {
    match v {
        Some(any_value::Value::IntValue(n)) => Some(*n),
        _ => None,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

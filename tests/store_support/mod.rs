//! A tiny HTTP/1.1 server standing in for a hostile or unusual secret store: it answers each
//! request with what the test's handler returns, can stream a body without end, and counts
//! the requests per path and the body bytes it managed to send.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One answer.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// A status and a body (sent with its length).
    Body(u16, String),
    /// A 200 whose body (no length, ended by closing) streams this many bytes of JSON-ish
    /// filler, or until the client goes away.
    Stream(u64),
    /// Wait, then answer.
    Delay(Duration, Box<Answer>),
}

type Handler = dyn Fn(&str, &str, usize) -> Answer + Send + Sync;

/// A running store on 127.0.0.1; stops when dropped.
pub(crate) struct Store {
    pub(crate) addr: String,
    sent: Arc<AtomicU64>,
    requests: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Store {
    /// Serves `handler(method, path, nth)`, where `nth` counts earlier requests of that path.
    pub(crate) async fn start(
        handler: impl Fn(&str, &str, usize) -> Answer + Send + Sync + 'static,
    ) -> Store {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let sent = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(Mutex::new(HashMap::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s, r) = (sent.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, r, h) = (s.clone(), r.clone(), handler.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &s, &r, h.as_ref()).await;
                });
            }
        });
        Store {
            addr,
            sent,
            requests,
            task,
        }
    }

    /// Body bytes written to clients so far.
    pub(crate) fn sent_bytes(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Requests of `path` so far.
    pub(crate) fn requests(&self, path: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

async fn serve(
    mut stream: TcpStream,
    sent: &AtomicU64,
    requests: &Mutex<HashMap<String, usize>>,
    handler: &Handler,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut first = head.lines().next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    let nth = {
        let mut requests = requests.lock().unwrap();
        let n = requests.entry(path.clone()).or_insert(0);
        *n += 1;
        *n - 1
    };
    let mut answer = handler(&method, &path, nth);
    loop {
        match answer {
            Answer::Delay(wait, inner) => {
                tokio::time::sleep(wait).await;
                answer = *inner;
            }
            Answer::Body(status, body) => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(body.as_bytes()).await?;
                sent.fetch_add(body.len() as u64, Ordering::SeqCst);
                return stream.shutdown().await;
            }
            Answer::Stream(total) => {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"data\":{\"v\":\"")
                    .await?;
                let chunk = vec![b'x'; 64 * 1024];
                let mut written = 0u64;
                while written < total {
                    stream.write_all(&chunk).await?;
                    written += chunk.len() as u64;
                    sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
                stream.write_all(b"\"}}").await?;
                return stream.shutdown().await;
            }
        }
    }
}

/// A Vault login answer with a token.
pub(crate) fn login_ok() -> Answer {
    Answer::Body(
        200,
        r#"{"auth":{"client_token":"hvs.fake-store-token","lease_duration":3600}}"#.into(),
    )
}

/// A JWT whose claims name ServiceAccount `ns/sa` (unsigned: the fake store does not check).
pub(crate) fn unsigned_jwt(ns: &str, sa: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let claims = format!(
        r#"{{"iss":"test","sub":"system:serviceaccount:{ns}:{sa}","kubernetes.io":{{"serviceaccount":{{"name":"{sa}","uid":"uid-{sa}"}}}}}}"#
    );
    format!("{}.{}.sig", b64(r#"{"alg":"none"}"#), b64(&claims))
}

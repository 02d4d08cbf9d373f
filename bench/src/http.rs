//! A lean HTTP/1.1 client for load: pre-built request bytes over one keep-alive connection
//! (plain TCP, or TLS for an HTTPS [`Target`]), and a parser that reads only the status line,
//! `content-length` and the body.

use std::io;
use std::sync::Arc;

use lockserver_protocol::SECRET_HEADER;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where load goes: `host:port`, and the TLS client settings when it speaks HTTPS.
#[derive(Clone)]
pub struct Target {
    /// `host:port`.
    pub addr: String,
    /// HTTPS with these settings; plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    /// Plain HTTP to `addr`.
    pub fn plain(addr: &str) -> Target {
        Target { addr: addr.to_string(), tls: None }
    }
}

/// A byte stream a connection runs over.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Builds the bytes of one request.
pub fn request(method: &str, path: &str, secret: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\n{SECRET_HEADER}: {secret}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One keep-alive connection.
pub struct Conn {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    /// Bytes of `buf` that belong to the last response (dropped before the next read).
    consumed: usize,
}

impl Conn {
    /// Connects to `addr` (`host:port`).
    pub async fn connect(addr: &str) -> io::Result<Conn> {
        Conn::open(&Target::plain(addr)).await
    }

    /// Connects to `target`, with the TLS handshake when it speaks HTTPS.
    pub async fn open(target: &Target) -> io::Result<Conn> {
        let tcp = TcpStream::connect(&target.addr).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match &target.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = ServerName::try_from("localhost").expect("a DNS name");
                Box::new(TlsConnector::from(config.clone()).connect(name, tcp).await?)
            }
        };
        Ok(Conn { stream, buf: Vec::with_capacity(4096), consumed: 0 })
    }

    /// Sends a request without waiting for its response.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.stream.write_all(request).await?;
        self.stream.flush().await
    }

    /// Sends a request and reads its response: the status and the body.
    pub async fn call(&mut self, request: &[u8]) -> io::Result<(u16, &[u8])> {
        self.send(request).await?;
        self.response().await
    }

    /// Reads the next response.
    pub async fn response(&mut self) -> io::Result<(u16, &[u8])> {
        self.buf.drain(..self.consumed);
        self.consumed = 0;
        loop {
            if let Some(head) = find(&self.buf, b"\r\n\r\n") {
                let head_len = head + 4;
                let length = content_length(&self.buf[..head]).unwrap_or(0);
                if self.buf.len() >= head_len + length {
                    let status = parse_status(&self.buf)?;
                    self.consumed = head_len + length;
                    return Ok((status, &self.buf[head_len..head_len + length]));
                }
            }
            let mut chunk = [0u8; 4096];
            let read = self.stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..read]);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn parse_status(bytes: &[u8]) -> io::Result<u16> {
    std::str::from_utf8(bytes.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP/1.1 response"))
}

fn content_length(head: &[u8]) -> Option<usize> {
    head.split(|b| *b == b'\n').find_map(|line| {
        let line = std::str::from_utf8(line).ok()?.trim();
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
    })
}

/// The number after `"field":` in a JSON body (enough for tokens and counts).
pub fn json_u64(body: &[u8], field: &str) -> Option<u64> {
    let key = format!("\"{field}\":");
    let at = find(body, key.as_bytes())? + key.len();
    let digits: String = body[at..].iter().map(|b| *b as char).take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

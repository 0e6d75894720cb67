//! Accepting the socket path that kubelet < 1.26 and gRPC-core clients send as `:authority`.
//!
//! On a unix socket, grpc-go before 1.33-ish (every kubelet before 1.26, kubernetes#112597)
//! and gRPC core (Python `grpcio`, C++, Ruby) send the socket's path as the HTTP/2
//! `:authority`. h2, under hyper and tonic, parses `:authority` with `http::uri::Authority`,
//! which refuses a `/`, and resets the stream with PROTOCOL_ERROR; h2 has no option to relax
//! this (hyperium/h2#487 is still open, hyperium/hyper#3750 was declined). grpc-go's server,
//! which the upstream driver uses, does not look at the authority at all.
//!
//! So the bytes a client sends pass through [`AuthorityTolerant`] before hyper reads them.
//! Every frame goes through unchanged, except header blocks (HEADERS and its CONTINUATIONs):
//! these are decoded with an HPACK decoder that follows the client's dynamic table, an
//! `:authority` that `http::uri::Authority` does not accept becomes `localhost` (what kubelet
//! ≥ 1.26 sends), and the block is encoded again with "literal without indexing" only, so the
//! server's decoder table stays empty and never depends on the client's. Padding is dropped,
//! PRIORITY data kept, the block re-split at the frame size limit. Nothing else is relaxed:
//! h2 still checks everything it checked (pseudo-headers, names, values, sizes), because it
//! receives the same header list. keymount's services do not read the authority.
//!
//! Bounded: a HEADERS or CONTINUATION frame above the server's frame size limit (the limit a
//! conforming client keeps to, [`MAX_FRAME_SIZE`]), a header block above
//! [`MAX_HEADER_BLOCK`] encoded or [`MAX_HEADER_LIST`] decoded, more than
//! [`MAX_CONTINUATIONS`] CONTINUATIONs, a dynamic table above the protocol's 4096 bytes, a
//! table size update after a field, a PUSH_PROMISE (a client may not send one), or a broken
//! HPACK block ends the connection, as h2 would. Other frames stream through without being buffered.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The frame size limit of the server (SETTINGS_MAX_FRAME_SIZE), set on the tonic server too.
pub(crate) const MAX_FRAME_SIZE: u32 = 16 * 1024;
/// The header list size limit of the server (SETTINGS_MAX_HEADER_LIST_SIZE, hyper's default),
/// set on the tonic server too.
pub(crate) const MAX_HEADER_LIST_SERVER: u32 = 16 * 1024;
/// The largest decoded header list (RFC 7541 sizes: name + value + 32 each) passed on. Twice
/// the server's limit, so that h2 still answers a list it refuses in its own way.
pub(crate) const MAX_HEADER_LIST: usize = 2 * MAX_HEADER_LIST_SERVER as usize;
/// The largest encoded header block accepted.
pub(crate) const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// The most CONTINUATION frames one header block may have (empty ones count too).
pub(crate) const MAX_CONTINUATIONS: usize = 128;
/// HPACK's dynamic table size; the server never announces another.
const HEADER_TABLE_SIZE: usize = 4096;
/// What a path authority becomes.
const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

const PREFACE_LEN: usize = 24;
const FRAME_HEAD_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_PUSH_PROMISE: u8 = 0x5;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Why a client's byte stream was refused (the connection is closed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum RewriteError {
    #[error("header frame of {0} bytes exceeds the frame size limit")]
    FrameTooLarge(usize),
    #[error("header block exceeds {MAX_HEADER_BLOCK} bytes or {MAX_CONTINUATIONS} CONTINUATIONs")]
    BlockTooLarge,
    #[error("decoded header list exceeds {MAX_HEADER_LIST} bytes")]
    ListTooLarge,
    #[error("frame of type {0:#x} inside a header block of stream {1}")]
    ExpectedContinuation(u8, u32),
    #[error("CONTINUATION without a header block")]
    UnexpectedContinuation,
    #[error("PUSH_PROMISE from a client")]
    PushPromise,
    #[error("HEADERS on stream 0")]
    StreamZero,
    #[error("padding or priority longer than the frame")]
    BadPadding,
    #[error("HPACK: {0}")]
    Hpack(String),
}

/// The frame head of a HEADERS or CONTINUATION frame being collected.
#[derive(Debug, Clone, Copy)]
struct Head {
    kind: u8,
    flags: u8,
    stream: u32,
}

#[derive(Debug)]
enum State {
    /// The client connection preface, passed on unchanged.
    Preface { left: usize },
    /// Collecting a frame head in `buf`.
    FrameHead,
    /// Passing on the payload of any other frame.
    Passing { left: usize },
    /// Collecting the payload of a HEADERS or CONTINUATION frame in `buf`.
    HeaderPayload { head: Head, left: usize },
}

/// A header block in progress (HEADERS without END_HEADERS so far).
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragments: Vec<u8>,
    continuations: usize,
}

/// The client-to-server byte stream transformer (no I/O): bytes in, bytes for h2 out.
pub(crate) struct Rewriter {
    state: State,
    buf: Vec<u8>,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
}

impl fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rewriter")
            .field("state", &self.state)
            .field("buffered", &self.buf.len())
            .field("block", &self.block.as_ref().map(|b| b.stream))
            .finish_non_exhaustive()
    }
}

impl Default for Rewriter {
    fn default() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Self {
            state: State::Preface { left: PREFACE_LEN },
            buf: Vec::with_capacity(FRAME_HEAD_LEN),
            block: None,
            decoder,
        }
    }
}

impl Rewriter {
    /// Consumes `input` (any split of the client's bytes), appending what h2 is to read to `out`.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), RewriteError> {
        while !input.is_empty() {
            match &mut self.state {
                State::Preface { left } | State::Passing { left } => {
                    let n = (*left).min(input.len());
                    out.put_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n;
                    if *left == 0 {
                        self.state = State::FrameHead;
                    }
                }
                State::FrameHead => {
                    let n = (FRAME_HEAD_LEN - self.buf.len()).min(input.len());
                    self.buf.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.buf.len() == FRAME_HEAD_LEN {
                        self.frame_head(out)?;
                    }
                }
                State::HeaderPayload { head, left } => {
                    let head = *head;
                    let n = (*left).min(input.len());
                    self.buf.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n;
                    if *left == 0 {
                        self.state = State::FrameHead;
                        let payload = std::mem::take(&mut self.buf);
                        self.header_frame(head, &payload, out)?;
                        self.buf = payload;
                        self.buf.clear();
                    }
                }
            }
        }
        // A header frame with an empty payload is complete as soon as its head is.
        if let State::HeaderPayload { head, left: 0 } = self.state {
            self.state = State::FrameHead;
            self.header_frame(head, &[], out)?;
        }
        Ok(())
    }

    /// A complete frame head is in `buf`.
    fn frame_head(&mut self, out: &mut BytesMut) -> Result<(), RewriteError> {
        let b = &self.buf;
        let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
        let head = Head {
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        };
        if let Some(block) = &self.block
            && (head.kind != TYPE_CONTINUATION || head.stream != block.stream)
        {
            return Err(RewriteError::ExpectedContinuation(head.kind, block.stream));
        }
        match head.kind {
            TYPE_HEADERS | TYPE_CONTINUATION => {
                if len > MAX_FRAME_SIZE as usize {
                    return Err(RewriteError::FrameTooLarge(len));
                }
                if head.kind == TYPE_CONTINUATION && self.block.is_none() {
                    return Err(RewriteError::UnexpectedContinuation);
                }
                self.buf.clear();
                self.state = State::HeaderPayload { head, left: len };
            }
            TYPE_PUSH_PROMISE => return Err(RewriteError::PushPromise),
            _ => {
                out.put_slice(&self.buf);
                self.buf.clear();
                self.state = if len == 0 {
                    State::FrameHead
                } else {
                    State::Passing { left: len }
                };
            }
        }
        Ok(())
    }

    /// A complete HEADERS or CONTINUATION frame.
    fn header_frame(
        &mut self,
        head: Head,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), RewriteError> {
        let fragment = if head.kind == TYPE_HEADERS {
            if head.stream == 0 {
                return Err(RewriteError::StreamZero);
            }
            let mut rest = payload;
            let mut pad = 0;
            if head.flags & FLAG_PADDED != 0 {
                let (&n, tail) = rest.split_first().ok_or(RewriteError::BadPadding)?;
                pad = usize::from(n);
                rest = tail;
            }
            let priority = if head.flags & FLAG_PRIORITY != 0 {
                let (p, tail) = rest
                    .split_first_chunk::<5>()
                    .ok_or(RewriteError::BadPadding)?;
                rest = tail;
                Some(*p)
            } else {
                None
            };
            if pad > rest.len() {
                return Err(RewriteError::BadPadding);
            }
            self.block = Some(Block {
                stream: head.stream,
                end_stream: head.flags & FLAG_END_STREAM != 0,
                priority,
                fragments: Vec::new(),
                continuations: 0,
            });
            &rest[..rest.len() - pad]
        } else {
            payload
        };
        let block = self
            .block
            .as_mut()
            .ok_or(RewriteError::UnexpectedContinuation)?;
        if head.kind == TYPE_CONTINUATION {
            block.continuations += 1;
        }
        if block.fragments.len() + fragment.len() > MAX_HEADER_BLOCK
            || block.continuations > MAX_CONTINUATIONS
        {
            return Err(RewriteError::BlockTooLarge);
        }
        block.fragments.extend_from_slice(fragment);
        if head.flags & FLAG_END_HEADERS != 0 {
            let block = self
                .block
                .take()
                .ok_or(RewriteError::UnexpectedContinuation)?;
            self.emit_block(block, out)?;
        }
        Ok(())
    }

    /// Decodes a whole header block and writes it out again as HEADERS (+ CONTINUATIONs).
    fn emit_block(&mut self, block: Block, out: &mut BytesMut) -> Result<(), RewriteError> {
        size_updates_lead(&block.fragments)?;
        let mut encoded = Vec::with_capacity(block.fragments.len() + 64);
        let mut list_size = 0usize;
        self.decoder
            .decode_with_cb(&block.fragments, |name: Cow<[u8]>, value: Cow<[u8]>| {
                list_size += name.len() + value.len() + 32;
                if list_size > MAX_HEADER_LIST {
                    return; // refused below; the table must still follow the client
                }
                let value: &[u8] = if *name == *b":authority" && !is_valid_authority(&value) {
                    REPLACEMENT_AUTHORITY
                } else {
                    &value
                };
                encode_literal(&name, value, &mut encoded);
            })
            .map_err(|e| RewriteError::Hpack(e.to_string()))?;
        if list_size > MAX_HEADER_LIST {
            return Err(RewriteError::ListTooLarge);
        }

        let max = MAX_FRAME_SIZE as usize;
        let priority_len = if block.priority.is_some() { 5 } else { 0 };
        let first_len = encoded.len().min(max - priority_len);
        let (first, mut rest) = encoded.split_at(first_len);
        let mut flags = 0;
        if block.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if block.priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        put_frame_head(
            out,
            priority_len + first.len(),
            TYPE_HEADERS,
            flags,
            block.stream,
        );
        if let Some(p) = block.priority {
            out.put_slice(&p);
        }
        out.put_slice(first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(max));
            rest = tail;
            let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
            put_frame_head(out, chunk.len(), TYPE_CONTINUATION, flags, block.stream);
            out.put_slice(chunk);
        }
        Ok(())
    }
}

/// RFC 7541 §4.2: dynamic table size updates only at the start of a block (h2's decoder
/// refuses one after a field; the HPACK decoder used here does not check it). Walks the
/// representations by their lengths alone.
fn size_updates_lead(block: &[u8]) -> Result<(), RewriteError> {
    let bad = |what: &str| RewriteError::Hpack(what.to_owned());
    let mut rest = block;
    let mut seen_field = false;
    while let Some(&first) = rest.first() {
        let (prefix, literal) = match first {
            b if b & 0x80 != 0 => (7, false),
            b if b & 0xc0 == 0x40 => (6, true),
            b if b & 0xe0 == 0x20 => {
                if seen_field {
                    return Err(bad("dynamic table size update after a header field"));
                }
                (5, false)
            }
            _ => (4, true),
        };
        let (index, n) = decode_integer(rest, prefix).ok_or_else(|| bad("bad integer"))?;
        rest = &rest[n..];
        if first & 0xe0 != 0x20 {
            seen_field = true;
        }
        if literal {
            let strings = if index == 0 { 2 } else { 1 };
            for _ in 0..strings {
                let (len, n) = decode_integer(rest, 7).ok_or_else(|| bad("bad string length"))?;
                rest = rest
                    .get(n..)
                    .and_then(|r| r.get(len..))
                    .ok_or_else(|| bad("string past the end of the block"))?;
            }
        }
    }
    Ok(())
}

/// RFC 7541 §5.1: (value, bytes used) of an integer with an N-bit prefix; `None` when it is
/// cut off or longer than 4 continuation bytes (no table or string is that large).
fn decode_integer(buf: &[u8], prefix_bits: u8) -> Option<(usize, usize)> {
    let max = (1usize << prefix_bits) - 1;
    let mut value = usize::from(*buf.first()?) & max;
    if value < max {
        return Some((value, 1));
    }
    for (i, &b) in buf.iter().enumerate().skip(1).take(4) {
        value += usize::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Whether h2 accepts `value` as `:authority` (it parses it exactly so).
fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

fn put_frame_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = u32::try_from(len).expect("frame length below the frame size limit");
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
}

/// RFC 7541 §6.2.2: literal header field without indexing, new name, no Huffman coding.
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0);
    encode_string(name, out);
    encode_string(value, out);
}

fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    encode_integer(s.len(), 7, 0, out);
    out.extend_from_slice(s);
}

/// RFC 7541 §5.1: an integer with an N-bit prefix; `first` holds the bits above the prefix.
fn encode_integer(mut value: usize, prefix_bits: u8, first: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A client connection whose header blocks pass through a [`Rewriter`] on their way to the
/// server; what the server writes goes to the client unchanged.
#[derive(Debug)]
pub(crate) struct AuthorityTolerant<S> {
    inner: S,
    rewriter: Rewriter,
    /// Bytes for the server that it has not read yet.
    out: BytesMut,
    scratch: Box<[u8]>,
    eof: bool,
    /// The client sent what h2 would refuse: every later read fails too.
    failed: bool,
}

impl<S> AuthorityTolerant<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            rewriter: Rewriter::default(),
            out: BytesMut::new(),
            scratch: vec![0; 8 * 1024].into_boxed_slice(),
            eof: false,
            failed: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityTolerant<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(Err(io::ErrorKind::InvalidData.into()));
        }
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Read more only once everything rewritten so far is taken: `out` stays bounded.
            let mut read = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let filled = read.filled();
            if filled.is_empty() {
                this.eof = true;
                continue;
            }
            if let Err(error) = this.rewriter.feed(filled, &mut this.out) {
                this.failed = true;
                this.out.clear();
                tracing::debug!(%error, "closing a CSI connection: bad HTTP/2 from the client");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityTolerant<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for AuthorityTolerant<tokio::net::UnixStream> {
    type ConnectInfo = tonic::transport::server::UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;

//! The rewriter alone (bytes in, bytes out) and in front of a real h2 server.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SOCKET_PATH: &[u8] = b"/var/lib/kubelet/plugins/csi-secrets-store/csi.sock";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    put_frame_head(&mut out, payload.len(), kind, flags, stream);
    out.put_slice(payload);
    out.to_vec()
}

/// An empty SETTINGS frame: the rest of a client's preface.
fn settings() -> Vec<u8> {
    frame(0x4, 0, 0, &[])
}

fn request_headers(authority: &[u8]) -> Vec<(&'static [u8], Vec<u8>)> {
    vec![
        (b":method", b"POST".to_vec()),
        (b":scheme", b"http".to_vec()),
        (b":path", b"/csi.v1.Identity/GetPluginInfo".to_vec()),
        (b":authority", authority.to_vec()),
        (b"content-type", b"application/grpc".to_vec()),
        (b"te", b"trailers".to_vec()),
    ]
}

/// A client's HPACK encoder that puts every header into its dynamic table (literal with
/// incremental indexing) and refers to it afterwards (indexed, one byte), as grpcio does for
/// `:authority` across the calls of a channel.
#[derive(Default)]
struct IndexingEncoder {
    /// Newest first, as HPACK numbers them from 62.
    table: Vec<(Vec<u8>, Vec<u8>)>,
}

impl IndexingEncoder {
    fn encode(&mut self, headers: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in headers {
            let entry = (name.to_vec(), value.clone());
            match self.table.iter().position(|e| *e == entry) {
                Some(i) => encode_integer(62 + i, 7, 0x80, &mut out),
                None => {
                    out.push(0x40);
                    encode_string(name, &mut out);
                    encode_string(value, &mut out);
                    self.table.insert(0, entry);
                }
            }
        }
        out
    }
}

fn encode(encoder: &mut IndexingEncoder, authority: &[u8]) -> Vec<u8> {
    encoder.encode(&request_headers(authority))
}

/// Runs everything `feed` gives through a rewriter, in pieces of `chunk` bytes.
fn rewrite(input: &[u8], chunk: usize) -> Result<Vec<u8>, RewriteError> {
    let mut rewriter = Rewriter::default();
    let mut out = BytesMut::new();
    for piece in input.chunks(chunk) {
        rewriter.feed(piece, &mut out)?;
    }
    Ok(out.to_vec())
}

/// The frames in `bytes` after the preface: (type, flags, stream, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        frames.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    frames
}

/// The header lists of the HEADERS blocks in a rewritten client stream, decoded by a fresh
/// decoder that must never need a dynamic table.
fn decoded_blocks(rewritten: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut decoder = loona_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(0);
    decoder.set_max_table_size(0);
    let mut blocks = Vec::new();
    let mut block = Vec::new();
    for (kind, flags, _, payload) in frames(&rewritten[PREFACE.len()..]) {
        if kind == TYPE_HEADERS || kind == TYPE_CONTINUATION {
            let start = if kind == TYPE_HEADERS && flags & FLAG_PRIORITY != 0 {
                5
            } else {
                0
            };
            block.extend_from_slice(&payload[start..]);
            if flags & FLAG_END_HEADERS != 0 {
                blocks.push(decoder.decode(&std::mem::take(&mut block)).unwrap());
            }
        }
    }
    blocks
}

fn authority_of(list: &[(Vec<u8>, Vec<u8>)]) -> &[u8] {
    &list.iter().find(|(n, _)| n == b":authority").unwrap().1
}

#[test]
fn a_path_authority_becomes_localhost_across_the_dynamic_table() {
    let mut encoder = IndexingEncoder::default();
    let mut input = PREFACE.to_vec();
    input.extend(settings());
    let mut sizes = Vec::new();
    for stream in [1, 3, 5] {
        let block = encode(&mut encoder, SOCKET_PATH);
        sizes.push(block.len());
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, stream, &block));
        input.extend(frame(0x0, FLAG_END_STREAM, stream, b"\0\0\0\0\0"));
    }
    assert!(
        sizes[1] < 10,
        "later blocks reference the dynamic table: {sizes:?}"
    );
    for chunk in [1, 7, 4096] {
        let out = rewrite(&input, chunk).unwrap();
        assert!(out.starts_with(PREFACE));
        let blocks = decoded_blocks(&out);
        assert_eq!(blocks.len(), 3);
        for list in &blocks {
            assert_eq!(authority_of(list), b"localhost");
            assert_eq!(list.len(), 6, "every other header kept: {list:?}");
            assert_eq!(list[2].1, b"/csi.v1.Identity/GetPluginInfo");
        }
        let data: Vec<_> = frames(&out[PREFACE.len()..])
            .into_iter()
            .filter(|f| f.0 == 0x0)
            .collect();
        assert_eq!(data.len(), 3);
        assert!(
            data.iter()
                .all(|f| f.1 == FLAG_END_STREAM && f.3 == b"\0\0\0\0\0")
        );
    }
}

#[test]
fn a_valid_authority_is_kept_and_other_frames_pass_byte_for_byte() {
    let mut encoder = IndexingEncoder::default();
    let mut input = PREFACE.to_vec();
    input.extend(settings());
    input.extend(frame(0x6, 0, 0, b"12345678")); // PING
    let block = encode(&mut encoder, b"localhost:50051");
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
    let data = vec![0xab; 20_000]; // a DATA frame larger than one read
    input.extend(frame(0x0, 0, 1, &data));
    let out = rewrite(&input, 3000).unwrap();
    let frames = frames(&out[PREFACE.len()..]);
    assert_eq!(frames[1], (0x6, 0, 0, b"12345678".to_vec()));
    assert_eq!(frames[3], (0x0, 0, 1, data));
    assert_eq!(authority_of(&decoded_blocks(&out)[0]), b"localhost:50051");
}

#[test]
fn continuation_padding_and_priority() {
    let mut encoder = IndexingEncoder::default();
    let block = encode(&mut encoder, SOCKET_PATH);
    let (a, rest) = block.split_at(10);
    let (b, c) = rest.split_at(5);
    let mut headers = vec![3u8]; // pad length
    headers.extend([0, 0, 0, 0, 15]); // priority: no dependency, weight 16
    headers.extend(a);
    headers.extend([0, 0, 0]); // padding
    let mut input = PREFACE.to_vec();
    input.extend(settings());
    input.extend(frame(
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
        1,
        &headers,
    ));
    input.extend(frame(TYPE_CONTINUATION, 0, 1, b));
    input.extend(frame(TYPE_CONTINUATION, 0, 1, &[]));
    input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, c));
    let out = rewrite(&input, 1).unwrap();
    let frames = frames(&out[PREFACE.len()..]);
    assert_eq!(
        frames.len(),
        2,
        "one HEADERS frame for the whole block: {frames:?}"
    );
    let (kind, flags, stream, payload) = &frames[1];
    assert_eq!((*kind, *stream), (TYPE_HEADERS, 1));
    assert_eq!(*flags, FLAG_PRIORITY | FLAG_END_STREAM | FLAG_END_HEADERS);
    assert_eq!(payload[..5], [0, 0, 0, 0, 15]);
    assert_eq!(authority_of(&decoded_blocks(&out)[0]), b"localhost");
}

#[test]
fn a_block_above_the_frame_size_is_split_into_continuations() {
    let mut encoder = IndexingEncoder::default();
    let mut headers = request_headers(SOCKET_PATH);
    let big = vec![b'x'; 12_000];
    headers.push((b"x-a", big.clone()));
    headers.push((b"x-b", big.clone()));
    let block = encoder.encode(&headers);
    let mut input = PREFACE.to_vec();
    input.extend(settings());
    let (a, b) = block.split_at(block.len() / 2);
    input.extend(frame(TYPE_HEADERS, 0, 1, a));
    input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b));
    let out = rewrite(&input, 4096).unwrap();
    let kinds: Vec<_> = frames(&out[PREFACE.len()..])
        .iter()
        .map(|f| (f.0, f.1, f.3.len()))
        .collect();
    assert_eq!(kinds[1].0, TYPE_HEADERS);
    assert_eq!(kinds[1].2, MAX_FRAME_SIZE as usize);
    assert_eq!(kinds[2], (TYPE_CONTINUATION, FLAG_END_HEADERS, kinds[2].2));
    let list = &decoded_blocks(&out)[0];
    assert_eq!(list[6].1, big);
    assert_eq!(authority_of(list), b"localhost");
}

#[test]
fn what_h2_would_refuse_ends_the_connection() {
    let start = || {
        let mut v = PREFACE.to_vec();
        v.extend(settings());
        v
    };
    let mut encoder = IndexingEncoder::default();
    let block = encode(&mut encoder, SOCKET_PATH);

    let mut big = start();
    big.extend(frame(
        TYPE_HEADERS,
        0,
        1,
        &vec![0; MAX_FRAME_SIZE as usize + 1],
    ));
    assert_eq!(rewrite(&big, 4096), Err(RewriteError::FrameTooLarge(16385)));

    let mut interleaved = start();
    interleaved.extend(frame(TYPE_HEADERS, 0, 1, &block[..4]));
    interleaved.extend(frame(0x0, 0, 1, b"x"));
    assert_eq!(
        rewrite(&interleaved, 4096),
        Err(RewriteError::ExpectedContinuation(0, 1))
    );

    let mut other_stream = start();
    other_stream.extend(frame(TYPE_HEADERS, 0, 1, &block[..4]));
    other_stream.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &block[4..]));
    assert!(rewrite(&other_stream, 4096).is_err());

    let mut stray = start();
    stray.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &block));
    assert_eq!(
        rewrite(&stray, 4096),
        Err(RewriteError::UnexpectedContinuation)
    );

    let mut push = start();
    push.extend(frame(TYPE_PUSH_PROMISE, FLAG_END_HEADERS, 1, &[0, 0, 0, 2]));
    assert_eq!(rewrite(&push, 4096), Err(RewriteError::PushPromise));

    let mut flood = start();
    flood.extend(frame(TYPE_HEADERS, 0, 1, &block[..4]));
    for _ in 0..=MAX_CONTINUATIONS {
        flood.extend(frame(TYPE_CONTINUATION, 0, 1, &[]));
    }
    assert_eq!(rewrite(&flood, 4096), Err(RewriteError::BlockTooLarge));

    let mut padding = start();
    padding.extend(frame(
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_END_HEADERS,
        1,
        &[200, 0x82],
    ));
    assert_eq!(rewrite(&padding, 4096), Err(RewriteError::BadPadding));

    // A dynamic table size update above the 4096 bytes the server allows.
    let mut table = start();
    let mut update = Vec::new();
    encode_integer(8192, 5, 0x20, &mut update);
    update.extend(&block);
    table.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &update));
    assert!(matches!(rewrite(&table, 4096), Err(RewriteError::Hpack(_))));

    // A reference to a dynamic entry that does not exist.
    let mut index = start();
    index.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x80 | 70]));
    assert!(matches!(rewrite(&index, 4096), Err(RewriteError::Hpack(_))));

    // One 4 KiB table entry referenced over and over: small block, huge list.
    let mut bomb = start();
    let mut block = Vec::new();
    encode_integer(0, 6, 0x40, &mut block);
    encode_string(b"x-big", &mut block);
    encode_string(&[b'a'; 4000], &mut block);
    block.extend(std::iter::repeat_n(0x80 | 62, 20));
    bomb.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
    assert_eq!(rewrite(&bomb, 4096), Err(RewriteError::ListTooLarge));
}

/// Sends `input` to an h2 server on the far end of an in-memory pipe (through the adapter or
/// not) and returns, per stream, the authority the server saw or the reset it sent.
async fn against_h2(input: Vec<u8>, streams: usize, adapter: bool) -> Vec<Result<String, u32>> {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let serve = async move {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let run = |io: Box<dyn AsyncIoBox>| {
            let seen = seen.clone();
            async move {
                let mut conn = h2::server::handshake(io).await.unwrap();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let authority = request.uri().authority().map(|a| a.to_string());
                    seen.lock().unwrap().push(authority.unwrap_or_default());
                    let response = http::Response::builder().status(200).body(()).unwrap();
                    respond.send_response(response, true).unwrap();
                }
            }
        };
        let io: Box<dyn AsyncIoBox> = if adapter {
            Box::new(AuthorityTolerant::new(server))
        } else {
            Box::new(server)
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), run(io)).await;
        std::sync::Arc::try_unwrap(seen)
            .unwrap()
            .into_inner()
            .unwrap()
    };
    let talk = async move {
        client.write_all(&input).await.unwrap();
        // Read the server's frames until each stream has its answer.
        let mut answers: std::collections::BTreeMap<u32, Result<(), u32>> = Default::default();
        let mut buf = Vec::new();
        while answers.len() < streams {
            let mut chunk = [0u8; 4096];
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed early");
            buf.extend_from_slice(&chunk[..n]);
            while buf.len() >= 9 {
                let len =
                    (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
                match buf[3] {
                    TYPE_HEADERS => {
                        answers.insert(stream, Ok(()));
                    }
                    0x3 => {
                        let code = u32::from_be_bytes([buf[9], buf[10], buf[11], buf[12]]);
                        answers.insert(stream, Err(code));
                    }
                    _ => {}
                }
                buf.drain(..9 + len);
            }
        }
        drop(client);
        answers
    };
    let (seen, answers) = tokio::join!(serve, talk);
    let mut seen = seen.into_iter();
    answers
        .into_values()
        .map(|a| a.map(|()| seen.next().unwrap()))
        .collect()
}

trait AsyncIoBox: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncIoBox for T {}

fn three_requests(authority: &[u8]) -> Vec<u8> {
    let mut encoder = IndexingEncoder::default();
    let mut input = PREFACE.to_vec();
    input.extend(settings());
    for stream in [1, 3, 5] {
        let block = encode(&mut encoder, authority);
        if stream == 3 {
            // The second request's block split over HEADERS and a CONTINUATION.
            let (a, b) = block.split_at(block.len() / 2);
            input.extend(frame(TYPE_HEADERS, 0, stream, a));
            input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, stream, b));
        } else {
            input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, stream, &block));
        }
        input.extend(frame(0x0, FLAG_END_STREAM, stream, b"\0\0\0\0\0"));
    }
    input
}

#[tokio::test]
async fn h2_refuses_a_path_authority_without_the_adapter() {
    let answers = against_h2(three_requests(SOCKET_PATH), 3, false).await;
    assert_eq!(
        answers,
        vec![Err(0x1), Err(0x1), Err(0x1)],
        "RST_STREAM PROTOCOL_ERROR"
    );
}

#[tokio::test]
async fn h2_serves_a_path_authority_through_the_adapter() {
    let answers = against_h2(three_requests(SOCKET_PATH), 3, true).await;
    let ok = Ok("localhost".to_owned());
    assert_eq!(answers, vec![ok.clone(), ok.clone(), ok]);
    let answers = against_h2(three_requests(b"csi.example:1"), 3, true).await;
    assert!(answers.iter().all(|a| a == &Ok("csi.example:1".to_owned())));
}

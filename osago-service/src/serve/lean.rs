//! The lean HTTP/1 path for long-lived streams ([`super::LeanStreams`]).
//!
//! hyper's HTTP/1 connection keeps, for its whole life, a read buffer and a
//! header write buffer of 8 KiB each (their first pages touched), its
//! dispatcher and the auto-detecting wrapper: about 9 KiB of resident
//! memory per idle event stream before the stream's own state, nearly
//! nginx + nchan's whole 10 KiB. A stream needs none of it once its head is
//! written: the response is one long body and the connection closes after
//! it. So the first request of a connection is read here into a buffer of
//! its own, parsed with `httparse`, and:
//!
//! - when it is a plain `GET` (HTTP/1.1, no body, no upgrade, nothing
//!   pipelined behind it) for a path the listener names, it is answered
//!   here: the listener's handler is called as hyper would call it, the
//!   response's head is written with `connection: close`, its body
//!   streamed (chunked, or with its length when known), and the connection
//!   closed; the head buffer is freed before the body starts;
//! - anything else, or anything this parser does not accept, goes to hyper
//!   with every byte read so far in front of the socket ([`Prefixed`]), so
//!   hyper answers it as it always did (400, 431, HTTP/2's preface, ...);
//!   a stream asked for later on that connection may still come back here
//!   (`super::handback`).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{BoxError, Watched, MAX_BUF};

/// What the head buffer starts at: a browser's stream request (cookies and
/// all) usually fits; it grows up to [`MAX_BUF`].
const HEAD_START: usize = 1024;

/// The most bytes of a body's ready frames gathered into one write.
const BATCH_BYTES: usize = 16 * 1024;

/// The most frames gathered into one write (empty ones count too).
const BATCH_FRAMES: usize = 64;

/// What the first request of a connection turned out to be.
#[derive(Debug)]
pub(super) enum Sniffed {
    /// A request for the lean path, its whole head read and nothing behind
    /// it.
    Lean(Request<Empty<Bytes>>),
    /// Anything else: the bytes read so far, which hyper reads first.
    Other(Bytes),
    /// The client closed, or the socket failed, before a whole head.
    Closed,
}

/// Reads the first request head from `io` and sorts it (see the module
/// docs). `route` names the paths of the lean path.
pub(super) async fn sniff<R>(io: &mut R, route: fn(&str) -> bool, max_headers: usize) -> Sniffed
where
    R: AsyncRead + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(HEAD_START);
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= MAX_BUF {
                // Too long a head for us: hyper answers 431.
                return Sniffed::Other(buf.into());
            }
            buf.reserve_exact(buf.len().min(MAX_BUF - buf.len()));
        }
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Sniffed::Closed,
            Ok(_) => {}
        }
        match sort(&buf, route, max_headers) {
            Sorted::Partial => continue,
            Sorted::Lean(request) => return Sniffed::Lean(request),
            Sorted::Other => return Sniffed::Other(buf.into()),
        }
    }
}

// Returned once per read, and moved out at once: no gain in boxing.
#[allow(clippy::large_enum_variant)]
enum Sorted {
    Partial,
    Lean(Request<Empty<Bytes>>),
    Other,
}

/// What the start of a request on a kept-alive connection may be.
// Returned once per read, and moved out at once: no gain in boxing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Candidate {
    /// Exactly one whole head of a request for the lean path (as a
    /// connection's first request is sorted).
    Stream(Request<Empty<Bytes>>),
    /// Part of a head that may still be one.
    Wait,
    /// Anything else: hyper's.
    Other,
}

/// Sorts the start of a request read so far: as [`sniff`] sorts a
/// connection's first request, but a part of a head is only worth waiting
/// for while its method and path, as far as they have come, are a
/// stream's.
pub(super) fn candidate(buf: &[u8], route: fn(&str) -> bool, max_headers: usize) -> Candidate {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers.max(1)];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => match lean_request(&parsed, route) {
            // Longer than hyper would take (431): not taken either.
            Some(request) if len == buf.len() && len <= MAX_BUF => Candidate::Stream(request),
            _ => Candidate::Other,
        },
        Ok(httparse::Status::Partial) => {
            // httparse fills the method, then the path, as they complete.
            let method_ok = parsed.method.is_none_or(|m| m == "GET");
            let path_ok = parsed
                .path
                .is_none_or(|path| path.parse::<Uri>().is_ok_and(|uri: Uri| route(uri.path())));
            if method_ok && path_ok && buf.len() < MAX_BUF {
                Candidate::Wait
            } else {
                Candidate::Other
            }
        }
        Err(_) => Candidate::Other,
    }
}

/// Sorts the bytes read so far.
fn sort(buf: &[u8], route: fn(&str) -> bool, max_headers: usize) -> Sorted {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers.max(1)];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Sorted::Partial,
        // Malformed, HTTP/2's preface, too many headers: hyper's to answer.
        Err(_) => return Sorted::Other,
    };
    match lean_request(&parsed, route) {
        Some(request) if head_len == buf.len() => Sorted::Lean(request),
        _ => Sorted::Other,
    }
}

/// The request, when it is one for the lean path.
fn lean_request(
    parsed: &httparse::Request<'_, '_>,
    route: fn(&str) -> bool,
) -> Option<Request<Empty<Bytes>>> {
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let uri: Uri = parsed.path?.parse().ok()?;
    if !route(uri.path()) {
        return None;
    }
    let mut request = Request::new(Empty::new());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(header.value).ok()?;
        let plain = match name.as_str() {
            // A body, however announced, is hyper's to read.
            "content-length" => value.as_bytes() == b"0",
            "transfer-encoding" | "upgrade" | "expect" => false,
            "connection" => !value
                .to_str()
                .map(|v| v.to_ascii_lowercase().contains("upgrade"))
                .unwrap_or(true),
            _ => true,
        };
        if !plain {
            return None;
        }
        headers.append(name, value);
    }
    Some(request)
}

/// Answers `request` on `io` with `handler`'s response, then closes.
pub(super) async fn answer<H, F, B>(
    io: &mut Watched,
    peer: SocketAddr,
    request: Request<Empty<Bytes>>,
    handler: &H,
) -> Result<(), BoxError>
where
    H: Fn(SocketAddr, Request<Empty<Bytes>>) -> F,
    F: Future<Output = Result<Response<B>, Infallible>>,
    B: hyper::body::Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    // Boxed, as hyper boxes a request's future: the handler's state is
    // freed once the response is here, before the long body.
    let response = match Box::pin(handler(peer, request)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    let bodiless = parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED
        || parts.status.is_informational();
    let length = body.size_hint().exact();
    let chunked = !bodiless && length.is_none();
    {
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(b"HTTP/1.1 ");
        head.extend_from_slice(parts.status.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(
            parts
                .status
                .canonical_reason()
                .unwrap_or("Unknown")
                .as_bytes(),
        );
        head.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == CONNECTION {
                continue;
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if !parts.headers.contains_key(DATE) {
            head.extend_from_slice(b"date: ");
            head.extend_from_slice(
                httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes(),
            );
            head.extend_from_slice(b"\r\n");
        }
        if chunked {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        } else if !bodiless {
            head.extend_from_slice(
                format!("content-length: {}\r\n", length.unwrap_or(0)).as_bytes(),
            );
        }
        head.extend_from_slice(b"connection: close\r\n\r\n");
        // The response's headers go before the long body does.
        drop(parts);
        io.write_all(&head).await?;
    }
    if !bodiless && length != Some(0) {
        let mut left = length.unwrap_or(u64::MAX);
        let mut body = std::pin::pin!(body);
        loop {
            // Only bytes cross an await: the body's own data and error
            // types need not be `Send`.
            let first = tokio::select! {
                frame = body.frame() => data_of(frame),
                () = gone(io) => return Ok(()),
            };
            let Some(first) = first else {
                if chunked {
                    io.write_all(b"0\r\n\r\n").await?;
                }
                break;
            };
            // What the body has ready now goes out in the same write: a
            // stream that fell behind (its events queued while the server
            // was busy) catches up with one send, and wakes its client
            // once, instead of once per event. One buffer, copied into: a
            // vectored write of the shared frames with their chunk heads
            // measured no faster (docs/benchmarks.md), and what a stalled
            // client holds of its own is at most BATCH_BYTES and a frame,
            // beside the kernel's send buffer it already fills.
            // Room for the first frame and its chunk head; more grows it.
            let mut out = Vec::with_capacity(first.as_ref().map_or(0, |data| data.len() + 16));
            let mut gathered = 0;
            let mut failed = None;
            let mut ended = false;
            let mut next = Some(first);
            while let Some(data) = next.take() {
                gathered += 1;
                let mut data = match data {
                    Ok(data) => data,
                    Err(err) => {
                        // What came before the error is still sent.
                        failed = Some(err);
                        break;
                    }
                };
                if !data.is_empty() {
                    if chunked {
                        let _ = write!(out, "{:x}\r\n", data.len());
                        out.extend_from_slice(&data);
                        out.extend_from_slice(b"\r\n");
                    } else {
                        // Never past the length announced: a body that runs
                        // over its size hint is cut, and the connection
                        // closes anyway.
                        data.truncate(usize::try_from(left).unwrap_or(usize::MAX));
                        left -= data.len() as u64;
                        out.extend_from_slice(&data);
                        if left == 0 {
                            ended = true;
                            break;
                        }
                    }
                }
                if out.len() >= BATCH_BYTES || gathered >= BATCH_FRAMES {
                    break;
                }
                match futures::poll!(body.frame()) {
                    Poll::Pending => break,
                    Poll::Ready(frame) => match data_of(frame) {
                        None => {
                            ended = true;
                            if chunked {
                                out.extend_from_slice(b"0\r\n\r\n");
                            }
                        }
                        Some(data) => next = Some(data),
                    },
                }
            }
            if !out.is_empty() {
                io.write_all(&out).await?;
            }
            if let Some(err) = failed {
                return Err(err);
            }
            if ended {
                break;
            }
        }
    }
    io.shutdown().await?;
    Ok(())
}

/// A body frame's data; trailers count as no data (not sent on this path).
fn data_of<D: Buf, E: Into<BoxError>>(
    frame: Option<Result<hyper::body::Frame<D>, E>>,
) -> Option<Result<Bytes, BoxError>> {
    frame.map(|frame| match frame {
        Ok(frame) => Ok(frame
            .into_data()
            .map(|mut data| data.copy_to_bytes(data.remaining()))
            .unwrap_or_default()),
        Err(err) => Err(err.into()),
    })
}

/// Resolves when the client has gone: its end closed, the socket failed,
/// or it sent bytes after a request answered with `connection: close`.
async fn gone(io: &Watched) {
    loop {
        if io.socket.readable().await.is_err() {
            return;
        }
        let mut probe = [0u8; 16];
        match io.socket.try_read(&mut probe) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            _ => return,
        }
    }
}

/// A socket with bytes already read from it in front: what hyper reads
/// first.
#[derive(Debug)]
pub(super) struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(super) fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }

    /// The socket, once every byte in front of it has been read.
    pub(super) fn into_inner(self) -> Option<T> {
        (!self.prefix.has_remaining()).then_some(self.inner)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if !self.prefix.has_remaining() {
                // Frees the head buffer.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream_route(path: &str) -> bool {
        path.starts_with("/s/")
    }

    /// Feeds `bytes` to the sniffer in the given pieces.
    fn sniff_in(bytes: &[u8], cuts: &[usize]) -> Sniffed {
        let mut builder = tokio_test_io(bytes, cuts);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(sniff(&mut builder, stream_route, 64))
    }

    /// A reader that hands out `bytes` cut at `cuts`, then EOF.
    fn tokio_test_io(bytes: &[u8], cuts: &[usize]) -> Pieces {
        let mut pieces = Vec::new();
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts {
            if cut > at {
                pieces.push(bytes[at..cut].to_vec());
                at = cut;
            }
        }
        if at < bytes.len() {
            pieces.push(bytes[at..].to_vec());
        }
        pieces.reverse();
        Pieces(pieces)
    }

    struct Pieces(Vec<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(mut piece) = self.0.pop() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                if n < piece.len() {
                    self.0.push(piece.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_plain_stream_get_takes_the_lean_path_with_its_headers() {
        let head =
            b"GET /s/1?x=2 HTTP/1.1\r\nHost: a\r\nLast-Event-ID: 7\r\nX-A: 1\r\nX-A: 2\r\n\r\n";
        let Sniffed::Lean(request) = sniff_in(head, &[3, 30]) else {
            panic!("not lean");
        };
        assert_eq!(request.uri(), "/s/1?x=2");
        assert_eq!(request.headers()["last-event-id"], "7");
        assert_eq!(request.headers().get_all("x-a").iter().count(), 2);
    }

    #[test]
    fn anything_else_goes_to_hyper_with_every_byte_read() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /s/1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
            b"GET /s/1 HTTP/1.0\r\n\r\n",
            b"GET /s/1 HTTP/1.1\r\nContent-Length: 1\r\n\r\na",
            b"GET /s/1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /s/1 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET /s/1 HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /s/1 HTTP/1.1\r\n\r\nGET /s/2 HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /s/1 HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ];
        for case in cases {
            match sniff_in(case, &[]) {
                Sniffed::Other(bytes) => assert_eq!(&bytes[..], *case),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(case)),
            }
        }
    }

    #[test]
    fn a_head_past_the_buffer_cap_goes_to_hyper_for_its_431() {
        let mut head = b"GET /s/1 HTTP/1.1\r\nX-Long: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_BUF));
        match sniff_in(&head, &[]) {
            Sniffed::Other(bytes) => assert_eq!(&bytes[..], &head[..MAX_BUF]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_client_gone_before_a_whole_head_is_closed() {
        assert!(matches!(sniff_in(b"GET /s/1 HTT", &[]), Sniffed::Closed));
        assert!(matches!(sniff_in(b"", &[]), Sniffed::Closed));
    }

    proptest! {
        /// Whatever arrives, in whatever pieces: a lean request is exactly
        /// a whole head with nothing behind it, and otherwise hyper gets
        /// every byte read, in order.
        #[test]
        fn no_byte_is_lost_or_invented(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            prefix in prop_oneof![
                Just(b"GET /s/1 HTTP/1.1\r\n".to_vec()),
                Just(b"GET / HTTP/1.1\r\n".to_vec()),
                Just(Vec::new()),
            ],
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let mut input = prefix;
            input.extend(bytes);
            match sniff_in(&input, &cuts) {
                Sniffed::Other(got) => prop_assert_eq!(&got[..], &input[..got.len()]),
                Sniffed::Lean(request) => {
                    prop_assert!(stream_route(request.uri().path()));
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    let mut parsed = httparse::Request::new(&mut headers);
                    let status = parsed.parse(&input);
                    prop_assert!(matches!(status, Ok(httparse::Status::Complete(_))));
                }
                Sniffed::Closed => {}
            }
        }
    }

    /// What a stream body with `frames` queued, then an error if `fail`,
    /// then (if `end`) its end, is answered with on a real socket: what the
    /// client read, how many writes the answer took, and how it finished.
    async fn answer_queued(
        frames: &[&str],
        fail: bool,
        end: bool,
    ) -> (String, usize, Result<(), BoxError>) {
        use futures::StreamExt;
        use http_body_util::StreamBody;
        use std::sync::{Arc, Mutex};
        use tokio::io::AsyncReadExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, peer) = listener.accept().await.unwrap();
        let activity = Arc::new(super::super::Activity::new());
        let mut io = Watched {
            socket,
            activity: activity.clone(),
        };
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, io::Error>>();
        for frame in frames {
            tx.unbounded_send(Ok(Bytes::from(frame.to_string())))
                .unwrap();
        }
        if fail {
            tx.unbounded_send(Err(io::Error::other("the body failed")))
                .unwrap();
        }
        let keep = (!end).then_some(tx);
        let body = Mutex::new(Some(StreamBody::new(
            rx.map(|item| item.map(hyper::body::Frame::data)),
        )));
        let handler = |_: SocketAddr, _: Request<Empty<Bytes>>| {
            let body = body.lock().unwrap().take().expect("one request");
            async move { Ok::<_, Infallible>(Response::new(body)) }
        };
        let request = Request::new(Empty::new());
        let answering = async {
            let answered = answer(&mut io, peer, request, &handler).await;
            // As the connection task does when the answer is over.
            drop(io);
            answered
        };
        let reading = async {
            let mut read = Vec::new();
            if end || fail {
                client.read_to_end(&mut read).await.unwrap();
            } else {
                // The head and the queued frames, then the client leaves.
                let tail: String = frames
                    .iter()
                    .map(|f| format!("{:x}\r\n{f}\r\n", f.len()))
                    .collect();
                let mut buf = [0u8; 4096];
                while !read.ends_with(tail.as_bytes()) {
                    let n = client.read(&mut buf).await.unwrap();
                    assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&read));
                    read.extend_from_slice(&buf[..n]);
                }
                drop(client);
            }
            read
        };
        let (answered, read) = tokio::join!(answering, reading);
        drop(keep);
        (
            String::from_utf8(read).unwrap(),
            activity.writes.load(std::sync::atomic::Ordering::Relaxed),
            answered,
        )
    }

    #[tokio::test]
    async fn frames_ready_together_go_out_in_one_write() {
        let (read, writes, answered) = answer_queued(
            &["data: 1\n\n", "", "data: 22\n\n", "data: 3\n\n"],
            false,
            true,
        )
        .await;
        answered.unwrap();
        let body = read.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(
            body,
            "9\r\ndata: 1\n\n\r\na\r\ndata: 22\n\n\r\n9\r\ndata: 3\n\n\r\n0\r\n\r\n"
        );
        assert!(read.contains("transfer-encoding: chunked\r\n"));
        // The head; then the three frames and the last chunk.
        assert_eq!(writes, 2, "{read:?}");
    }

    #[tokio::test]
    async fn a_stream_still_open_sends_what_it_has_and_ends_when_the_client_goes() {
        let (read, writes, answered) =
            answer_queued(&["data: 1\n\n", "data: 2\n\n"], false, false).await;
        answered.unwrap();
        assert!(
            read.ends_with("9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n"),
            "{read:?}"
        );
        assert_eq!(writes, 2, "the head, then both frames at once");
    }

    #[tokio::test]
    async fn frames_before_a_body_error_are_sent_and_the_body_is_not_ended() {
        let (read, _, answered) = answer_queued(&["data: 1\n\n", "data: 2\n\n"], true, false).await;
        let err = answered.expect_err("the body failed");
        assert_eq!(err.to_string(), "the body failed");
        let body = read.split_once("\r\n\r\n").unwrap().1;
        // Both frames, and no last chunk: the client sees a cut stream.
        assert_eq!(body, "9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n");
    }
}

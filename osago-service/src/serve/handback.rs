//! A stream asked for on a kept-alive connection, handed back from hyper
//! to the lean path ([`super::LeanStreams`]).
//!
//! Behind an ingress or a load balancer that pools its upstream
//! connections, a stream request rarely comes first on its connection: the
//! proxy sends it on one that already carried other requests, which hyper
//! serves. So hyper's socket is wrapped ([`Handback`]): when hyper, done
//! with every request it has read, reads again, the next request's start
//! is read here first and held back from hyper while, as far as it has
//! come, it may be a stream's (method `GET`, a stream's path). If it turns
//! out exactly one whole request head for the lean path (the same test as
//! a connection's first request: a plain HTTP/1.1 `GET` for a stream's
//! path, no body, nothing behind it), hyper is told the client has closed
//! (its connection ends cleanly, and it frees its buffers), the socket
//! goes back to the connection's task, and the stream is answered on the
//! lean path (`connection: close`, as there); else hyper is given every
//! byte held, as if it had read them itself. hyper is waiting for a head
//! all the while, so its header-read timeout cuts a head trickled in here
//! as it cuts one trickled to it.
//!
//! Where one request ends and the next begins is not taken on hyper's
//! word: [`Framing`] follows every byte hyper is given (`httparse`, as
//! hyper's own parser, and `Content-Length`), so bytes are only taken for
//! a new request at a boundary of the byte stream, when every request
//! before it has its response done (its body dropped by hyper). Anything
//! this framing does not follow exactly (a chunked or otherwise unusual
//! request body, an upgrade, HTTP/1.0, a head it cannot parse) ends the
//! handing back for the connection, which hyper then serves to its end as
//! it always did: no body byte is ever read as a request (no request
//! smuggling behind a proxy that frames requests differently), and a
//! connection hyper ends with an error is closed, never handed back.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::lean::{self, Prefixed};
use super::{Shared, Watched, MAX_BUF};

/// Where the bytes hyper has been given stand, request by request.
#[derive(Debug, Default)]
pub(super) struct Framing {
    /// Whole request heads seen.
    heads: usize,
    at: At,
}

#[derive(Debug)]
enum At {
    /// In a head; the part of it read so far (empty between requests).
    Head(Vec<u8>),
    /// In a body, with this many bytes of it to come.
    Body(u64),
    /// Lost track: nothing is handed back any more.
    Lost,
}

impl Default for At {
    fn default() -> Self {
        At::Head(Vec::new())
    }
}

impl Framing {
    /// Between two requests, with at least one before: where a new
    /// request may start. Empty lines between requests (an old client's
    /// CRLF after a body) count as none: hyper and `httparse` skip them.
    fn between_requests(&self) -> bool {
        self.heads > 0 && matches!(&self.at, At::Head(part) if empty_lines(part))
    }

    /// Follows `bytes`, the next ones hyper reads.
    pub(super) fn feed(&mut self, mut bytes: &[u8], max_headers: usize) {
        while !bytes.is_empty() {
            match &mut self.at {
                At::Lost => return,
                At::Body(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.at = At::default();
                    }
                }
                At::Head(part) => {
                    let earlier = part.len();
                    if earlier > 0 && !bytes.contains(&b'\n') {
                        // No line ends here: the head is no more whole
                        // than it was (a head trickled in is parsed once
                        // per line, not once per read).
                        part.extend_from_slice(bytes);
                        if part.len() > MAX_BUF {
                            self.at = At::Lost;
                        }
                        return;
                    }
                    let parsed = if earlier == 0 {
                        head(bytes, max_headers)
                    } else {
                        part.extend_from_slice(bytes);
                        head(part, max_headers)
                    };
                    match parsed {
                        Head::Partial => {
                            if earlier == 0 {
                                part.extend_from_slice(bytes);
                            }
                            if part.len() > MAX_BUF {
                                // hyper answers 431 to such a head.
                                self.at = At::Lost;
                            }
                            return;
                        }
                        Head::Complete { len, body } => {
                            self.heads += 1;
                            bytes = &bytes[len - earlier..];
                            self.at = match body {
                                0 => At::default(),
                                n => At::Body(n),
                            };
                        }
                        Head::Unfollowed => self.at = At::Lost,
                    }
                }
            }
        }
    }

    /// Whole request heads seen.
    #[cfg(test)]
    fn heads(&self) -> usize {
        self.heads
    }
}

/// Whether `bytes` are whole empty lines (`\r\n` or `\n`), none or more:
/// what hyper and `httparse` skip before a request line. A lone `\r` is
/// not: `httparse` refuses it.
fn empty_lines(mut bytes: &[u8]) -> bool {
    loop {
        bytes = match bytes {
            [] => return true,
            [b'\r', b'\n', rest @ ..] | [b'\n', rest @ ..] => rest,
            _ => return false,
        }
    }
}

enum Head {
    Partial,
    /// A whole head of `len` bytes with a body of `body` bytes.
    Complete {
        len: usize,
        body: u64,
    },
    /// Malformed, or framed some way this does not follow.
    Unfollowed,
}

/// Parses a request head at the start of `bytes`.
fn head(bytes: &[u8], max_headers: usize) -> Head {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers.max(1)];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Unfollowed,
    };
    if parsed.version != Some(1) || parsed.method == Some("CONNECT") {
        return Head::Unfollowed;
    }
    let mut body = None;
    for header in parsed.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding")
            || header.name.eq_ignore_ascii_case("upgrade")
        {
            return Head::Unfollowed;
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(header.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (body, length) {
                (None, Some(length)) => body = Some(length),
                // Repeated, or not a plain number: hyper refuses it, or
                // reads it some way not followed here.
                _ => return Head::Unfollowed,
            }
        }
    }
    Head::Complete {
        len,
        body: body.unwrap_or(0),
    }
}

/// hyper's socket on a connection whose stream requests may be handed back
/// to the lean path (see the module docs).
pub(super) struct Handback {
    inner: Option<Prefixed<Watched>>,
    framing: Framing,
    shared: Arc<Shared>,
    route: fn(&str) -> bool,
    max_headers: usize,
    /// The start of the next request, read here while it may still be a
    /// stream's (hyper sees none of it yet). hyper is reading a head
    /// meanwhile, so its header-read timeout runs: a head trickled in
    /// here is cut as one trickled to hyper is.
    held: Vec<u8>,
    /// Bytes held back and then found to be hyper's, not yet given to it.
    release: Bytes,
    /// The stream request taken from hyper; hyper reads the end of the
    /// connection from then on.
    found: Option<Box<Request<Empty<Bytes>>>>,
}

impl Handback {
    pub(super) fn new(
        inner: Prefixed<Watched>,
        shared: Arc<Shared>,
        route: fn(&str) -> bool,
        max_headers: usize,
    ) -> Self {
        Self {
            inner: Some(inner),
            framing: Framing::default(),
            shared,
            route,
            max_headers,
            held: Vec::new(),
            release: Bytes::new(),
            found: None,
        }
    }

    fn inner(&mut self) -> io::Result<Pin<&mut Prefixed<Watched>>> {
        match self.inner.as_mut() {
            Some(inner) => Ok(Pin::new(inner)),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Whether the next bytes start a request and hyper is done with every
    /// one before it: they are read here first.
    fn at_a_new_request(&self) -> bool {
        !self.held.is_empty()
            || (self.framing.between_requests()
                && self.framing.heads == self.shared.answered.load(Ordering::Acquire))
    }

    /// Reads the start of the next request into `held` until it is whole
    /// and a stream's (`Ok(true)`: taken), or plainly hyper's (`Ok(false)`:
    /// in `release`, followed).
    fn poll_hold(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        loop {
            let mut chunk = [0u8; 2048];
            let mut read = ReadBuf::new(&mut chunk);
            match self.inner()?.poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => break,
                Poll::Ready(Ok(())) => self.held.extend_from_slice(read.filled()),
            }
            if !read.filled().contains(&b'\n') && self.held.len() > 16 && self.held.len() < MAX_BUF
            {
                // No line ended: sorted again once one does (its method is
                // known from the first bytes; a head trickled in is parsed
                // once per line, not once per read).
                continue;
            }
            match lean::candidate(&self.held, self.route, self.max_headers) {
                lean::Candidate::Stream(request) => {
                    self.found = Some(Box::new(request));
                    self.held = Vec::new();
                    return Poll::Ready(Ok(true));
                }
                lean::Candidate::Wait => continue,
                lean::Candidate::Other => break,
            }
        }
        // hyper's after all (or the client closed mid-head): it gets every
        // byte held, and its framing is followed as any other's.
        let held = std::mem::take(&mut self.held);
        self.framing.feed(&held, self.max_headers);
        self.release = held.into();
        Poll::Ready(Ok(false))
    }
}

impl AsyncRead for Handback {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.found.is_some() || this.inner.is_none() {
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() == 0 {
            // Nothing could be given: nothing is taken either.
            return Poll::Ready(Ok(()));
        }
        if this.release.is_empty() && this.at_a_new_request() && ready!(this.poll_hold(cx))? {
            // A stream's, not hyper's: it reads the client's end instead,
            // and ends the connection as a client that closed.
            return Poll::Ready(Ok(()));
        }
        if !this.release.is_empty() {
            let n = this.release.len().min(buf.remaining());
            buf.put_slice(&this.release.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(this.inner()?.poll_read(cx, buf))?;
        this.framing.feed(&buf.filled()[before..], this.max_headers);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Handback {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.inner()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.inner()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner()?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(request) = this.found.take() {
            // hyper is done with the socket: it goes back, unclosed, with
            // the request hyper never saw.
            return match this.inner.take().and_then(Prefixed::into_inner) {
                Some(socket) => {
                    *this.shared.handed.lock().expect("not poisoned") = Some((socket, request));
                    Poll::Ready(Ok(()))
                }
                // Bytes read before hyper took the connection are still
                // unread (cannot happen: hyper reads them first): the
                // connection ends with an error, and closes.
                None => Poll::Ready(Err(io::Error::other(
                    "a stream request found before the bytes in front of it were read",
                ))),
            };
        }
        this.inner()?.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fed(pieces: &[&[u8]]) -> Framing {
        let mut framing = Framing::default();
        for piece in pieces {
            framing.feed(piece, 64);
        }
        framing
    }

    const POST: &[u8] = b"POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    const GET: &[u8] = b"GET /page HTTP/1.1\r\nHost: a\r\n\r\n";

    #[test]
    fn requests_are_followed_to_their_ends_whatever_the_reads() {
        let both = [POST, GET].concat();
        let whole = fed(&[&both]);
        assert_eq!(whole.heads(), 2);
        assert!(whole.between_requests());
        // In the body, and in a head: not between requests.
        let mid_body = fed(&[&POST[..POST.len() - 2]]);
        assert_eq!(mid_body.heads(), 1);
        assert!(!mid_body.between_requests());
        let mid_head = fed(&[POST, &GET[..10]]);
        assert!(!mid_head.between_requests());
        // Nothing seen yet is not "between requests".
        assert!(!fed(&[]).between_requests());
        // Empty lines after a request are skipped, as hyper skips them; a
        // lone CR is not an empty line.
        let crlf = fed(&[POST, b"\r\n\n"]);
        assert!(crlf.between_requests());
        assert!(!fed(&[POST, b"\r\n\r"]).between_requests());
        let next = fed(&[POST, b"\r\n", GET]);
        assert_eq!(next.heads(), 2);
        assert!(next.between_requests());
    }

    #[test]
    fn unusual_framing_stops_the_following() {
        for head in [
            &b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            b"POST /a HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
            b"GET /a HTTP/1.0\r\n\r\n",
            b"GET /a HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let framing = fed(&[head, GET]);
            assert!(
                matches!(framing.at, At::Lost),
                "{:?}",
                String::from_utf8_lossy(head)
            );
            assert!(!framing.between_requests());
        }
        // A head too long for hyper.
        let mut long = b"GET /a HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_BUF + 1));
        assert!(matches!(fed(&[&long]).at, At::Lost));
    }

    proptest! {
        /// However hyper's reads cut the bytes, the framing ends in the
        /// same place: a body that holds a request head is never taken
        /// for one.
        #[test]
        fn any_cut_of_the_bytes_is_followed_alike(
            bodies in prop::collection::vec(0usize..40, 1..5),
            cuts in prop::collection::vec(0usize..400, 0..12),
        ) {
            let mut bytes = Vec::new();
            for len in &bodies {
                // Bodies made of request heads.
                let body: Vec<u8> = GET.iter().copied().cycle().take(*len).collect();
                bytes.extend_from_slice(
                    format!("POST /a HTTP/1.1\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
                );
                bytes.extend_from_slice(&body);
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
            let framing = fed(&pieces);
            prop_assert_eq!(framing.heads(), bodies.len());
            prop_assert!(framing.between_requests());
            // Every proper prefix ends inside a request.
            for cut in 1..bytes.len() {
                let partial = fed(&[&bytes[..cut]]);
                let whole_requests = partial.between_requests();
                if whole_requests {
                    // Only at the end of a request's body.
                    let mut end = 0;
                    let mut ends = Vec::new();
                    for len in &bodies {
                        end += format!("POST /a HTTP/1.1\r\nContent-Length: {len}\r\n\r\n").len() + len;
                        ends.push(end);
                    }
                    prop_assert!(ends.contains(&cut), "between requests at {}", cut);
                }
            }
        }
    }
}

//! W3C trace context: one trace from the form to the screen.
//!
//! A [`TraceContext`] is the `traceparent` of the W3C Trace Context
//! recommendation (version `00`): a 16-byte trace id shared by every
//! service a request passes through, the 8-byte id of the calling span,
//! and the sampled flag. It travels:
//!
//! - into core-app on the POST's `traceparent` header (or a new root);
//!   the context of a span is made with [`start`], which lets an installed
//!   exporter (OTLP) give the span its own ids;
//! - in the outbox row, then in the request record's `traceparent` Kafka
//!   header, to the aggregator;
//! - to the insurers on every partner-API call's `traceparent` header;
//! - in the quote and error records' headers back to core-app's read model
//!   and SSE delivery.
//!
//! Inside a process the context of the running work is *current*, the way
//! OpenTelemetry's context is: a future runs in one with
//! [`WithTrace::in_trace`], and [`current`] reads it (a thread-local set
//! while the future is polled, so it works on any executor). Adapters read
//! it where a message or a call leaves the process; a port implementation
//! that ignores it loses only the correlation.
//!
//! ```
//! use osago_core::trace::{self, TraceContext, WithTrace};
//!
//! let parent = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
//! assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! let seen = futures::executor::block_on(async { trace::current() }.in_trace(parent));
//! assert_eq!(seen, Some(parent));
//! assert_eq!(trace::current(), None);
//! ```

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A W3C `traceparent`: trace id, parent span id, sampled flag.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

impl TraceContext {
    /// A new trace (random ids, sampled): where no valid parent came in.
    pub fn new_root() -> Self {
        let trace = uuid::Uuid::new_v4();
        let mut trace_id = *trace.as_bytes();
        // UUID v4 fixes 6 bits; the trace id must only be non-zero and
        // random enough to be unique, which 122 random bits are.
        trace_id[0] |= 1;
        Self {
            trace_id,
            span_id: new_span_id(),
            sampled: true,
        }
    }

    /// The same trace with a new span id: the context this process passes
    /// on for the work it does under `self`.
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// Parses a `traceparent` header value. Version `00` must be exactly
    /// 55 characters; a later version is read by its first four fields (as
    /// the recommendation asks). All-zero ids, version `ff`, upper-case hex
    /// and anything malformed give `None`: the caller starts a new root.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim_matches([' ', '\t']);
        let bytes = value.as_bytes();
        if bytes.len() < 55 || !value.is_ascii() {
            return None;
        }
        let version = hex_bytes::<1>(&value[0..2])?[0];
        if version == 0xff || (version == 0 && bytes.len() != 55) {
            return None;
        }
        if version != 0 && bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id = hex_bytes::<16>(&value[3..35])?;
        let span_id = hex_bytes::<8>(&value[36..52])?;
        let flags = hex_bytes::<1>(&value[53..55])?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// A context from raw ids (an OpenTelemetry span's); `None` when either
    /// id is all zeros.
    pub fn from_parts(trace_id: [u8; 16], span_id: [u8; 8], sampled: bool) -> Option<Self> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self {
            trace_id,
            span_id,
            sampled,
        })
    }

    /// The trace id, 32 lower-case hex digits (what logs carry).
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id, 16 lower-case hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    /// The raw trace id (for an OpenTelemetry exporter).
    pub fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The raw span id.
    pub fn span_id_bytes(&self) -> [u8; 8] {
        self.span_id
    }

    /// Whether the caller records this trace.
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// The `traceparent` header value (version `00`).
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id(),
            self.span_id(),
            u8::from(self.sampled)
        )
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header())
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header())
    }
}

fn new_span_id() -> [u8; 8] {
    let random = uuid::Uuid::new_v4();
    let mut id = [0u8; 8];
    id.copy_from_slice(&random.as_bytes()[8..16]);
    id[7] |= 1; // never all zero
    id
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != N * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Joins a `tracing` span to a trace, for an exporter that records spans
/// (OpenTelemetry): given the span and its parent context (`None`: a new
/// trace), it returns the span's own context, or `None` when it records
/// nothing for this span.
pub type SpanAdopter = fn(&tracing::Span, Option<&TraceContext>) -> Option<TraceContext>;

static ADOPTER: std::sync::OnceLock<SpanAdopter> = std::sync::OnceLock::new();

/// Installs the process's [`SpanAdopter`] (once; `false` if one was
/// installed already). `osago-service` installs one when OTLP export is on.
pub fn set_span_adopter(adopter: SpanAdopter) -> bool {
    ADOPTER.set(adopter).is_ok()
}

/// The context of the work `span` does under `parent` (`None`: the work
/// starts a trace): the context to make current for it, and to send on.
///
/// With an exporter installed, the span joins the trace as `parent`'s child
/// and its own ids are returned, so what the next service sees as its
/// parent is a span the exporter records. Without one, it is `parent`'s
/// child with a new span id (or a new root).
pub fn start(span: &tracing::Span, parent: Option<&TraceContext>) -> TraceContext {
    ADOPTER
        .get()
        .and_then(|adopt| adopt(span, parent))
        .unwrap_or_else(|| match parent {
            Some(parent) => parent.child(),
            None => TraceContext::new_root(),
        })
}

thread_local! {
    static CURRENT: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

/// The trace context of the work running on this thread, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.with(Cell::get)
}

/// Runs `work` with `context` current (synchronous code).
pub fn with<R>(context: Option<TraceContext>, work: impl FnOnce() -> R) -> R {
    let _restore = Restore(CURRENT.with(|c| c.replace(context)));
    work()
}

/// Puts the previous context back, even on a panic.
struct Restore(Option<TraceContext>);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

pin_project_lite::pin_project! {
    /// A future that runs with a trace context current (see [`WithTrace`]).
    #[derive(Debug)]
    pub struct InTrace<F> {
        #[pin]
        inner: F,
        context: Option<TraceContext>,
    }
}

impl<F: Future> Future for InTrace<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _restore = Restore(CURRENT.with(|c| c.replace(*this.context)));
        this.inner.poll(cx)
    }
}

/// Runs a future in a trace context.
pub trait WithTrace: Future + Sized {
    /// `self`, with `context` current whenever it is polled.
    fn in_trace(self, context: TraceContext) -> InTrace<Self> {
        InTrace {
            inner: self,
            context: Some(context),
        }
    }

    /// `self` in the context current now (for a task about to be spawned),
    /// or in none.
    fn in_current_trace(self) -> InTrace<Self> {
        InTrace {
            inner: self,
            context: current(),
        }
    }
}

impl<F: Future> WithTrace for F {}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let parsed = TraceContext::parse(SAMPLE).unwrap();
        assert_eq!(parsed.header(), SAMPLE);
        assert!(parsed.sampled());
        assert_eq!(parsed.span_id(), "00f067aa0ba902b7");
        let unsampled = TraceContext::parse(&SAMPLE.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled());
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0€",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
        // A later version may append fields.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert!(TraceContext::parse(future).is_some());
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_span() {
        let parent = TraceContext::parse(SAMPLE).unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());
        // Without an exporter, a span's context is its parent's child.
        let span = tracing::Span::none();
        let continued = start(&span, Some(&parent));
        assert_eq!(continued.trace_id(), parent.trace_id());
        assert_ne!(continued.span_id(), parent.span_id());
        let root = start(&span, None);
        assert_ne!(root.trace_id(), parent.trace_id());
        assert_eq!(TraceContext::parse(&root.header()), Some(root));
        assert_eq!(
            TraceContext::from_parts(parent.trace_id_bytes(), parent.span_id_bytes(), true),
            Some(parent)
        );
        assert_eq!(TraceContext::from_parts([0; 16], [1; 8], true), None);
    }

    #[test]
    fn the_context_is_current_only_while_its_future_runs() {
        let context = TraceContext::new_root();
        let inner = futures::executor::block_on(
            async {
                let outer = current();
                let nested = async { current() }.in_trace(context.child()).await;
                (outer, nested, current())
            }
            .in_trace(context),
        );
        assert_eq!(inner.0, Some(context));
        assert_eq!(inner.1.unwrap().trace_id(), context.trace_id());
        assert_ne!(inner.1, Some(context));
        assert_eq!(inner.2, Some(context));
        assert_eq!(current(), None);
        assert_eq!(with(Some(context), current), Some(context));
        assert_eq!(current(), None);
    }
}

//! The bodies a connection moves: a request body read out after an early
//! answer (lingering close), and a response body that is either streamed or
//! held in a bounded buffer for a slow reader, timing its progress.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use tokio::sync::OwnedSemaphorePermit;

use super::CHUNK;
use super::activity::InFlight;
use crate::telemetry;

/// Most HTTP clients send a whole request body before they read anything:
/// answering early (413, 401, 429, …) and closing with the rest of the body
/// unread makes the kernel reset the connection, and the client sees a
/// broken pipe instead of the answer. So a body dropped unfinished is read
/// and thrown away in the background for a bounded time and size first (as
pub(super) struct Lingering {
    body: Option<Incoming>,
    /// `None`: an unfinished body is dropped, not read.
    deadline: Option<Duration>,
}

/// The most a lingering body is read before its connection is dropped.
const LINGER_BYTES: usize = 256 * 1024 * 1024;

impl Lingering {
    pub(super) fn new(body: Incoming, deadline: Option<Duration>) -> Self {
        Self {
            body: Some(body),
            deadline,
        }
    }
}

impl hyper::body::Body for Lingering {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut().body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|body| body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |body| body.size_hint())
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut body) = self.body.take().filter(|body| !body.is_end_stream()) else {
            return;
        };
        let Some(deadline) = self.deadline else {
            return;
        };
        tokio::spawn(async move {
            let discard = async {
                let mut read = 0;
                while let Some(Ok(frame)) = body.frame().await {
                    read += frame.data_ref().map_or(0, Bytes::len);
                    if read > LINGER_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(deadline, discard).await;
        });
    }
}

/// A held response's room in the budget, given back when it is dropped.
pub(super) struct Room {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
    public: bool,
}

impl Room {
    pub(super) fn new(permit: OwnedSemaphorePermit, bytes: usize, public: bool) -> Self {
        if public {
            telemetry::metrics().response_buffer_changed(bytes as i64);
        }
        Self {
            _permit: permit,
            bytes,
            public,
        }
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        if self.public {
            telemetry::metrics().response_buffer_changed(-(self.bytes as i64));
        }
    }
}

pub(super) enum Content {
    Streamed(Body),
    Held { rest: Bytes, _room: Room },
}

/// Every response body: reports each move to its connection's watch, and
/// ends its request's time in flight when dropped.
pub struct ResponseBody {
    content: Content,
    in_flight: InFlight,
}

impl ResponseBody {
    pub(super) fn new(content: Content, mut in_flight: InFlight, write_timeout: Duration) -> Self {
        let len = match &content {
            Content::Streamed(body) => body.size_hint().lower(),
            Content::Held { rest, .. } => rest.len() as u64,
        };
        in_flight.sending(len, write_timeout);
        Self { content, in_flight }
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let frame = match &mut this.content {
            Content::Streamed(body) => Pin::new(body).poll_frame(cx),
            Content::Held { rest, .. } if rest.is_empty() => Poll::Ready(None),
            Content::Held { rest, .. } => {
                let chunk = rest.split_to(rest.len().min(CHUNK));
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        };
        if let Poll::Ready(Some(_)) = &frame {
            this.in_flight.moved();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.content {
            Content::Streamed(body) => body.is_end_stream(),
            Content::Held { rest, .. } => rest.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.content {
            Content::Streamed(body) => body.size_hint(),
            Content::Held { rest, .. } => SizeHint::with_exact(rest.len() as u64),
        }
    }
}

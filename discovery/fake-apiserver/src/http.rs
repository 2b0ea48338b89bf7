//! One HTTP request: authentication, routing, dispatch to discovery / list / get / watch, the
//! JSON or `Status` response, and the request log entry. Also the response body type (a whole
//! buffer, or a watch stream fed by a channel). Runs on: the server's runtime thread.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::discovery_docs;
use crate::render::{self, IncludeObject};
use crate::route::{route, Query, Route};
use crate::server::{lock, Shared};
use crate::status::StatusError;
use crate::{list, watch, Auth, RequestRecord, Verb};

/// A chunk of a watch stream, or the instruction to abort the connection.
pub(crate) type StreamItem = Result<Bytes, std::io::Error>;

/// A response body: a complete buffer (with Content-Length) or a chunked watch stream. An
/// `Err` item from the stream aborts the connection without the terminating chunk.
pub(crate) enum RespBody {
    Full(Option<Bytes>),
    Stream {
        rx: mpsc::Receiver<StreamItem>,
        /// An abort received but not yet returned: hyper drops its write buffer when a body
        /// fails, so the body first answers `Pending` once, letting hyper flush the events
        /// already written, and fails on the next poll.
        aborting: Option<std::io::Error>,
    },
}

impl RespBody {
    pub(crate) fn stream(rx: mpsc::Receiver<StreamItem>) -> RespBody {
        RespBody::Stream { rx, aborting: None }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Stream { rx, aborting } => {
                if let Some(e) = aborting.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(Err(e))) => {
                        *aborting = Some(e);
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    other => other.map(|o| o.map(|r| r.map(Frame::data))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, RespBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RespBody::Full(None) => SizeHint::with_exact(0),
            RespBody::Stream { .. } => SizeHint::default(),
        }
    }
}

/// What a handler produced.
pub(crate) enum Reply {
    Json(StatusCode, Value),
    Text(&'static str),
    Watch(RespBody),
}

impl Reply {
    fn status(&self) -> StatusCode {
        match self {
            Reply::Json(code, _) => *code,
            _ => StatusCode::OK,
        }
    }

    fn into_response(self) -> Response<RespBody> {
        let (status, content_type, body) = match self {
            Reply::Json(status, value) => (
                status,
                "application/json",
                RespBody::Full(Some(Bytes::from(value.to_string()))),
            ),
            Reply::Text(text) => (
                StatusCode::OK,
                "text/plain; charset=utf-8",
                RespBody::Full(Some(Bytes::from_static(text.as_bytes()))),
            ),
            Reply::Watch(body) => (StatusCode::OK, "application/json", body),
        };
        let watch = matches!(body, RespBody::Stream { .. });
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if watch {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
        }
        response
    }
}

impl From<StatusError> for Reply {
    fn from(e: StatusError) -> Reply {
        let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Reply::Json(code, e.to_json())
    }
}

/// Serves one request; never fails at the HTTP level (errors are `Status` bodies).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    client_cert: bool,
) -> Result<Response<RespBody>, Infallible> {
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let route = route(&segments);
    let query = Query::parse(&raw_query);
    let watching = query.flag("watch") == Some(true);
    let verb = match &route {
        Route::Collection { .. } if watching => Verb::Watch,
        Route::Collection { .. } => Verb::List,
        Route::Object { .. } => Verb::Get,
        Route::Discovery => Verb::Discovery,
        Route::Health | Route::NotFound => Verb::Other,
    };
    let resource = match &route {
        Route::Collection { kind, .. } | Route::Object { kind, .. } => {
            Some(kind.plural().to_string())
        }
        _ => None,
    };

    let authorization = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let auth_state = lock(&shared.auth).clone();
    let authenticated = if client_cert {
        Ok(true)
    } else {
        auth_state.authenticate(authorization)
    };
    let (auth, reply) = match authenticated {
        Err(e) => (Auth::Refused, Reply::from(e)),
        Ok(with_token) => {
            let auth = if with_token {
                Auth::Token
            } else {
                Auth::Anonymous
            };
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let reply = if req.method() != Method::GET {
                Reply::from(StatusError::method_not_allowed(req.method().as_str()))
            } else {
                dispatch(&shared, &auth_state, route, &segments, &query, accept)
                    .unwrap_or_else(Reply::from)
            };
            (auth, reply)
        }
    };

    let record = RequestRecord {
        method: req.method().to_string(),
        path,
        query: raw_query,
        verb,
        resource,
        auth,
        status: reply.status().as_u16(),
    };
    if shared.log_requests {
        eprintln!(
            "fake-apiserver: {} {}{}{} -> {} ({:?})",
            record.method,
            record.path,
            if record.query.is_empty() { "" } else { "?" },
            record.query,
            record.status,
            record.auth
        );
    }
    lock(&shared.log).push(record);
    Ok(reply.into_response())
}

fn dispatch(
    shared: &Arc<Shared>,
    auth: &crate::auth::AuthState,
    route: Route,
    segments: &[&str],
    query: &Query,
    accept: Option<&str>,
) -> Result<Reply, StatusError> {
    match route {
        Route::Health => Ok(Reply::Text("ok")),
        Route::NotFound => Err(StatusError::not_found_path()),
        Route::Discovery => discovery_docs::document(segments, &shared.server_address)
            .map(|doc| Reply::Json(StatusCode::OK, doc))
            .ok_or_else(StatusError::not_found_path),
        Route::Collection { kind, namespace } => {
            let include = IncludeObject::parse(query.get("includeObject"))?;
            let format = render::negotiate(accept, include)?;
            if query.flag("watch") == Some(true) {
                auth.authorize(kind, "watch", namespace.as_deref())?;
                let request = watch::WatchRequest::parse(kind, namespace, query, format, shared)?;
                Ok(Reply::Watch(watch::start(Arc::clone(shared), request)?))
            } else {
                auth.authorize(kind, "list", namespace.as_deref())?;
                let list = list::list(shared, kind, namespace.as_deref(), query, format)?;
                Ok(Reply::Json(StatusCode::OK, list))
            }
        }
        Route::Object {
            kind,
            namespace,
            name,
        } => {
            auth.authorize(kind, "get", namespace.as_deref())?;
            let include = IncludeObject::parse(query.get("includeObject"))?;
            let format = render::negotiate(accept, include)?;
            let obj = list::get(shared, kind, namespace.as_deref(), &name, format)?;
            Ok(Reply::Json(StatusCode::OK, obj))
        }
    }
}

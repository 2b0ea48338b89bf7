//! The server's own thread and tokio runtime, the accept loop, and per-connection HTTP/1.1
//! serving (plain or TLS). The test's thread starts and stops listening through `Listening`
//! and waits for the loop to finish, so `stop()` returns only once the port is closed and every
//! connection is gone. Runs on: the `fake-apiserver` thread (one current-thread runtime).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::auth::AuthState;
use crate::store::Store;
use crate::RequestRecord;

/// State shared by the test-facing handle and the server's tasks.
pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) auth: Mutex<AuthState>,
    /// Every request received, for assertions (`requests()`).
    pub(crate) log: Mutex<Vec<RequestRecord>>,
    /// `host:port` advertised in `/api`.
    pub(crate) server_address: String,
    /// Periodic BOOKMARKs on watches that allow them; `None` = only on `bookmark()`.
    pub(crate) bookmark_interval: Option<Duration>,
    /// A watch's lifetime when the request has no `timeoutSeconds`.
    pub(crate) default_watch_timeout: Duration,
    /// Print one line per request on stderr (the binary).
    pub(crate) log_requests: bool,
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not wedge the server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The runtime thread. Dropping it stops the runtime and joins the thread.
pub(crate) struct RuntimeThread {
    pub(crate) handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RuntimeThread {
    pub(crate) fn start() -> std::io::Result<RuntimeThread> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
                // Dropping `rt` here cancels every task still running.
            })?;
        Ok(RuntimeThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An accept loop in progress; `stop` ends it and waits.
pub(crate) struct Listening {
    stop: oneshot::Sender<()>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Listening {
    /// Starts serving `listener` (already bound and non-blocking) on the runtime.
    pub(crate) fn start(
        runtime: &tokio::runtime::Handle,
        shared: Arc<Shared>,
        listener: std::net::TcpListener,
        tls: Option<TlsAcceptor>,
    ) -> Listening {
        let (stop, stopped) = oneshot::channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            accept_loop(shared, listener, tls, stopped).await;
            let _ = done_tx.send(());
        });
        Listening { stop, done }
    }

    /// Closes the listening socket and every connection, then returns.
    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.done.recv();
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(error) => {
            tracing::error!(%error, "fake-apiserver: cannot register the listener");
            return;
        }
    };
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve(Arc::clone(&shared), stream, peer, tls.clone()));
                }
                Err(error) => {
                    tracing::debug!(%error, "fake-apiserver: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Abort every connection: sockets close without a goodbye, like a dying API server.
    connections.shutdown().await;
}

async fn serve(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>) {
    let _ = stream.set_nodelay(true);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    let result = match tls {
        None => {
            let service =
                service_fn(move |req| crate::http::handle(Arc::clone(&shared), req, false));
            builder
                .serve_connection(TokioIo::new(stream), service)
                .await
        }
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(tls_stream) => {
                // A verified client certificate authenticates every request of the
                // connection.
                let cert = tls_stream.get_ref().1.peer_certificates().is_some();
                let service =
                    service_fn(move |req| crate::http::handle(Arc::clone(&shared), req, cert));
                builder
                    .serve_connection(TokioIo::new(tls_stream), service)
                    .await
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "fake-apiserver: TLS handshake failed");
                return;
            }
        },
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "fake-apiserver: connection ended with an error");
    }
}

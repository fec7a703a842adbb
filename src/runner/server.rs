//! Serving: [`serve`] runs the router of `api` on a listener, with a time
//! limit on request heads and a graceful shutdown that first stops every
//! running job; [`shutdown_signal`] is the usual Ctrl-C/SIGTERM future.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::api::app;
use super::Runner;

/// How long open connections get to finish after every job has stopped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's head (its request line
/// and headers). A slower one (a stalled or "slowloris" client) is cut off,
/// so it cannot hold a connection open without asking for anything.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How often `--keep-days` is applied besides at each job's end.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Serves [`app`] on `listener` until `shutdown` completes; then stops every
/// running job (see [`Runner::shutdown`]) and waits for open connections to
/// finish (each event stream ends once its job has ended).
///
/// A client must send each request's head within [`HEADER_READ_TIMEOUT`].
/// A client that stopped reading would hold its stream, and so the
/// shutdown, open forever; connections still open 5 s after the jobs have
/// stopped are therefore abandoned and `serve` returns. (Their tasks end
/// when the client goes away or the tokio runtime is dropped, as when
/// `pipeline-runner` exits.)
pub async fn serve(
    listener: tokio::net::TcpListener,
    runner: Arc<Runner>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let app = app(Arc::clone(&runner));
    // Jobs left queued by an earlier runner start now.
    runner.dispatch();
    // `--keep-days` also applies while no job ends.
    let ticker = runner.options().keep_days.map(|_| {
        let weak = Arc::downgrade(&runner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RETENTION_EVERY);
            loop {
                tick.tick().await;
                let Some(runner) = weak.upgrade() else { break };
                runner.apply_retention();
            }
        })
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connections = GracefulShutdown::new();
    let stop = async move {
        shutdown.await;
        runner.shutdown().await;
        if let Some(t) = ticker {
            t.abort();
        }
    };
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then go
                    // on accepting rather than end the service.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = connections.watch(conn);
        tokio::spawn(async move {
            // A connection's own errors (a reset, a timed-out head) end
            // that connection only.
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::select! {
        () = connections.shutdown() => {}
        () = tokio::time::sleep(CLOSE_GRACE) => {
            tracing::info!(
                "closing connections still open {}s after shutdown",
                CLOSE_GRACE.as_secs()
            );
        }
    }
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
///
/// Called inside a tokio runtime, it starts listening for the signals at
/// once, not at the future's first poll, so a signal that arrives before
/// then is not lost (the process would otherwise die of it without its
/// graceful stop). Called outside one, it starts listening at the first poll.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    let eager = tokio::runtime::Handle::try_current().ok().map(|_| {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    });
    async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (int, term) = match eager {
                Some(streams) => streams,
                None => (
                    signal(SignalKind::interrupt()).ok(),
                    signal(SignalKind::terminate()).ok(),
                ),
            };
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(int) => {}
                () = wait(term) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

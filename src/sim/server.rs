//! What every simulator does the same way: bind a loopback port, serve an axum router in a task,
//! and hand back a handle that stops it.

use anyhow::Context as _;
use axum::Router;
use std::net::SocketAddr;

/// A running simulator. Dropping it stops the server at once; [`shutdown`](Self::shutdown)
/// lets requests in flight finish.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    /// The API root under the server, e.g. `/v1` (`""` for the bare host).
    base_path: &'static str,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl SimHandle {
    /// The API root a connector's `base_url` takes, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, self.base_path)
    }

    /// The address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and lets requests in flight finish.
    pub fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        // Dropped without `shutdown`: stop at once. After `shutdown` the task is left to finish
        // its graceful stop.
        if self.stop.take().is_some() {
            self.task.abort();
        }
    }
}

/// Binds `addr` (port 0 picks a free one) and serves `router` until the handle is shut down
/// or dropped. `name` names the simulator in messages; `base_path` is its API root.
pub async fn spawn(
    name: &'static str,
    router: Router,
    addr: SocketAddr,
    base_path: &'static str,
) -> anyhow::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {name} simulator to {addr}"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "{name} simulator stopped");
        }
    });
    Ok(SimHandle {
        addr,
        base_path,
        stop: Some(stop),
        task,
    })
}

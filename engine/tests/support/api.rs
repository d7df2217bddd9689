//! An axum router served on 127.0.0.1 (an ephemeral port) by a task of the
//! test's tokio runtime; it stops with the runtime, when the test ends.

use std::net::SocketAddr;

/// Serves `app` on 127.0.0.1; its address.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("the listener's address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

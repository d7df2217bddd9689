//! What a cluster test reads off the NATS server itself.

use super::nats::Nats;

/// The changelog stream's message count, from the server.
pub async fn changelog_messages(nats: &Nats, prefix: &str) -> u64 {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(format!("{prefix}_ST"))
        .await
        .expect("the changelog stream");
    stream.info().await.expect("stream info").state.messages
}

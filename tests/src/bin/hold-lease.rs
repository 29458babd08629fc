//! Test helper: takes one (connection-bound) permit from the daemon at `$PACER_SOCKET`, for the
//! key in `$ANTHROPIC_API_KEY` and the model given as the first argument, prints
//! its lease id, and holds it until killed. Tests kill it to check that the daemon frees the
//! slot of a client that died.

use std::io::Write;

use pacer_client::{AcquireRequest, Client, FailMode};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let model = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "claude-sonnet-4-5".into());
    let key = std::env::var("ANTHROPIC_API_KEY").expect("ANTHROPIC_API_KEY");
    let client = Client::builder()
        .fail_mode(FailMode::Closed)
        .connect()
        .await
        .expect("connect to pacerd");
    let permit = client
        .acquire(AcquireRequest::new(&key, model))
        .await
        .expect("a permit");
    println!("{}", permit.lease().expect("brokered").0);
    std::io::stdout().flush().expect("flush");
    std::future::pending::<()>().await;
    drop(permit);
}

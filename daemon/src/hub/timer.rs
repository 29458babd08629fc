//! The one timer: ticks the broker whenever its next wakeup comes.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Hub;

/// The shortest sleep between ticks, so that a wakeup in the past can never spin the loop.
const MIN_SLEEP: Duration = Duration::from_millis(1);

/// Ticks the broker whenever its next wakeup comes, until `stop` fires.
pub async fn drive(hub: Arc<Hub>, stop: CancellationToken) {
    loop {
        let next = hub.tick();
        let sleep = async {
            match next {
                Some(at) => {
                    let at = at.max(super::now() + MIN_SLEEP);
                    tokio::time::sleep_until(at.into()).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = hub.timer.notified() => {}
            () = stop.cancelled() => return,
        }
    }
}

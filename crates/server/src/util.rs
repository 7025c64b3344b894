//! Small helpers: clocks, ids, formatting.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Most bytes of a refused upload read and discarded before the refusal is answered.
const DRAIN_BYTES: usize = 16 << 20;
/// Longest time spent discarding them.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads and discards up to 16 MiB (or 2 s) of a request body the server refuses before
/// reading it. Answering while the client still writes makes the kernel reset the connection
/// over the unread bytes, and the client then sees "broken pipe" instead of the refusal; a
/// small upload is read whole, so its client always gets the answer. A large one still gets
/// the reset after the bound: the server does not read gigabytes it refuses.
pub async fn drain_refused(body: axum::body::Body) {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut read = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while read < DRAIN_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |data| data.len()),
                _ => break,
            }
        }
    })
    .await;
}

//! CircleCI's pagination: a list answers `next_page_token` (null on the last page) and takes it
//! back as `page-token`. Tokens are opaque to clients; here they encode a keyset position
//! (where the last page ended), not an offset, so a page never repeats or skips a row when new
//! rows arrive meanwhile: new pipelines sort before every position already handed out.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::AppError;
use crate::store::PipelineCursor;

/// Rows per page, as CircleCI's pipeline lists.
pub const PAGE_SIZE: i64 = 20;

/// Longest `page-token` looked at.
const MAX_TOKEN_LEN: usize = 200;

/// The token that continues after `cursor`.
pub fn encode(cursor: &PipelineCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "p1.{}.{}.{}",
        cursor.created_at, cursor.number, cursor.id
    ))
}

/// The position a `page-token` names; a 400 naming `page-token` for anything this server did
/// not hand out.
pub fn decode(token: &str) -> Result<PipelineCursor, AppError> {
    let invalid = || {
        AppError::bad_request(
            "page-token is not a token this server gave (pass `next_page_token` back as it came)",
        )
    };
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.splitn(4, '.');
    if parts.next() != Some("p1") {
        return Err(invalid());
    }
    let created_at = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(invalid)?;
    let number = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(invalid)?;
    let id = parts.next().ok_or_else(invalid)?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(invalid());
    }
    Ok(PipelineCursor {
        created_at,
        number,
        id: id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_foreign_ones_are_refused() {
        let cursor = PipelineCursor {
            created_at: 1_700_000_000_123,
            number: 42,
            id: "0b6c6f3a-1c1e-4a6e-9a55-3e0e2f0b9d11".into(),
        };
        assert_eq!(decode(&encode(&cursor)).unwrap(), cursor);
        for bad in ["", "x", "cDEuMS4y", &"a".repeat(500), "cDIuMS4yLmFi"] {
            let err = decode(bad).unwrap_err();
            assert!(err.message.contains("page-token"), "{bad}: {}", err.message);
        }
    }
}

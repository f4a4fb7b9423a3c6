//! Reading a response body without trusting its size.

use super::failure::{classify, Failure};

/// Reads the body, refusing more than `max` bytes (a declared `Content-Length` above it is
/// refused before reading): a bigger body is a failure, not a reason to buffer without bound.
pub async fn read_capped(response: &mut reqwest::Response, max: usize) -> Result<Vec<u8>, Failure> {
    let too_large = || Failure::Body(format!("larger than {max} bytes"));
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > max {
                    return Err(too_large());
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => {
                return Err(match classify(&e) {
                    timeout @ Failure::Timeout(_) => timeout,
                    other => Failure::Body(format!("reading the body: {other}")),
                })
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves each of `responses` (raw HTTP/1.1 bytes) to one connection; returns the base URL.
    async fn serve(responses: Vec<Vec<u8>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for response in responses {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            }
        });
        format!("http://{addr}")
    }

    fn response(head: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {head}\r\nconnection: close\r\n\r\n").into_bytes();
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn bodies_are_capped_whether_declared_or_streamed() {
        let fits = response("200 OK\r\ncontent-length: 4", b"abcd");
        let declared = response("200 OK\r\ncontent-length: 5", b"abcde");
        let streamed = response("200 OK", b"abcde"); // no length: read until close
        let url = serve(vec![fits, declared, streamed]).await;
        let client = crate::upstream::build_client(None).unwrap();
        let read = || async { read_capped(&mut client.get(&url).send().await.unwrap(), 4).await };
        assert_eq!(read().await.unwrap(), b"abcd");
        for _ in 0..2 {
            let failure = read().await.unwrap_err();
            assert_eq!(failure.kind(), "body", "{failure}");
            assert!(failure.to_string().contains("larger than 4 bytes"), "{failure}");
        }
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let redirect = response("302 Found\r\nlocation: http://127.0.0.1:1/elsewhere\r\ncontent-length: 0", b"");
        let url = serve(vec![redirect]).await;
        let client = crate::upstream::build_client(None).unwrap();
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 302, "the redirect is the answer, not followed");
    }
}

//! `--probe URL,…`: a readiness check for Kubernetes' exec probe that needs nothing in the
//! image but this binary. The pod is ready only when Kong's `/status/ready` *and* our
//! `/ready` answer 200, so a probe must GET several URLs; Kong's base image does not promise
//! curl or wget, and our binary is already in it.
//!
//! Plain HTTP/1.0 over TCP to loopback addresses (both listeners are inside the pod), each
//! URL bounded by a 2 s timeout (a probe that hangs is as bad as one that fails).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("--probe {0}: only http://HOST:PORT/PATH URLs are supported")]
    BadUrl(String),
    #[error("{url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("{url}: answered {status}")]
    NotOk { url: String, status: String },
}

/// Splits `http://host:port/path` into the address and the path.
fn parse(url: &str) -> Result<(SocketAddr, String), ProbeError> {
    let bad = || ProbeError::BadUrl(url.to_owned());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let addr = authority.to_socket_addrs().map_err(|_| bad())?.next().ok_or_else(bad)?;
    Ok((addr, path))
}

/// GETs one URL; Ok when it answers 200.
pub fn check(url: &str) -> Result<(), ProbeError> {
    let (addr, path) = parse(url)?;
    let io = |source| ProbeError::Io { url: url.to_owned(), source };
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(io)?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(io)?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.lines().next().unwrap_or("").split_whitespace().nth(1).unwrap_or("nothing").to_owned();
    if status == "200" {
        Ok(())
    } else {
        Err(ProbeError::NotOk { url: url.to_owned(), status })
    }
}

/// Checks every URL (all of them, so the output names each failure); Ok when all are 200.
pub fn check_all(urls: &[String]) -> Result<(), Vec<ProbeError>> {
    let failures: Vec<_> = urls.iter().filter_map(|u| check(u).err()).collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_plain_http_with_a_port() {
        assert_eq!(parse("http://127.0.0.1:8100/status/ready").unwrap().1, "/status/ready");
        assert_eq!(parse("http://127.0.0.1:9542").unwrap().1, "/");
        for bad in ["https://127.0.0.1:1/x", "127.0.0.1:1/x", "http://127.0.0.1/x"] {
            assert!(matches!(parse(bad), Err(ProbeError::BadUrl(_))), "{bad}");
        }
    }
}

//! A few Redis commands over raw RESP (the bench only asks `SCAN`, `MEMORY USAGE`, `DBSIZE` and
//! `INFO memory`; no client library or `redis-cli` needed).

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Why a Redis command failed.
#[derive(Debug, thiserror::Error)]
pub enum RespError {
    /// Connecting, writing or reading failed.
    #[error("redis {addr}: {source}")]
    Io {
        /// host:port.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Redis answered with an error or something unexpected.
    #[error("redis {command}: {detail}")]
    Reply {
        /// The command.
        command: String,
        /// What came back.
        detail: String,
    },
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR …`.
    Error(String),
    /// `:42`.
    Int(i64),
    /// `$n` (None for `$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*n` (empty for `*-1`).
    Array(Vec<Reply>),
}

/// The RESP encoding of a command.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one reply from the start of `buf`; `None` when it is not complete yet.
pub fn parse(buf: &[u8]) -> Option<(Reply, usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..end]).ok()?;
    let next = end + 2;
    match buf.first()? {
        b'+' => Some((Reply::Simple(line.to_owned()), next)),
        b'-' => Some((Reply::Error(line.to_owned()), next)),
        b':' => Some((Reply::Int(line.parse().ok()?), next)),
        b'$' => {
            let n: i64 = line.parse().ok()?;
            if n < 0 {
                return Some((Reply::Bulk(None), next));
            }
            let n = n as usize;
            if buf.len() < next + n + 2 {
                return None;
            }
            Some((Reply::Bulk(Some(buf[next..next + n].to_vec())), next + n + 2))
        }
        b'*' => {
            let n: i64 = line.parse().ok()?;
            let mut items = Vec::new();
            let mut at = next;
            for _ in 0..n.max(0) {
                let (item, used) = parse(&buf[at..])?;
                items.push(item);
                at += used;
            }
            Some((Reply::Array(items), at))
        }
        _ => None,
    }
}

/// Sends one command to Redis at `addr` and reads its reply.
pub async fn command(addr: &str, args: &[&str]) -> Result<Reply, RespError> {
    let io = |source| RespError::Io { addr: addr.to_owned(), source };
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
    s.write_all(&encode(args)).await.map_err(io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some((reply, _)) = parse(&buf) {
            if let Reply::Error(e) = reply {
                return Err(RespError::Reply { command: args.join(" "), detail: e });
            }
            return Ok(reply);
        }
        let n = s.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(RespError::Reply {
                command: args.join(" "),
                detail: "connection closed".into(),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// An integer reply.
pub async fn int(addr: &str, args: &[&str]) -> Result<i64, RespError> {
    match command(addr, args).await? {
        Reply::Int(n) => Ok(n),
        other => Err(RespError::Reply { command: args.join(" "), detail: format!("{other:?}") }),
    }
}

/// Up to `limit` keys matching `pattern` (SCAN, so it never blocks Redis).
pub async fn scan(addr: &str, pattern: &str, limit: usize) -> Result<Vec<String>, RespError> {
    let mut cursor = "0".to_owned();
    let mut keys = Vec::new();
    loop {
        let reply = command(addr, &["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"]).await?;
        let bad = |r: &Reply| RespError::Reply { command: "SCAN".into(), detail: format!("{r:?}") };
        let Reply::Array(parts) = &reply else { return Err(bad(&reply)) };
        let (Some(Reply::Bulk(Some(c))), Some(Reply::Array(found))) = (parts.first(), parts.get(1))
        else {
            return Err(bad(&reply));
        };
        cursor = String::from_utf8_lossy(c).into_owned();
        for k in found {
            if let Reply::Bulk(Some(k)) = k {
                keys.push(String::from_utf8_lossy(k).into_owned());
            }
        }
        if cursor == "0" || keys.len() >= limit {
            keys.truncate(limit);
            return Ok(keys);
        }
    }
}

/// `used_memory` from `INFO memory`, in bytes.
pub async fn used_memory(addr: &str) -> Result<i64, RespError> {
    let reply = command(addr, &["INFO", "memory"]).await?;
    let Reply::Bulk(Some(text)) = &reply else {
        return Err(RespError::Reply { command: "INFO".into(), detail: format!("{reply:?}") });
    };
    String::from_utf8_lossy(text)
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok())
        .ok_or_else(|| RespError::Reply { command: "INFO".into(), detail: "no used_memory".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_bulk_strings() {
        assert_eq!(
            encode(&["MEMORY", "USAGE", "k"]),
            b"*3\r\n$6\r\nMEMORY\r\n$5\r\nUSAGE\r\n$1\r\nk\r\n"
        );
    }

    #[test]
    fn parses_scan_reply_and_incomplete_input() {
        let buf = b"*2\r\n$1\r\n0\r\n*2\r\n$3\r\nab:\r\n$-1\r\n";
        let (r, used) = parse(buf).unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(
            r,
            Reply::Array(vec![
                Reply::Bulk(Some(b"0".to_vec())),
                Reply::Array(vec![Reply::Bulk(Some(b"ab:".to_vec())), Reply::Bulk(None)]),
            ])
        );
        assert!(parse(&buf[..buf.len() - 3]).is_none());
        assert_eq!(parse(b":512\r\n"), Some((Reply::Int(512), 6)));
        assert_eq!(parse(b"-ERR x\r\n").unwrap().0, Reply::Error("ERR x".into()));
    }
}

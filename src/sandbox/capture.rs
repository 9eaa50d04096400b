//! Bounded reading of the jail's pipes.

use tokio::io::{AsyncRead, AsyncReadExt};

#[derive(Debug, Default)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// More was written than kept; the rest was read and dropped.
    pub truncated: bool,
}

/// Reads to EOF, keeping at most `cap` bytes. It keeps draining past the cap so
/// that a flooding script is stopped by its time limit, not by a full pipe.
pub async fn read_capped(mut reader: impl AsyncRead + Unpin, cap: u64) -> Captured {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let mut captured = Captured::default();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return captured,
            Ok(n) => {
                let room = cap.saturating_sub(captured.bytes.len());
                captured.bytes.extend_from_slice(&chunk[..n.min(room)]);
                captured.truncated |= n > room;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_first_bytes_and_flags_the_rest() {
        let data = vec![b'x'; 200_000];
        let captured = read_capped(&data[..], 1000).await;
        assert_eq!(captured.bytes.len(), 1000);
        assert!(captured.truncated);
        let captured = read_capped(&data[..10], 1000).await;
        assert_eq!(captured.bytes.len(), 10);
        assert!(!captured.truncated);
    }
}

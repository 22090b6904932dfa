//! SHA-256 of text as it is written, for the fingerprints of records and staged pages: the text
//! goes into the hash piece by piece as a formatter or serializer writes it, with no string of
//! it made first (a fingerprint is taken of every record and every page a run reads). By hand
//! because `sha2` 0.11 no longer implements `std::io::Write` for its hashers.

use sha2::{Digest, Sha256};

/// A SHA-256 hasher that text and JSON can be written into (`write!`, `serde_json::to_writer`).
#[derive(Default)]
pub struct Sha256Writer(Sha256);

impl Sha256Writer {
    /// Hashes `bytes` as they are.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything written.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

impl std::io::Write for Sha256Writer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn text_written_in_pieces_hashes_as_the_whole_text() {
        let mut pieces = Sha256Writer::default();
        pieces.update(b"42@");
        let (customer, quantity) = ("Acme", 1.5);
        write!(pieces, "{customer}\u{1f}{quantity}").unwrap();
        let whole: [u8; 32] = Sha256::digest("42@Acme\u{1f}1.5".as_bytes()).into();
        assert_eq!(pieces.finish(), whole);
    }
}

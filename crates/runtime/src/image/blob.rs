//! Content digests (`sha256:<64 lowercase hex>`), hashing while streaming (also for blobs
//! arriving from a registry, `BlobVerifier`), and opening a possibly gzip'd blob as a plain
//! byte stream.
//!
//! Only sha256 is supported: it is what `docker save` and OCI layouts use. Compression is
//! recognised by magic bytes, never by media type or file name; zstd is recognised only to be
//! refused with a clear message (no zstd decoder is linked).

use super::ImageError;
use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

const SHA256_PREFIX: &str = "sha256:";
const SHA256_HEX_LEN: usize = 64;
/// Read buffer for archives and layers: large enough that gzip and tar parsing are not
/// dominated by syscalls, small enough to be irrelevant for memory.
pub(crate) const STREAM_BUFFER_BYTES: usize = 256 * 1024;
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// A validated sha256 content digest. Serialized as `sha256:<hex>`, so a damaged store index
/// can never smuggle a path (such as `../x`) into a blob or rootfs path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`; anything else is `None`.
    pub fn parse(text: &str) -> Option<Digest> {
        text.strip_prefix(SHA256_PREFIX).and_then(Digest::from_hex)
    }

    /// Parses 64 lowercase hex digits.
    pub(crate) fn from_hex(hex: &str) -> Option<Digest> {
        let valid = hex.len() == SHA256_HEX_LEN
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| Digest {
            hex: hex.to_string(),
        })
    }

    /// Parses a digest found in an archive, with an error naming where it was found.
    pub(crate) fn parse_in_archive(text: &str, found_in: &str) -> Result<Digest, ImageError> {
        Digest::parse(text).ok_or_else(|| {
            ImageError::InvalidArchive(format!(
                "{found_in}: {text:?} is not a sha256 digest (only sha256 is supported)"
            ))
        })
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `bytes` (a manifest or index held in memory).
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest::finish(Sha256::new_with_prefix(bytes))
    }

    fn finish(hasher: Sha256) -> Digest {
        Digest {
            hex: format!("{:x}", hasher.finalize()),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHA256_PREFIX}{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a sha256 digest")))
    }
}

/// A reader that hashes and counts everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes_read: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes_read: 0,
        }
    }

    /// Reads the rest of the stream (so trailing padding is hashed too) and returns the digest
    /// of everything read.
    pub(crate) fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::finish(self.hasher), self.bytes_read))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes_read += n as u64;
        Ok(n)
    }
}

/// Checks a blob against its descriptor while it streams past (from a registry, in chunks):
/// more bytes than the descriptor's size fail at once, so a lying server cannot fill the disk;
/// the digest is compared at the end.
pub struct BlobVerifier {
    expected: Digest,
    expected_size_bytes: u64,
    hasher: Sha256,
    seen_bytes: u64,
}

impl BlobVerifier {
    pub fn new(expected: Digest, expected_size_bytes: u64) -> Self {
        BlobVerifier {
            expected,
            expected_size_bytes,
            hasher: Sha256::new(),
            seen_bytes: 0,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) -> Result<(), ImageError> {
        self.seen_bytes += chunk.len() as u64;
        if self.seen_bytes > self.expected_size_bytes {
            return Err(ImageError::TooLarge {
                what: format!(
                    "blob {} (its descriptor says {} bytes)",
                    self.expected, self.expected_size_bytes
                ),
                limit_bytes: self.expected_size_bytes,
            });
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// Bytes seen so far.
    pub fn seen_bytes(&self) -> u64 {
        self.seen_bytes
    }

    /// Succeeds only if exactly the descriptor's size arrived and it hashes to its digest.
    pub fn finish(self) -> Result<(), ImageError> {
        if self.seen_bytes != self.expected_size_bytes {
            return Err(ImageError::SizeMismatch {
                digest: self.expected.to_string(),
                expected_bytes: self.expected_size_bytes,
                actual_bytes: self.seen_bytes,
            });
        }
        let actual = Digest::finish(self.hasher);
        if actual != self.expected {
            return Err(ImageError::DigestMismatch {
                expected: self.expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }
}

/// Copies `reader` into `writer`, returning the digest and length of what was copied.
/// Read errors and write errors are kept apart: the first usually means a damaged archive,
/// the second a full or failing disk.
pub(crate) fn copy_hashing(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
) -> Result<(Digest, u64), CopyError> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; STREAM_BUFFER_BYTES];
    let mut total_bytes = 0u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        hasher.update(&buffer[..n]);
        writer.write_all(&buffer[..n]).map_err(CopyError::Write)?;
        total_bytes += n as u64;
    }
    Ok((Digest::finish(hasher), total_bytes))
}

pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Opens a file that may be gzip'd (one or more gzip members) and returns its decompressed
/// bytes. `label` names the blob in error messages.
pub(crate) fn open_decompressed(path: &Path, label: &str) -> Result<Box<dyn Read>, ImageError> {
    let file = File::open(path).map_err(|source| ImageError::Io {
        context: format!("opening {label} at {}", path.display()),
        source,
    })?;
    decompressed(BufReader::with_capacity(STREAM_BUFFER_BYTES, file), label)
}

fn decompressed(mut reader: BufReader<File>, label: &str) -> Result<Box<dyn Read>, ImageError> {
    let head = reader.fill_buf().map_err(|source| ImageError::Io {
        context: format!("reading {label}"),
        source,
    })?;
    if head.starts_with(GZIP_MAGIC) {
        let decoder = MultiGzDecoder::new(reader);
        Ok(Box::new(BufReader::with_capacity(
            STREAM_BUFFER_BYTES,
            decoder,
        )))
    } else if head.starts_with(ZSTD_MAGIC) {
        Err(ImageError::InvalidArchive(format!(
            "{label} is zstd-compressed, which is not supported (only plain and gzip'd tar)"
        )))
    } else {
        Ok(Box::new(reader))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_parse_accepts_only_lowercase_sha256() {
        let hex = "a".repeat(64);
        assert_eq!(
            Digest::parse(&format!("sha256:{hex}")).unwrap().to_string(),
            format!("sha256:{hex}")
        );
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_none());
        assert!(Digest::parse(&format!("sha512:{hex}")).is_none());
        assert!(Digest::parse(&format!("sha256:{}", "a".repeat(63))).is_none());
        assert!(Digest::parse("sha256:../../etc/passwd").is_none());
    }

    #[test]
    fn blob_verifier_refuses_wrong_bytes_and_sizes() {
        let good = Digest::of_bytes(b"layer");
        let mut verifier = BlobVerifier::new(good.clone(), 5);
        verifier.update(b"lay").unwrap();
        verifier.update(b"er").unwrap();
        verifier.finish().unwrap();

        let mut verifier = BlobVerifier::new(good.clone(), 5);
        verifier.update(b"LAYER").unwrap();
        let error = verifier.finish().unwrap_err().to_string();
        assert!(error.contains(&good.to_string()), "{error}");

        let mut verifier = BlobVerifier::new(good.clone(), 5);
        assert!(verifier.update(b"layer!").is_err(), "more than announced");
        let mut verifier = BlobVerifier::new(good, 5);
        verifier.update(b"lay").unwrap();
        assert!(verifier.finish().is_err(), "less than announced");
    }

    #[test]
    fn hashing_reader_hashes_what_is_read_and_the_rest() {
        let mut reader = HashingReader::new(&b"abc"[..]);
        let mut first = [0u8; 1];
        reader.read_exact(&mut first).unwrap();
        let (digest, bytes_read) = reader.finish().unwrap();
        assert_eq!(bytes_read, 3);
        assert_eq!(
            digest.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (empty, _) = HashingReader::new(&b""[..]).finish().unwrap();
        assert_eq!(
            empty.hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

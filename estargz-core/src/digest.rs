//! SHA-256 digests in the `sha256:<hex>` form used by OCI and the TOC.

use sha2::{Digest as _, Sha256};

/// The digest of empty content.
pub const EMPTY_DIGEST: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format_digest(Sha256::digest(data).into())
}

/// Formats a raw SHA-256 value as `sha256:<hex>`.
pub fn format_digest(hash: [u8; 32]) -> String {
    format!("sha256:{}", hex::encode(hash))
}

/// True for exactly `sha256:` followed by 64 lowercase hex digits.
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    })
}

/// A SHA-256 digest held as its 32 bytes; shown and parsed as
/// `sha256:<64 lowercase hex>`. Compared and hashed as bytes, so keying a
/// map by it costs no string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }
    /// A digest from its raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl std::str::FromStr for Digest {
    type Err = crate::Error;
    /// Accepts exactly `sha256:` and 64 lowercase hex digits.
    fn from_str(s: &str) -> crate::Result<Digest> {
        let invalid =
            || crate::Error::InvalidArgument(format!("{s:?} is not sha256:<64 lowercase hex>"));
        if !is_sha256_digest(s) {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&s[7..], &mut bytes).map_err(|_| invalid())?;
        Ok(Digest(bytes))
    }
}

// In JSON (annotations, `--json` output) a digest is its `sha256:<hex>` string.
impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher that also counts bytes.
#[derive(Default, Clone)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    /// A hasher with nothing hashed yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Hashes `data` after what was hashed before.
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.len += data.len() as u64;
    }
    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// True when nothing was hashed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The digest, as `sha256:<64 lowercase hex>`.
    pub fn finish(self) -> String {
        self.finish_digest().to_string()
    }
    /// The digest as a [`Digest`].
    pub fn finish_digest(self) -> Digest {
        Digest(self.inner.finalize().into())
    }
}

/// What a gzip layer file's descriptor and config need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GzipDigests {
    /// Digest of the compressed file (the layer digest).
    pub digest: Digest,
    /// Digest of the decompressed content.
    pub diff_id: Digest,
    /// Length of the decompressed content.
    pub uncompressed_size: u64,
}

/// Hashes a gzip file and its decompressed content in one pass.
pub fn gzip_file_digests(path: &std::path::Path) -> crate::Result<GzipDigests> {
    use crate::Error;
    use std::io::{self, Read};
    struct Tee<R> {
        inner: R,
        hasher: Hasher,
    }
    impl<R: Read> Read for Tee<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.hasher.update(&buf[..n]);
            Ok(n)
        }
    }
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut tee = Tee {
        inner: io::BufReader::with_capacity(1 << 20, file),
        hasher: Hasher::new(),
    };
    let mut gz = flate2::read::MultiGzDecoder::new(&mut tee);
    let mut diff = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = gz
            .read(&mut buf)
            .map_err(|e| Error::Corrupt(format!("decompressing {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        diff.update(&buf[..n]);
    }
    drop(gz);
    // Bytes after the last gzip member (e.g. an eStargz footer is a member
    // itself, so nothing should remain) still belong to the blob digest.
    io::copy(&mut tee, &mut io::sink())
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let uncompressed_size = diff.len();
    Ok(GzipDigests {
        digest: tee.hasher.finish_digest(),
        diff_id: diff.finish_digest(),
        uncompressed_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_and_print_as_sha256_hex() {
        let d = Digest::of(b"");
        assert_eq!(d.to_string(), EMPTY_DIGEST);
        assert_eq!(EMPTY_DIGEST.parse::<Digest>().unwrap(), d);
        for bad in [
            "",
            "sha256:",
            "sha512:00",
            &EMPTY_DIGEST.to_uppercase(),
            &EMPTY_DIGEST[..70],
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} parsed");
        }
    }
}

//! The two path components the store understands: `base64(image ref)` and
//! `sha256:<hex>` digests. Garbage is refused (EINVAL), never guessed at.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use estargz_core::digest::is_sha256_digest;
use estargz_core::remote::Reference;
use estargz_core::{Error, Result};

/// Decodes a reference directory name: standard alphabet with padding, as
/// containers/image writes it, holding a fully qualified reference.
pub fn parse_ref_dir(name: &str) -> Result<Reference> {
    let bad = |why: String| Error::InvalidArgument(format!("store path {name:?}: {why}"));
    let bytes = STANDARD
        .decode(name)
        .map_err(|e| bad(format!("not base64 of an image reference ({e})")))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("reference is not UTF-8".into()))?;
    Reference::parse(&text).map_err(|e| bad(e.to_string()))
}

/// The directory name for a reference (what containers/image computes).
pub fn ref_dir_name(reference: &str) -> String {
    STANDARD.encode(reference)
}

/// Checks a layer directory name: a layer digest or a TOC digest.
pub fn parse_digest(name: &str) -> Result<&str> {
    if is_sha256_digest(name) {
        Ok(name)
    } else {
        Err(Error::InvalidArgument(format!(
            "store path {name:?}: expected a sha256:<64 hex> digest"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_names_round_trip() {
        let name = ref_dir_name("127.0.0.1:5000/app/img:v1");
        let r = parse_ref_dir(&name).unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/app/img:v1");
        let pinned = format!("ghcr.io/o/r@sha256:{}", "a".repeat(64));
        assert_eq!(
            parse_ref_dir(&ref_dir_name(&pinned))
                .unwrap()
                .digest
                .as_deref(),
            Some(&pinned[pinned.len() - 71..])
        );
    }

    #[test]
    fn garbage_names_are_invalid_arguments() {
        let not_utf8 = STANDARD.encode([0xff, 0xfe]);
        let bad_ref = ref_dir_name("UPPER/case");
        // Missing padding and URL-safe alphabet are refused, not repaired.
        let unpadded = ref_dir_name("a/bc").trim_end_matches('=').to_string();
        for name in [
            "%%%",
            "",
            not_utf8.as_str(),
            bad_ref.as_str(),
            unpadded.as_str(),
            "_-__",
        ] {
            let e = parse_ref_dir(name).unwrap_err();
            assert_eq!(e.errno(), libc::EINVAL, "{name:?}: {e}");
        }
        assert!(parse_digest(&format!("sha256:{}", "0".repeat(64))).is_ok());
        for d in [
            "sha256:abc",
            "md5:00",
            "",
            &format!("sha256:{}", "A".repeat(64)),
        ] {
            assert_eq!(parse_digest(d).unwrap_err().errno(), libc::EINVAL, "{d:?}");
        }
    }
}

//! Which layer of an image to read: the one syntax the CLI, the FUSE
//! binary, the C ABI and Go accept (`N` for an index, `sha256:...` for a
//! digest, nothing for the image's only layer).

use std::fmt;
use std::str::FromStr;

use super::manifest::Descriptor;
use crate::error::{Error, Result};

/// A choice of one layer in a manifest's layer list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LayerSelector {
    /// The image's only layer; an image with several layers is an error.
    #[default]
    Only,
    /// The layer at this index in the manifest (0 = bottom).
    Index(usize),
    /// The layer with this digest (`algorithm:encoded`, e.g. `sha256:...`).
    Digest(String),
}

impl LayerSelector {
    /// The index in `layers` this selects; `image` names the image in errors.
    /// A digest no layer has and an index past the end are `NotFound`; no
    /// selector on an image with other than one layer is `InvalidArgument`.
    pub fn resolve(&self, layers: &[Descriptor], image: &str) -> Result<usize> {
        match self {
            LayerSelector::Only if layers.len() == 1 => Ok(0),
            LayerSelector::Only => Err(Error::InvalidArgument(format!(
                "{image} has {} layers: choose one by index (0 = bottom) or digest",
                layers.len()
            ))),
            LayerSelector::Index(i) if *i < layers.len() => Ok(*i),
            LayerSelector::Index(i) => Err(Error::NotFound(format!(
                "layer {i} of {image} (it has {} layers)",
                layers.len()
            ))),
            LayerSelector::Digest(d) => layers
                .iter()
                .position(|l| l.digest == *d)
                .ok_or_else(|| Error::NotFound(format!("layer {d} in {image}"))),
        }
    }
}

/// OCI digest grammar: `algorithm ":" encoded`, where the algorithm is
/// `[a-z0-9]+` components joined by one of `+._-` and the encoded part is
/// `[a-zA-Z0-9=_-]+`. Lengths per algorithm are not checked: a well-formed
/// digest that no layer has is "not found", not a syntax error.
fn is_digest_syntax(s: &str) -> bool {
    let Some((algorithm, encoded)) = s.split_once(':') else {
        return false;
    };
    let component = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    algorithm.split(['+', '.', '_', '-']).all(component)
        && !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
}

impl FromStr for LayerSelector {
    type Err = Error;

    /// A decimal index or a digest. The only layer has no written form:
    /// callers map "no selector" to [`LayerSelector::Only`].
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "layer {s:?}: {why}; expected a layer index (0 = bottom) or a digest (sha256:...)"
            ))
        };
        if s.contains(':') {
            return if is_digest_syntax(s) {
                Ok(LayerSelector::Digest(s.to_string()))
            } else {
                Err(bad("malformed digest"))
            };
        }
        // Digits only: `usize::from_str` would also take a leading '+'.
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("not a number"));
        }
        s.parse()
            .map(LayerSelector::Index)
            .map_err(|_| bad("index too large"))
    }
}

impl fmt::Display for LayerSelector {
    /// Index and digest in the syntax [`FromStr`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerSelector::Only => f.write_str("the only layer"),
            LayerSelector::Index(i) => write!(f, "{i}"),
            LayerSelector::Digest(d) => f.write_str(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(n: usize) -> Vec<Descriptor> {
        (0..n)
            .map(|i| Descriptor {
                media_type: super::super::manifest::OCI_LAYER_GZIP.into(),
                digest: format!("sha256:{i:064x}"),
                size: 1,
                annotations: Default::default(),
                platform: None,
            })
            .collect()
    }

    #[test]
    fn parses_indexes_and_digests() {
        let d = format!("sha256:{}", "ab".repeat(32));
        for (text, want) in [
            ("0", LayerSelector::Index(0)),
            ("2", LayerSelector::Index(2)),
            ("007", LayerSelector::Index(7)),
            (d.as_str(), LayerSelector::Digest(d.clone())),
            ("sha256:00", LayerSelector::Digest("sha256:00".into())),
            (
                "sha512:AbC=_-",
                LayerSelector::Digest("sha512:AbC=_-".into()),
            ),
            (
                "multihash+base58:x1",
                LayerSelector::Digest("multihash+base58:x1".into()),
            ),
        ] {
            assert_eq!(text.parse::<LayerSelector>().unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn display_reads_back() {
        for s in [
            LayerSelector::Index(3),
            LayerSelector::Digest(format!("sha256:{:064x}", 9)),
        ] {
            assert_eq!(s.to_string().parse::<LayerSelector>().unwrap(), s);
        }
        assert_eq!(LayerSelector::Only.to_string(), "the only layer");
    }

    #[test]
    fn rejects_bad_selectors() {
        let huge = "9".repeat(40);
        for bad in [
            "",
            " 1",
            "1 ",
            "+1",
            "-1",
            "1.5",
            "0x1",
            "one",
            huge.as_str(),
            ":abc",
            "sha256:",
            "SHA256:ab",
            "sha256::ab",
            "sha256:a/b",
            "sha256:a b",
            "sha256-:ab",
            "-sha256:ab",
        ] {
            let e = bad.parse::<LayerSelector>().unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad:?}: {e}");
            assert!(
                e.to_string().contains("expected a layer index"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn resolves_against_layers() {
        let one = layers(1);
        let three = layers(3);
        assert_eq!(LayerSelector::Only.resolve(&one, "img").unwrap(), 0);
        for n in [0, 3] {
            let e = LayerSelector::Only.resolve(&layers(n), "img").unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
            assert!(
                e.to_string().contains(&format!("img has {n} layers")),
                "{e}"
            );
        }
        assert_eq!(LayerSelector::Index(2).resolve(&three, "img").unwrap(), 2);
        let e = LayerSelector::Index(3).resolve(&three, "img").unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
        let d = format!("sha256:{:064x}", 1);
        assert_eq!(LayerSelector::Digest(d).resolve(&three, "img").unwrap(), 1);
        let e = LayerSelector::Digest("sha256:ff".into())
            .resolve(&three, "img")
            .unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
    }
}

//! The overlayfs conventions a mounted layer follows so it can be a lower
//! directory: OCI `.wh.<name>` entries become whiteouts (character device
//! 0:0 named `<name>`), `.wh..wh..opq` becomes the opaque xattr of its
//! directory, and the prefetch landmarks at the root are not shown.

use estargz_core::reader::{Entry, NodeId};

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Both the privileged and the `userxattr` (rootless) overlay spellings.
pub const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];
const LANDMARKS: [&str; 2] = [".prefetch.landmark", ".no.prefetch.landmark"];

/// How a TOC name shows up in a listing.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    AsIs,
    Hidden,
    /// A whiteout for this name.
    Whiteout(&'a str),
}

/// Whether a TOC name is a whiteout entry (not the opaque marker).
pub fn is_whiteout(name: &str) -> bool {
    name.starts_with(WHITEOUT_PREFIX) && name != OPAQUE_MARKER
}

/// A directory's entries by name: a layer's directory, or a map in tests.
pub trait Children {
    type Id: Copy;
    fn child(&self, name: &str) -> Option<Self::Id>;
}

impl Children for Entry<'_> {
    type Id = NodeId;
    fn child(&self, name: &str) -> Option<NodeId> {
        Entry::child(self, name)
    }
}

pub fn is_opaque(children: &impl Children) -> bool {
    children.child(OPAQUE_MARKER).is_some()
}

pub fn present<'a>(at_root: bool, children: &impl Children, name: &'a str) -> Presented<'a> {
    if name == OPAQUE_MARKER || (at_root && LANDMARKS.contains(&name)) {
        return Presented::Hidden;
    }
    match name.strip_prefix(WHITEOUT_PREFIX) {
        None => Presented::AsIs,
        // A real entry of the same name wins; names that would themselves
        // look like whiteouts cannot be looked up, so they are not shown.
        Some(target)
            if target.is_empty()
                || target == "."
                || target == ".."
                || target.starts_with(WHITEOUT_PREFIX)
                || (at_root && LANDMARKS.contains(&target))
                || children.child(target).is_some() =>
        {
            Presented::Hidden
        }
        Some(target) => Presented::Whiteout(target),
    }
}

/// The node a lookup of `name` finds: the entry itself, or the whiteout
/// for it; `.wh.*` names and hidden landmarks are not found.
pub fn present_lookup<C: Children>(at_root: bool, children: &C, name: &str) -> Option<C::Id> {
    if name.starts_with(WHITEOUT_PREFIX) || (at_root && LANDMARKS.contains(&name)) {
        return None;
    }
    children
        .child(name)
        .or_else(|| children.child(&format!("{WHITEOUT_PREFIX}{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    impl Children for BTreeMap<String, usize> {
        type Id = usize;
        fn child(&self, name: &str) -> Option<usize> {
            self.get(name).copied()
        }
    }

    fn dir(names: &[&str]) -> BTreeMap<String, usize> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), i + 1))
            .collect()
    }

    #[test]
    fn names_are_presented_as_overlayfs_expects() {
        let d = dir(&[".wh..wh..opq", ".wh.gone", ".wh.kept", "kept", ".wh.", "a"]);
        assert_eq!(present(false, &d, ".wh..wh..opq"), Presented::Hidden);
        assert_eq!(present(false, &d, ".wh.gone"), Presented::Whiteout("gone"));
        assert_eq!(present(false, &d, ".wh.kept"), Presented::Hidden);
        assert_eq!(present(false, &d, ".wh."), Presented::Hidden);
        assert_eq!(present(false, &d, ".wh..wh.x"), Presented::Hidden);
        assert_eq!(present(false, &d, "a"), Presented::AsIs);
        assert_eq!(present(true, &d, ".prefetch.landmark"), Presented::Hidden);
        assert_eq!(present(false, &d, ".prefetch.landmark"), Presented::AsIs);
        // Whiteouts that would show as dot entries or hidden landmarks.
        assert_eq!(present(false, &d, ".wh.."), Presented::Hidden);
        assert_eq!(present(false, &d, ".wh..."), Presented::Hidden);
        assert_eq!(
            present(true, &d, ".wh..prefetch.landmark"),
            Presented::Hidden
        );
        assert!(is_opaque(&d));
        assert!(!is_opaque(&dir(&["a"])));
    }

    #[test]
    fn lookups_find_entries_and_whiteouts_but_not_markers() {
        let d = dir(&[".wh.gone", "a", ".no.prefetch.landmark"]);
        assert_eq!(present_lookup(false, &d, "a"), Some(2));
        assert_eq!(present_lookup(false, &d, "gone"), Some(1));
        assert_eq!(present_lookup(false, &d, ".wh.gone"), None);
        assert_eq!(present_lookup(false, &d, "missing"), None);
        assert_eq!(present_lookup(true, &d, ".no.prefetch.landmark"), None);
        assert_eq!(present_lookup(false, &d, ".no.prefetch.landmark"), Some(3));
    }
}

//! Chained setters for the option structs.
//!
//! Option structs are `#[non_exhaustive]` so fields can be added without a
//! breaking release; callers outside this crate therefore start from
//! `Default` and set what they need:
//! `OpenOptions::default().max_entries(10).expected_toc_digest(d)`.

/// Generates, for each listed field, `pub fn field(self, value) -> Self`.
/// The value has the field's own type: `impl Into<u64>` would make integer
/// literals ambiguous. Exported (hidden) for the option structs of the
/// other workspace crates, so every option struct is built the same way.
#[doc(hidden)]
#[macro_export]
macro_rules! option_setters {
    ($ty:ident { $($field:ident: $fty:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Sets [`", stringify!($ty), "::", stringify!($field), "`].")]
                #[must_use]
                pub fn $field(mut self, value: $fty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

pub(crate) use option_setters;

#[cfg(test)]
mod tests {
    use crate::{BuildOptions, Digest, OpenOptions};

    #[test]
    fn setters_chain_and_leave_other_fields_at_their_defaults() {
        let o = OpenOptions::default()
            .max_entries(10)
            .expected_toc_digest(Some(Digest::of(b"x")));
        let d = OpenOptions::default();
        assert_eq!(o.max_entries, 10);
        assert_eq!(o.expected_toc_digest, Some(Digest::of(b"x")));
        assert_eq!(o.max_toc_size, d.max_toc_size);
        assert_eq!(o.max_path_depth, d.max_path_depth);

        let b = BuildOptions::default()
            .compression_level(Some(1))
            .allow_missing_prioritized(true)
            .external_toc(true);
        assert_eq!(b.compression_level, Some(1));
        assert!(b.allow_missing_prioritized && b.external_toc);
        assert_eq!(b.chunk_size, BuildOptions::default().chunk_size);
    }
}

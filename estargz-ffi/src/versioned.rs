//! Structs the caller allocates and the library fills (estargz_entry,
//! estargz_entry_details, estargz_blob_info, estargz_extract_stats) start
//! with `size_t struct_size`, set by the caller to `sizeof` the struct it
//! was compiled with. Fields are only ever appended, so a struct's versions
//! are its prefixes: the library accepts the size of any version it knows and fills
//! exactly that prefix, and refuses any other size with
//! ESTARGZ_INVALID_ARGUMENT before doing any work. A program built against an
//! older header keeps working with a newer library; a program built against
//! a newer header gets a clear error from an older library, never a write
//! past its struct.

use std::mem::size_of;

use crate::args::Out;
use crate::error::{Failure, FfiResult};

/// A `#[repr(C)]` struct whose first field is `struct_size: usize`.
///
/// # Safety
/// The implementor is `#[repr(C)]`, its first field is `struct_size: usize`
/// (offset 0), and every size in `SIZES` ends a field of it (a prefix made
/// of whole fields), the last being `size_of::<Self>()`.
pub(crate) unsafe trait Versioned: Copy {
    /// The C name, for messages.
    const NAME: &'static str;
    /// The sizes of the struct's released versions, oldest first.
    const SIZES: &'static [usize];
    fn set_struct_size(&mut self, size: usize);
}

/// An out pointer to a caller's versioned struct whose `struct_size` has
/// been checked.
pub(crate) struct VersionedOut<T: Versioned> {
    out: Out<T>,
    size: usize,
}

impl<T: Versioned> VersionedOut<T> {
    /// Checks the caller's `struct_size` (`arg` names the argument).
    pub fn new(out: Out<T>, arg: &str) -> FfiResult<Self> {
        // SAFETY: `out` is writable for a `T` as the caller declared it, so
        // at least its first field, `struct_size` (offset 0, see the trait),
        // is readable; the caller sets it before the call.
        let size = unsafe { out.as_ptr().cast::<usize>().read() };
        if !T::SIZES.contains(&size) {
            return Err(Failure::invalid(format!(
                "`{arg}->struct_size` is {size}, not a size of {} this library knows \
                 (it fills {} bytes; set struct_size = sizeof({}))",
                T::NAME,
                size_of::<T>(),
                T::NAME
            )));
        }
        Ok(VersionedOut { out, size })
    }

    /// Writes the caller's version of `value`: its first `struct_size`
    /// bytes, with `struct_size` left as the caller set it.
    pub fn write(self, mut value: T) {
        value.set_struct_size(self.size);
        // SAFETY: the caller's struct holds `self.size` bytes (its declared
        // version); `self.size <= size_of::<T>()` (SIZES), so the source
        // holds them too; distinct objects. The copy is untyped, so padding
        // bytes inside the prefix are copied as they are.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&value as *const T).cast::<u8>(),
                self.out.as_ptr().cast::<u8>(),
                self.size,
            )
        }
    }
}

/// A required out pointer argument to a versioned struct:
/// `VersionedOut<T>`.
macro_rules! try_versioned_out {
    ($arg:ident) => {
        $crate::versioned::VersionedOut::new($crate::args::try_out!($arg), stringify!($arg))?
    };
}
pub(crate) use try_versioned_out;

/// An optional out pointer argument to a versioned struct:
/// `Option<VersionedOut<T>>`.
macro_rules! opt_versioned_out {
    ($arg:ident) => {
        match $crate::args::opt_out!($arg) {
            Some(out) => Some($crate::versioned::VersionedOut::new(out, stringify!($arg))?),
            None => None,
        }
    };
}
pub(crate) use opt_versioned_out;

/// Implements [`Versioned`] for a struct, checking at compile time that
/// `struct_size` comes first. `versioned_struct!(T)` has one version, the
/// whole struct; `versioned_struct!(T, grown_at: f, g)` also accepts the
/// older versions that ended where field `f` (then `g`) starts.
macro_rules! versioned_struct {
    ($ty:ident $(, grown_at: $($field:ident),+)?) => {
        // SAFETY: used only on #[repr(C)] structs of the header, with
        // struct_size at offset 0 (asserted below); every size ends a
        // field: the start of a later field, or the whole struct.
        unsafe impl $crate::versioned::Versioned for $ty {
            const NAME: &'static str = stringify!($ty);
            const SIZES: &'static [usize] = &[
                $($(std::mem::offset_of!($ty, $field),)+)?
                std::mem::size_of::<$ty>(),
            ];
            fn set_struct_size(&mut self, size: usize) {
                self.struct_size = size;
            }
        }
        const _: () = assert!(std::mem::offset_of!($ty, struct_size) == 0);
    };
}
pub(crate) use versioned_struct;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// Version 2 of a struct whose version 1 ended after `a`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Grown {
        struct_size: usize,
        a: u64,
        b: u64,
    }

    // SAFETY: repr(C), struct_size first, both sizes end a field.
    unsafe impl Versioned for Grown {
        const NAME: &'static str = "Grown";
        const SIZES: &'static [usize] = &[offset_of!(Grown, b), size_of::<Grown>()];
        fn set_struct_size(&mut self, size: usize) {
            self.struct_size = size;
        }
    }

    fn fill(target: &mut Grown) -> FfiResult {
        let p: *mut Grown = target;
        // SAFETY: `p` is a valid, writable Grown.
        let out = unsafe { Out::new(p, "out") }?;
        VersionedOut::new(out, "out")?.write(Grown {
            struct_size: 0,
            a: 1,
            b: 2,
        });
        Ok(())
    }

    #[test]
    fn fills_the_callers_version_only() {
        let v1 = offset_of!(Grown, b);
        let mut old = Grown {
            struct_size: v1,
            a: 0,
            b: 99,
        };
        fill(&mut old).unwrap();
        assert_eq!((old.struct_size, old.a, old.b), (v1, 1, 99));

        let mut new = Grown {
            struct_size: size_of::<Grown>(),
            a: 0,
            b: 0,
        };
        fill(&mut new).unwrap();
        assert_eq!((new.struct_size, new.a, new.b), (size_of::<Grown>(), 1, 2));
    }

    #[test]
    fn refuses_unknown_sizes_untouched() {
        for size in [0, 1, 12, size_of::<Grown>() + 8, usize::MAX] {
            let mut g = Grown {
                struct_size: size,
                a: 7,
                b: 7,
            };
            let e = fill(&mut g).unwrap_err();
            assert!(e.message.contains("`out->struct_size`"), "{}", e.message);
            assert_eq!((g.struct_size, g.a, g.b), (size, 7, 7));
        }
    }
}

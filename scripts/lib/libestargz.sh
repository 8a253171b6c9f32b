# shellcheck shell=bash
# Shared by scripts/ffi-test.sh and scripts/go-test.sh: build libestargz with
# cargo-c and install it into a staging tree, then point pkg-config and the
# dynamic linker at that tree, so the C tests and the Go bindings link the
# library of this checkout, never a system-wide install.
#
#   source scripts/lib/libestargz.sh
#   install_libestargz   # sets LIBESTARGZ_DEST, LIBESTARGZ_LIB,
#                        # LIBESTARGZ_HEADER and exports PKG_CONFIG_PATH,
#                        # PKG_CONFIG_SYSROOT_DIR, LD_LIBRARY_PATH
#
# The staging tree is always $CARGO_TARGET_DIR/libestargz-stage: cargo-c
# rebuilds the library whenever the destdir changes, so the C and Go tests
# share one. It is emptied first, so nothing stale is ever linked.
#
# Needs cargo-c 0.10.24 (cargo cinstall); run from the workspace root, with
# CARGO_TARGET_DIR exported.

# The prefix the .pc file names; the files land under DESTDIR/PREFIX, and
# PKG_CONFIG_SYSROOT_DIR maps the .pc paths into DESTDIR.
LIBESTARGZ_PREFIX=/usr/local

require_cargo_c() {
  if ! cargo cinstall --version 2>/dev/null | grep -q '^cargo-c 0\.10\.24+'; then
    echo "needs cargo-c 0.10.24 (found: $(cargo cinstall --version 2>&1 | head -1))" >&2
    echo "install it with: cargo install cargo-c --version 0.10.24 --locked" >&2
    return 1
  fi
}

install_libestargz() {
  local dest=$CARGO_TARGET_DIR/libestargz-stage
  require_cargo_c
  rm -rf "$dest"
  # cdylib with soname, staticlib, header, estargz.pc.
  cargo cinstall --release -p estargz-ffi --destdir "$dest" \
    --prefix "$LIBESTARGZ_PREFIX" --libdir lib
  LIBESTARGZ_DEST=$dest
  LIBESTARGZ_LIB=$dest$LIBESTARGZ_PREFIX/lib
  LIBESTARGZ_HEADER=$dest$LIBESTARGZ_PREFIX/include/estargz.h
  export PKG_CONFIG_PATH=$LIBESTARGZ_LIB/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$dest
  export LD_LIBRARY_PATH=$LIBESTARGZ_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
}

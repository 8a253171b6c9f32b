#!/usr/bin/env python3
"""overlay-to-oci.py UPPER LOWER: turns an overlayfs upper dir into an OCI
layer tree in place: whiteouts (0/0 character devices) become empty
`.wh.NAME` files, opaque directories (xattr trusted.overlay.opaque=y) that
hide a directory of LOWER get a `.wh..wh..opq` entry. (Overlayfs marks every
directory it creates under a merged one opaque; where LOWER has no such
directory there is nothing to hide, and a diff-based build would not mark it.)"""
import os
import stat
import sys

upper, lower = sys.argv[1], sys.argv[2]
whiteouts = opaque = 0
for dirpath, dirnames, filenames in os.walk(upper):
    try:
        hides = os.path.isdir(os.path.join(lower, os.path.relpath(dirpath, upper)))
        if dirpath != upper and hides and os.getxattr(dirpath, "trusted.overlay.opaque") == b"y":
            open(os.path.join(dirpath, ".wh..wh..opq"), "wb").close()
            opaque += 1
    except OSError:
        pass
    for name in filenames + dirnames:
        path = os.path.join(dirpath, name)
        st = os.lstat(path)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            os.unlink(path)
            open(os.path.join(dirpath, ".wh." + name), "wb").close()
            whiteouts += 1
print(f"overlay upper -> OCI: {whiteouts} whiteouts, {opaque} opaque dirs", file=sys.stderr)

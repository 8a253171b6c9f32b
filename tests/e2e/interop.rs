//! Interop with the Go reference, both directions. Filled in below.

//! Caller-supplied I/O: callback typedefs and their adapters to the core's
//! `Read` / `Write` / `ReadAt`, plus borrowed file descriptors.
//!
//! Callbacks return 0 on success or an errno value (e.g. EIO) on failure;
//! a failure becomes ESTARGZ_IO carrying that errno's message.

use std::ffi::{c_int, c_void};
use std::io;

use estargz_core::ReadAt;

/// Sequential read callback (builder input). Read up to `len` bytes into
/// `buf`, store the count in `*out_n` (0 means end of input) and return 0; or
/// return an errno value (e.g. EIO) to fail the build with ESTARGZ_IO.
/// `*out_n` must not exceed `len`.
///
/// Calls are sequential, never concurrent (today they run on the thread that
/// called estargz_builder_run). `buf` is valid only during the call.
pub type estargz_read_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        buf: *mut u8,
        len: usize,
        out_n: *mut usize,
    ) -> c_int,
>;

/// Write callback (builder output). Consume between 1 and `len` bytes of
/// `buf`, store the count in `*out_n` and return 0; or return an errno value
/// to fail the build with ESTARGZ_IO. Storing 0 also fails the build.
///
/// Calls are never concurrent and happen on the thread that called
/// estargz_builder_run. `buf` is valid only during the call.
pub type estargz_write_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        buf: *const u8,
        len: usize,
        out_n: *mut usize,
    ) -> c_int,
>;

/// Positional read callback (reader source). Read up to `len` bytes at blob
/// offset `offset` into `buf`, store the count in `*out_n` and return 0; or
/// return an errno value to fail the operation with ESTARGZ_IO. Store 0 only
/// at or past the end of the blob; short reads elsewhere are retried.
/// `*out_n` must not exceed `len`.
///
/// The callback MUST be thread-safe: the library calls it from several
/// threads at once (concurrent reads from the caller's threads, and its own
/// worker threads during estargz_reader_verify and estargz_reader_extract).
/// `buf` is valid only during the call.
pub type estargz_read_at_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        buf: *mut u8,
        len: usize,
        offset: u64,
        out_n: *mut usize,
    ) -> c_int,
>;

/// Releases a callback's userdata; called exactly once, from any thread,
/// when the library no longer needs it.
pub type estargz_release_callback = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

fn callback_error(code: c_int) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn overlong(n: usize, len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("callback reported {n} bytes for a {len}-byte buffer"),
    )
}

/// Builder input from an `estargz_read_callback`.
pub(crate) struct CallbackReader {
    pub cb: unsafe extern "C" fn(*mut c_void, *mut u8, usize, *mut usize) -> c_int,
    pub userdata: *mut c_void,
}

// SAFETY: the core requires Send of its input (it may read it from another
// thread) but never reads it concurrently; the header promises only
// sequential calls, not a particular thread, and userdata stays valid until
// estargz_builder_run returns (its contract).
unsafe impl Send for CallbackReader {}

impl io::Read for CallbackReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0usize;
        // SAFETY: buf is a valid writable slice for the call; userdata is the
        // caller's, valid per the estargz_builder_set_input_callback contract.
        let rc = unsafe { (self.cb)(self.userdata, buf.as_mut_ptr(), buf.len(), &mut n) };
        if rc != 0 {
            return Err(callback_error(rc));
        }
        if n > buf.len() {
            return Err(overlong(n, buf.len()));
        }
        Ok(n)
    }
}

/// Builder output to an `estargz_write_callback`.
pub(crate) struct CallbackWriter {
    pub cb: unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut usize) -> c_int,
    pub userdata: *mut c_void,
}

impl io::Write for CallbackWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut n = 0usize;
        // SAFETY: buf is valid for reads during the call; userdata per the
        // estargz_builder_set_output_callback contract.
        let rc = unsafe { (self.cb)(self.userdata, buf.as_ptr(), buf.len(), &mut n) };
        if rc != 0 {
            return Err(callback_error(rc));
        }
        if n > buf.len() {
            return Err(overlong(n, buf.len()));
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reader source from an `estargz_read_at_callback`; owns the userdata.
pub(crate) struct CallbackSource {
    pub cb: estargz_read_at_callback,
    pub release: estargz_release_callback,
    pub userdata: *mut c_void,
    pub size: u64,
}

// SAFETY: estargz_reader_open_callback's contract requires the callback to be
// thread-safe and its userdata usable (and releasable) from any thread.
unsafe impl Send for CallbackSource {}
// SAFETY: as above; the struct itself is never mutated after construction.
unsafe impl Sync for CallbackSource {}

impl ReadAt for CallbackSource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Some(cb) = self.cb else {
            return Err(io::Error::other("no read_at callback"));
        };
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        // Never ask for bytes past the declared size.
        let max = (self.size - offset).min(buf.len() as u64) as usize;
        let mut n = 0usize;
        // SAFETY: buf[..max] is valid for writes during the call; userdata per
        // the estargz_reader_open_callback contract.
        let rc = unsafe { cb(self.userdata, buf.as_mut_ptr(), max, offset, &mut n) };
        if rc != 0 {
            return Err(callback_error(rc));
        }
        if n > max {
            return Err(overlong(n, max));
        }
        if n == 0 {
            // The caller declared `size` bytes; an early end is not EOF.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read callback returned no data at offset {offset} of a {}-byte blob",
                    self.size
                ),
            ));
        }
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for CallbackSource {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            // SAFETY: called once (drop runs once) with the userdata the caller
            // handed over, per the estargz_reader_open_callback contract.
            unsafe { release(self.userdata) };
        }
    }
}

/// A file descriptor the caller keeps owning, read sequentially.
pub(crate) struct FdReader(pub c_int);

impl io::Read for FdReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for buf.len() writable bytes; a bad fd makes
        // read(2) fail with EBADF, not undefined behaviour.
        let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// A file descriptor the caller keeps owning, written sequentially.
pub(crate) struct FdWriter(pub c_int);

impl io::Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for buf.len() readable bytes; a bad fd makes
        // write(2) fail with EBADF.
        let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

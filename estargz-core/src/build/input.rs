//! Turns whatever the user gives the builder (tar, gzip-compressed tar, a
//! directory, a pipe) into a plain tar in a seekable source. Like the
//! reference, compressed or streamed input is spooled to a temporary file.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::source::FileSource;

/// What to build from.
pub enum BuildInput<'a> {
    /// A tar file, a gzip-compressed tar file, or a directory.
    Path(PathBuf),
    /// A stream of tar or gzip-compressed tar bytes (e.g. stdin).
    Reader(Box<dyn Read + Send + 'a>),
}

/// A plain tar ready for positional reads; keeps its temp file alive.
pub struct PreparedInput {
    pub source: FileSource,
    _temp: Option<tempfile::NamedTempFile>,
}

const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

fn temp_file(dir: Option<&Path>) -> Result<tempfile::NamedTempFile> {
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix(".estargz-input-")
        .tempfile_in(&dir)
        .map_err(|e| Error::io(format!("creating a temporary file in {}", dir.display()), e))
}

fn spooled(temp: tempfile::NamedTempFile) -> Result<PreparedInput> {
    let source = FileSource::new(
        temp.reopen()
            .map_err(|e| Error::io("reopening the temporary input", e))?,
    )
    .map_err(|e| Error::io("reading the temporary input", e))?;
    Ok(PreparedInput {
        source,
        _temp: Some(temp),
    })
}

/// Copies a stream (decompressing gzip) into a temp file.
fn spool(mut reader: impl Read, temp_dir: Option<&Path>) -> Result<PreparedInput> {
    let mut head = [0u8; 4];
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading the input", e)),
        }
    }
    let head = &head[..filled];
    if head.starts_with(&ZSTD_MAGIC) {
        return Err(Error::Unsupported(
            "zstd-compressed input; decompress it first (e.g. `zstd -d | estargz convert - OUT`)"
                .into(),
        ));
    }
    let temp = temp_file(temp_dir)?;
    let mut sink = BufWriter::with_capacity(1 << 20, temp.as_file());
    let chained = head.chain(reader);
    let copied = if head.starts_with(&GZIP_MAGIC) {
        io::copy(&mut flate2::read::MultiGzDecoder::new(chained), &mut sink)
            .map_err(|e| Error::Corrupt(format!("decompressing the gzip input: {e}")))
    } else {
        io::copy(&mut { chained }, &mut sink).map_err(|e| Error::io("copying the input", e))
    };
    copied?;
    sink.flush()
        .map_err(|e| Error::io("writing the temporary input", e))?;
    drop(sink);
    spooled(temp)
}

/// Prepares `input` for indexing.
pub fn prepare(input: BuildInput, temp_dir: Option<&Path>) -> Result<PreparedInput> {
    match input {
        BuildInput::Reader(reader) => spool(reader, temp_dir),
        BuildInput::Path(path) => {
            let meta = std::fs::metadata(&path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            if meta.is_dir() {
                let temp = temp_file(temp_dir)?;
                {
                    let mut sink = BufWriter::with_capacity(1 << 20, temp.as_file());
                    crate::dirtar::write_tar(&path, &mut sink)?;
                    sink.flush()
                        .map_err(|e| Error::io("writing the temporary input", e))?;
                }
                return spooled(temp);
            }
            let mut file = File::open(&path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            if !meta.is_file() {
                return spool(file, temp_dir);
            }
            let mut head = [0u8; 4];
            let n = file
                .read(&mut head)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            if head[..n].starts_with(&GZIP_MAGIC) || head[..n].starts_with(&ZSTD_MAGIC) {
                let file = File::open(&path)
                    .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
                return spool(file, temp_dir);
            }
            let source = FileSource::new(file)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            Ok(PreparedInput {
                source,
                _temp: None,
            })
        }
    }
}

//! The user's files, read and written safely: every file haste reads is checked to be a
//! regular file no larger than a documented limit *before* it is opened (opening a FIFO blocks,
//! and `/dev/zero` never ends), and read with that bound (a file that grows while it is read
//! is refused, not followed); every file haste writes goes through a temporary file and a
//! rename, so an interrupted run leaves the old file or none, never half of one.
//!
//! | file | limit |
//! |---|---|
//! | ONNX model | [`MAX_MODEL_BYTES`] (2 GiB: protobuf's own limit) |
//! | external tensor data | the byte range its tensor declares |
//! | model card, label list, policy | [`MAX_TEXT_BYTES`] |
//! | CIFAR-10 binary | [`crate::datasets::MAX_CIFAR_BYTES`] |
//! | one image | [`MAX_IMAGE_FILE_BYTES`] |

use crate::error::{Error, Result};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Largest ONNX file haste reads: protobuf messages cannot exceed 2 GiB (larger models keep
/// their weights in external data files).
pub const MAX_MODEL_BYTES: u64 = 2 << 30;

/// Largest JSON or text file haste reads (model card, label list, policy).
pub const MAX_TEXT_BYTES: u64 = 64 << 20;

/// Largest single image file haste decodes.
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// What kind of file system object `meta` describes, for messages ("a FIFO").
pub fn kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Checks that `path` (symbolic links followed) is a regular file of at most `limit` bytes
/// and returns its size; `what` names the file in messages ("model file", "image" ...).
pub fn check_regular(path: &Path, limit: u64, what: &str) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the {what} is {}, not a regular file", kind(&meta)),
            ),
        ));
    }
    if meta.len() > limit {
        return Err(too_large(path, what, meta.len(), limit));
    }
    Ok(meta.len())
}

fn too_large(path: &Path, what: &str, len: u64, limit: u64) -> Error {
    Error::Limits {
        path: path.to_path_buf(),
        message: format!("{what} of {len} bytes is larger than haste's limit of {limit} bytes"),
    }
}

/// The bytes of the regular file `path`, refused before anything is read when it is not a
/// regular file or is larger than `limit` (and, should it grow while being read, refused
/// then: at most `limit + 1` bytes are ever read).
pub fn read_regular(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let len = check_regular(path, limit, what)?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(path, what, bytes.len() as u64, limit));
    }
    Ok(bytes)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_text(path: &Path, what: &str) -> Result<String> {
    let bytes = read_regular(path, MAX_TEXT_BYTES, what)?;
    String::from_utf8(bytes).map_err(|_| Error::dataset(path, format!("{what} is not UTF-8")))
}

/// `len` bytes from `offset` of the regular file `path` (external tensor data): only that
/// range is read, and a file shorter than it is an error naming the range. `len = None`
/// reads to the end of the file, at most `limit` bytes.
pub fn read_range(
    path: &Path,
    offset: u64,
    len: Option<u64>,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let size = check_regular(path, u64::MAX, what)?;
    let end = match len {
        Some(l) => offset.checked_add(l),
        None => Some(size),
    };
    let Some(end) = end.filter(|&e| offset <= e && e <= size) else {
        return Err(Error::Limits {
            path: path.to_path_buf(),
            message: format!(
                "{what}: {} bytes from byte {offset} are outside the file's {size} bytes",
                len.map_or("the".to_string(), |l| l.to_string())
            ),
        });
    };
    if end - offset > limit {
        return Err(too_large(path, what, end - offset, limit));
    }
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io(path, e))?;
    let mut bytes = vec![0u8; (end - offset) as usize];
    file.read_exact(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so an
/// interrupted run never leaves a half-written file in place of a good one (see
/// [`crate::report`] for the signal handling that lets a run finish its writes).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `bytes` in a temp folder of its own (`remove` it at the test's end).
    fn tmp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("haste-files-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("temp file");
        p
    }

    /// Removes [`tmp`]'s folder.
    fn remove(p: &Path) {
        if let Some(dir) = p.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn devices_and_folders_are_refused_before_reading() {
        let e = read_regular(Path::new("/dev/zero"), 100, "model file").unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let e = read_regular(&std::env::temp_dir(), 100, "model file").unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn limits_and_ranges() {
        let p = tmp("ten", b"0123456789");
        assert_eq!(read_regular(&p, 10, "f").expect("fits"), b"0123456789");
        let e = read_regular(&p, 9, "policy file").unwrap_err();
        assert!(
            e.to_string().contains("larger than haste's limit of 9"),
            "{e}"
        );
        assert_eq!(read_range(&p, 2, Some(3), 10, "t").expect("range"), b"234");
        assert_eq!(read_range(&p, 7, None, 10, "t").expect("tail"), b"789");
        let e = read_range(&p, 8, Some(3), 10, "tensor w").unwrap_err();
        assert!(
            e.to_string().contains("3 bytes from byte 8 are outside"),
            "{e}"
        );
        assert!(read_range(&p, u64::MAX, Some(3), 10, "t").is_err());
        assert!(read_range(&p, 0, None, 4, "t").is_err());
        remove(&p);
    }

    #[test]
    fn atomic_write_replaces_whole_files_only() {
        let p = tmp("out.json", b"old");
        write_atomic(&p, b"new contents").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"new contents");
        let bad = p.join("under-a-file");
        assert!(write_atomic(&bad, b"x").is_err());
        assert_eq!(std::fs::read(&p).expect("read"), b"new contents");
        remove(&p);
    }
}

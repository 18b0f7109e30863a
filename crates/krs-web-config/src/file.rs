//! Reading the files an operator names (a configuration, a password file, the web config and
//! its certificate, key and client CA) so that no such file can wedge or exhaust the process
//! that reads it.
//!
//! Rules, each enforced by [`read_capped`]:
//! - Only regular files are read; symlinks are followed, so a link to a regular file is fine.
//!   A FIFO would block `open` until a writer appears and then `read` for as long as it stays
//!   open; `/dev/zero` or `/dev/urandom` never end. Both are refused by file type.
//! - The type is checked without blocking: the file is opened with `O_NONBLOCK` (which returns at
//!   once even for a FIFO without a writer, and changes nothing for a regular file) and
//!   `O_NOCTTY` (a terminal named by mistake must not become the controlling terminal), then
//!   `fstat`ed. Checking the path first and opening it afterwards would race with a swap.
//! - At most `limit + 1` bytes are read, so an oversized file costs at most `limit` of memory and
//!   is refused rather than truncated.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading failed; `Display` is the OS's reason (`No such file or directory`).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Not a regular file (or a symlink to one).
    #[error("it is {0}, not a regular file")]
    NotRegular(Kind),
    /// Larger than the cap for this kind of file; nothing of it is used.
    #[error("it is larger than {}", size(*limit))]
    TooLarge { limit: u64 },
}

/// What a non-regular file is, for the error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Directory,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
    Other,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Directory => "a directory",
            Kind::Fifo => "a FIFO",
            Kind::CharDevice => "a character device",
            Kind::BlockDevice => "a block device",
            Kind::Socket => "a socket",
            Kind::Other => "a special file",
        })
    }
}

/// Reads the regular file `path` (following symlinks) if it holds at most `limit` bytes.
pub fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = open_without_blocking(path)?;
    let file_type = file.metadata()?.file_type();
    if !file_type.is_file() {
        return Err(ReadError::NotRegular(kind(&file_type)));
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(bytes)
}

/// [`read_capped`] for text: the content must be UTF-8.
pub fn read_capped_to_string(path: &Path, limit: u64) -> Result<String, ReadError> {
    String::from_utf8(read_capped(path, limit)?).map_err(|_| {
        ReadError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "it is not UTF-8 text",
        ))
    })
}

#[cfg(unix)]
fn open_without_blocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

#[cfg(not(unix))]
fn open_without_blocking(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).open(path)
}

fn kind(file_type: &std::fs::FileType) -> Kind {
    if file_type.is_dir() {
        return Kind::Directory;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return Kind::Fifo;
        }
        if file_type.is_char_device() {
            return Kind::CharDevice;
        }
        if file_type.is_block_device() {
            return Kind::BlockDevice;
        }
        if file_type.is_socket() {
            return Kind::Socket;
        }
    }
    Kind::Other
}

/// `64 KiB (65536 bytes)`: the unit an operator thinks in, and the exact cap.
fn size(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes % MIB == 0 {
        format!("{} MiB ({bytes} bytes)", bytes / MIB)
    } else if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB ({bytes} bytes)", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(all(test, unix))]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::*;

    /// Makes a FIFO at `path` (no writer will ever open it).
    pub(crate) fn mkfifo(path: &Path) -> PathBuf {
        let status = Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("run mkfifo");
        assert!(status.success(), "mkfifo {}", path.display());
        path.to_path_buf()
    }

    #[test]
    fn a_regular_file_within_the_cap_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "12345").unwrap();
        assert_eq!(read_capped(&path, 5).unwrap(), b"12345");
    }

    #[test]
    fn a_symlink_to_a_regular_file_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_capped(&link, 10).unwrap(), b"x");
    }

    #[test]
    fn one_byte_over_the_cap_is_refused_not_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "123456").unwrap();
        let err = read_capped(&path, 5).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge { limit: 5 }), "{err:?}");
        assert_eq!(
            ReadError::TooLarge {
                limit: 64 * 1024 * 1024
            }
            .to_string(),
            "it is larger than 64 MiB (67108864 bytes)"
        );
    }

    #[test]
    fn a_fifo_without_a_writer_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = mkfifo(&dir.path().join("fifo"));
        let start = Instant::now();
        let err = read_capped(&fifo, 10).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(err.to_string(), "it is a FIFO, not a regular file");
    }

    #[test]
    fn endless_devices_and_directories_are_refused_by_type() {
        let err = read_capped(Path::new("/dev/zero"), 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is a character device, not a regular file"
        );
        let err = read_capped(Path::new("/"), 10).unwrap_err();
        assert_eq!(err.to_string(), "it is a directory, not a regular file");
    }
}

//! Writing a file atomically: a fresh temporary file beside it, its mode set explicitly, then a
//! rename. Private files (keys, Secrets with passwords) end up 0600 whatever was at the path or
//! left behind by a crash.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces `path` with `contents`: mode 0600 when `private`, else 0644.
pub fn write(path: &Path, contents: &[u8], private: bool) -> io::Result<()> {
    let (tmp, mut file) = create_temporary(path)?;
    let written = (|| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = if private { 0o600 } else { 0o644 };
            // Explicitly, not through the creation mode, which the umask narrows and which an
            // existing file would not get.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        #[cfg(not(unix))]
        let _ = private;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// A new file beside `path`, named after it, this process and a counter; never one that exists
/// (a leftover from a crash is not reused), created 0600 so it is never readable by others.
fn create_temporary(path: &Path) -> io::Result<(PathBuf, fs::File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()));
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_private_file_is_0600_even_over_a_readable_file_and_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("tls.key");
        let crt = dir.path().join("tls.crt");
        // What an earlier version or a crash left: a world-readable key and temporary file.
        fs::write(&key, "old").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let leftover = dir.path().join("tls.tmp");
        fs::write(&leftover, "half").unwrap();
        fs::set_permissions(&leftover, fs::Permissions::from_mode(0o644)).unwrap();

        write(&key, b"secret key", true).unwrap();
        write(&crt, b"certificate", false).unwrap();
        assert_eq!(fs::read_to_string(&key).unwrap(), "secret key");
        assert_eq!(mode(&key), 0o600);
        assert_eq!(fs::read_to_string(&crt).unwrap(), "certificate");
        assert_eq!(mode(&crt), 0o644);
        assert_eq!(
            fs::read_to_string(&leftover).unwrap(),
            "half",
            "never written through"
        );
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "no temporary file stays behind: {names:?}");
    }
}

//! The zero-config demo tenant's secret: made once, kept in the data directory.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file, inside the data directory, that holds the demo tenant's secret.
pub const DEMO_SECRET_FILE: &str = "demo.secret";

/// The demo tenant's HS256 secret, made on first use and read back after.
///
/// The file `<data_dir>/demo.secret` holds 32 random bytes written as 64
/// hex characters; the key is that text (as for a `secret` in the config
/// file, the string's bytes are the key), so a backend can paste it as is.
/// The data directory is created (mode 0700) if needed. The file is made
/// mode 0600 and appears whole or not at all: written to a temporary file,
/// synced, then linked into place, which also means two processes starting
/// at once agree on one secret (the loser reads the winner's). On a file
/// system without hard links it falls back to a rename.
///
/// An existing file is used as it is, whatever its content, so an operator
/// may put a secret of their choosing there; an empty one is an error
/// rather than replaced, since replacing it would invalidate every token
/// issued with it.
pub fn demo_secret(data_dir: &Path) -> io::Result<Vec<u8>> {
    create_data_dir(data_dir)?;
    let path = data_dir.join(DEMO_SECRET_FILE);
    match read_secret(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }

    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(io::Error::other)?;
    let secret = hex(&random);

    let tmp = temp_path(data_dir)?;
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(secret.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }

    let placed = match fs::hard_link(&tmp, &path) {
        Ok(()) => {
            let _ = fs::remove_file(&tmp);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = fs::remove_file(&tmp);
            Ok(false)
        }
        Err(_) => fs::rename(&tmp, &path).map(|()| true),
    };
    if placed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    if !placed? {
        // Another process made it first: use theirs.
        return read_secret(&path);
    }
    sync_dir(data_dir)?;
    tracing::info!(path = %path.display(), "made the demo tenant's secret");
    Ok(secret.into_bytes())
}

/// The demo tenant's secret if `<data_dir>/demo.secret` exists (read and
/// checked as [`demo_secret`] does), `None` if it does not; makes nothing.
pub(crate) fn existing_demo_secret(data_dir: &Path) -> io::Result<Option<Vec<u8>>> {
    match read_secret(&data_dir.join(DEMO_SECRET_FILE)) {
        Ok(secret) => Ok(Some(secret)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates the data directory (and its parents) if it does not exist; a
/// new directory is mode 0700, since it will hold every conversation.
pub(crate) fn create_data_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn read_secret(path: &Path) -> io::Result<Vec<u8>> {
    let bytes = fs::read(path)?;
    let secret = bytes.trim_ascii();
    if secret.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is empty; delete it to have a new demo secret made (tokens signed with the old one stop working)",
                path.display()
            ),
        ));
    }
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "the demo secret is readable by other users; chmod 600 it"
        );
    }
    Ok(secret.to_vec())
}

fn temp_path(dir: &Path) -> io::Result<PathBuf> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(io::Error::other)?;
    Ok(dir.join(format!(
        ".{DEMO_SECRET_FILE}.{}.{}.tmp",
        std::process::id(),
        hex(&random)
    )))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_reused_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b/data");
        let first = demo_secret(&data).unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.iter().all(u8::is_ascii_hexdigit));

        let path = data.join(DEMO_SECRET_FILE);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(
            fs::read_to_string(&path).unwrap().trim().as_bytes(),
            &first[..]
        );

        let second = demo_secret(&data).unwrap();
        assert_eq!(first, second);

        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(DEMO_SECRET_FILE)]);
    }

    #[test]
    fn different_data_dirs_get_different_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let a = demo_secret(&dir.path().join("a")).unwrap();
        let b = demo_secret(&dir.path().join("b")).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn an_operators_secret_is_kept_and_an_empty_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEMO_SECRET_FILE);
        fs::write(&path, "my own secret\n").unwrap();
        assert_eq!(demo_secret(dir.path()).unwrap(), b"my own secret");

        fs::write(&path, "  \n").unwrap();
        let err = demo_secret(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("is empty"));
    }

    #[test]
    fn concurrent_first_starts_agree() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_owned();
        let secrets: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| demo_secret(&data))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        assert!(secrets.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(fs::read_dir(&data).unwrap().count(), 1);
    }
}

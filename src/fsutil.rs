//! File writing that never leaves a partial file behind.

use anyhow::{Context, Result};
use std::path::Path;

/// Writes `bytes` to a temporary file beside `path`, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp{}-{}", name.to_string_lossy(), std::process::id(), host()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        // On disk before the rename, so even a power cut leaves the old file or the new one.
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
    })
}

/// This machine's name, as temporary files carry it (letters, digits, `-` and `.` only).
fn host() -> String {
    let name =
        std::fs::read_to_string("/proc/sys/kernel/hostname").or_else(|_| std::fs::read_to_string("/etc/hostname")).unwrap_or_default();
    let name: String = name.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').collect();
    if name.is_empty() {
        "host".to_string()
    } else {
        name
    }
}

/// Removes the temporary files a killed writer left in `dir` (`.<name>.tmp<pid>-<host>`),
/// so only complete files remain. Several processes may write into one folder at once
/// (shards, on one machine or many sharing the folder): a temporary is stale only when it
/// was made on this machine by a process that is gone. Those of live processes, and of
/// other machines, are left alone.
pub fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let here = host();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let writer = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp")).and_then(|(_, tag)| {
            let (pid, host) = tag.split_once('-')?;
            (!pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit())).then(|| (pid.to_string(), host.to_string()))
        });
        let stale = writer.is_some_and(|(pid, host)| host == here && !Path::new("/proc").join(&pid).exists());
        if stale {
            std::fs::remove_file(e.path()).with_context(|| format!("cannot remove the stale temporary {}", e.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_temporaries_of_gone_writers_on_this_machine_are_removed() {
        let dir = std::env::temp_dir().join(format!("dgnam-fsutil-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        write_atomic(&dir.join("done.png"), b"x").unwrap();
        // A pid above the kernel's limit (2^22) is never alive.
        let gone = format!(".a.png.tmp4999999-{}", host());
        let alive = format!(".b.png.tmp{}-{}", std::process::id(), host());
        let elsewhere = ".c.png.tmp4999999-another-machine".to_string();
        for n in [&gone, &alive, &elsewhere] {
            std::fs::write(dir.join(n), b"partial").unwrap();
        }
        remove_stale_temporaries(&dir).unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        let mut want = vec![alive, elsewhere, "done.png".to_string()];
        want.sort();
        assert_eq!(left, want);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! Reading `/proc/self/mountinfo`: what is mounted where, with which type and options.

use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The per-mount options (`rw,nosuid,relatime`).
    pub options: String,
    /// The filesystem type (`fuse`, `fuse.zdbfs`, `ext4`).
    pub fstype: String,
    /// The mount source (`zdbfs`, `/dev/sda1`).
    pub source: String,
}

impl MountEntry {
    /// A FUSE filesystem (`fuse` or `fuse.<subtype>`)?
    pub fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype.starts_with("fuse.")
    }

    /// Mounted `noatime` (access times are not recorded)?
    pub fn noatime(&self) -> bool {
        self.options.split(',').any(|o| o == "noatime")
    }
}

/// The current mount table.
pub fn read() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4).unwrap_or_default();
        if bytes[i] == b'\\'
            && digits.len() == 3
            && digits.iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(value) = u8::try_from(value) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one mountinfo line; `None` for a malformed one.
pub fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let mount_point = fields.nth(4)?;
    let options = fields.next()?;
    // Optional fields end with a lone `-`; then fstype and source.
    let mut rest = fields.skip_while(|f| *f != "-");
    rest.next()?;
    let fstype = rest.next()?;
    let source = rest.next().unwrap_or_default();
    Some(MountEntry {
        mount_point: PathBuf::from(unescape(mount_point)),
        options: options.to_string(),
        fstype: unescape(fstype),
        source: unescape(source),
    })
}

fn normalize(path: &Path) -> PathBuf {
    path.components().collect()
}

/// The mount at exactly `mountpoint` (the topmost when several are stacked).
pub fn at(mountinfo: &str, mountpoint: &Path) -> Option<MountEntry> {
    let wanted = normalize(mountpoint);
    mountinfo
        .lines()
        .rev()
        .filter_map(parse_line)
        .find(|entry| entry.mount_point == wanted)
}

/// The mount that holds `path`: the longest mount point that contains it (topmost when
/// stacked). `path` should be canonical.
pub fn containing(mountinfo: &str, path: &Path) -> Option<MountEntry> {
    let path = normalize(path);
    mountinfo
        .lines()
        .rev()
        .filter_map(parse_line)
        .filter(|entry| path.starts_with(&entry.mount_point))
        .max_by_key(|entry| entry.mount_point.as_os_str().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
45 22 0:40 / /var/zdbfs/mnt rw,nosuid,nodev,relatime shared:20 - fuse.zdbfs zdbfs rw,user_id=0,group_id=0
46 22 0:41 / /mnt/with\\040space rw - fuse /dev/fuse rw
47 22 0:42 / /srv rw - tmpfs tmpfs rw
48 47 0:43 / /srv rw master:3 - fuse.bindfs /data rw
49 22 0:44 / /var/zdbfs/data rw,noatime - ext4 /dev/sdb rw
";

    #[test]
    fn finds_mounts() {
        let entry = at(MOUNTINFO, Path::new("/var/zdbfs/mnt/")).unwrap();
        assert_eq!(
            (entry.fstype.as_str(), entry.source.as_str()),
            ("fuse.zdbfs", "zdbfs")
        );
        assert!(entry.is_fuse());
        assert!(at(MOUNTINFO, Path::new("/mnt/with space"))
            .unwrap()
            .is_fuse());
        // Stacked mounts: the last (topmost) wins.
        assert_eq!(
            at(MOUNTINFO, Path::new("/srv")).unwrap().fstype,
            "fuse.bindfs"
        );
        assert!(!at(MOUNTINFO, Path::new("/")).unwrap().is_fuse());
        assert_eq!(at(MOUNTINFO, Path::new("/var/zdbfs")), None);
        assert_eq!(parse_line("garbage"), None);
    }

    #[test]
    fn the_mount_holding_a_path_and_its_atime() {
        assert!(
            containing(MOUNTINFO, Path::new("/var/zdbfs/data/zdbfs-data"))
                .unwrap()
                .noatime()
        );
        let root = containing(MOUNTINFO, Path::new("/var/zdbfs/index")).unwrap();
        assert_eq!(root.mount_point, Path::new("/"));
        assert!(!root.noatime());
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("a\\040b\\134c\\"), "a b\\c\\");
        assert_eq!(unescape("\\04"), "\\04");
    }
}

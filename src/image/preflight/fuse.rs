//! FUSE: zdbfs mounts through `/dev/fuse`, which must exist as the character device, open, and
//! the kernel must have the `fuse` file system.

use super::Outcome;
use crate::image::exit;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// The FUSE device.
pub const DEVICE: &str = "/dev/fuse";
/// The kernel's file systems.
pub const FILESYSTEMS: &str = "/proc/filesystems";
const CHECK: &str = "fuse";

/// What was found at `/dev/fuse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// Nothing.
    Missing,
    /// Something that is not a character device (its kind).
    NotCharDevice(String),
    /// The device, which cannot be opened (why).
    CannotOpen(String),
    /// The device, opened read-write.
    Opened,
}

/// Whether `/proc/filesystems` lists `fuse` (`nodev\tfuse`).
pub fn kernel_has_fuse(filesystems: &str) -> bool {
    filesystems
        .lines()
        .any(|line| line.split_whitespace().last() == Some("fuse"))
}

/// Judges the device and the kernel's file systems (or why they could not be read).
pub fn decide(device: &Device, filesystems: Result<&str, &str>) -> Outcome {
    let mut problems = Vec::new();
    match device {
        Device::Opened => {}
        Device::Missing => problems.push(format!(
            "{DEVICE} does not exist: install fuse3 and load the module (modprobe fuse); in a \
             container, pass the device in (systemd-nspawn --bind={DEVICE}, docker run --device \
             {DEVICE})"
        )),
        Device::NotCharDevice(kind) => problems.push(format!(
            "{DEVICE} is a {kind}, not the FUSE character device: remove it and load the module \
             (modprobe fuse), or mknod {DEVICE} c 10 229"
        )),
        Device::CannotOpen(why) => problems.push(format!(
            "{DEVICE} cannot be opened ({why}): in a container, allow the device (systemd-nspawn \
             --bind={DEVICE}, DeviceAllow={DEVICE} rw)"
        )),
    }
    match filesystems {
        Ok(text) if kernel_has_fuse(text) => {}
        Ok(_) => problems.push(format!(
            "the kernel has no FUSE ({FILESYSTEMS} does not list fuse): modprobe fuse, and add \
             fuse to /etc/modules-load.d/qsfs.conf"
        )),
        Err(why) => problems.push(format!(
            "{FILESYSTEMS} cannot be read ({why}): is /proc mounted?"
        )),
    }
    if problems.is_empty() {
        Outcome::ok(
            CHECK,
            format!("{DEVICE} opens, the kernel has the fuse file system"),
        )
    } else {
        Outcome::failed(CHECK, exit::PREFLIGHT_FUSE, problems.join("; "))
    }
}

/// Opens `/dev/fuse` (which loads the module where udev made the node), then reads
/// `/proc/filesystems`.
pub fn check() -> Outcome {
    let device = match std::fs::metadata(DEVICE) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Device::Missing,
        Err(e) => Device::CannotOpen(e.to_string()),
        Ok(meta) if !meta.file_type().is_char_device() => {
            let t = meta.file_type();
            Device::NotCharDevice(
                if t.is_dir() {
                    "directory"
                } else if t.is_file() {
                    "regular file"
                } else if t.is_block_device() {
                    "block device"
                } else {
                    "special file"
                }
                .to_string(),
            )
        }
        Ok(_) => match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(Path::new(DEVICE))
        {
            Ok(_) => Device::Opened,
            Err(e) => Device::CannotOpen(e.to_string()),
        },
    };
    let filesystems = std::fs::read_to_string(FILESYSTEMS).map_err(|e| e.to_string());
    decide(&device, filesystems.as_deref().map_err(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::preflight::Status;

    const FILESYSTEMS_WITH_FUSE: &str =
        "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\tfuse\n\tfuseblk\nnodev\tfusectl\n";

    #[test]
    fn the_kernel_lists_fuse_itself_not_only_fuseblk() {
        assert!(kernel_has_fuse(FILESYSTEMS_WITH_FUSE));
        assert!(!kernel_has_fuse(
            "nodev\tsysfs\n\tfuseblk\nnodev\tfusectl\n"
        ));
    }

    #[test]
    fn each_problem_is_named_with_what_to_do() {
        assert_eq!(
            decide(&Device::Opened, Ok(FILESYSTEMS_WITH_FUSE)).status,
            Status::Ok
        );
        let missing = decide(&Device::Missing, Ok(FILESYSTEMS_WITH_FUSE));
        assert_eq!(missing.exit_code, Some(exit::PREFLIGHT_FUSE));
        assert!(missing.message.contains("/dev/fuse does not exist"));
        assert!(missing.message.contains("--bind=/dev/fuse"));
        let both = decide(
            &Device::NotCharDevice("regular file".into()),
            Ok("nodev\tsysfs\n"),
        );
        assert!(both.message.contains("is a regular file"), "{both:?}");
        assert!(both.message.contains("modprobe fuse"), "{both:?}");
        let denied = decide(
            &Device::CannotOpen("Operation not permitted".into()),
            Err("gone"),
        );
        assert!(denied
            .message
            .contains("cannot be opened (Operation not permitted)"));
        assert!(denied.message.contains("/proc/filesystems cannot be read"));
    }
}

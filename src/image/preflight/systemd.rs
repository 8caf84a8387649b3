//! systemd is new enough for the units: `LoadCredential=`, `ProtectProc=` and `ProcSubset=`
//! came with systemd 247.

use super::Outcome;
use crate::image::exit;
use std::process::Command;

/// The oldest systemd the units work with.
pub const MIN_VERSION: u32 = 247;
const CHECK: &str = "systemd";

/// The version in the first line of `systemctl --version` (`systemd 252 (252.39-1~deb12u2)`).
pub fn parse_version(output: &str) -> Option<u32> {
    let line = output.lines().next()?;
    let number = line.strip_prefix("systemd ")?;
    let digits: String = number.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Judges the output of `systemctl --version`, or why it could not be run.
pub fn decide(version_output: Result<&str, &str>) -> Outcome {
    let fail = |message: String| Outcome::failed(CHECK, exit::PREFLIGHT_SYSTEMD, message);
    match version_output {
        Err(why) => fail(format!(
            "systemctl --version: {why}: install systemd >= {MIN_VERSION} (apt-get install \
             systemd systemd-sysv dbus) and boot with it"
        )),
        Ok(output) => match parse_version(output) {
            Some(v) if v >= MIN_VERSION => Outcome::ok(CHECK, format!("systemd {v}")),
            Some(v) => fail(format!(
                "systemd {v} is older than {MIN_VERSION}: upgrade systemd (Debian 12 ships 252)"
            )),
            None => fail(format!(
                "systemctl --version says {:?}, not a systemd version: install systemd >= \
                 {MIN_VERSION}",
                output.lines().next().unwrap_or_default()
            )),
        },
    }
}

/// Asks `systemctl --version`.
pub fn check() -> Outcome {
    match Command::new("systemctl").arg("--version").output() {
        Ok(out) if out.status.success() => decide(Ok(&String::from_utf8_lossy(&out.stdout))),
        Ok(out) => decide(Err(&format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Err(e) => decide(Err(&e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::preflight::Status;

    #[test]
    fn versions_are_read_from_the_first_line() {
        assert_eq!(
            parse_version("systemd 252 (252.39-1~deb12u2)\n+PAM +AUDIT"),
            Some(252)
        );
        assert_eq!(parse_version("systemd 247"), Some(247));
        assert_eq!(parse_version("systemd 256~rc2 (256~rc2-1)"), Some(256));
        assert_eq!(parse_version("elogind 246"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn old_missing_or_odd_systemd_fails_with_its_code() {
        assert_eq!(decide(Ok("systemd 252 (252.39)")).status, Status::Ok);
        assert_eq!(decide(Ok("systemd 247 (247.3-7)")).status, Status::Ok);
        for outcome in [
            decide(Ok("systemd 246 (246.6)")),
            decide(Ok("something else")),
            decide(Err("No such file or directory (os error 2)")),
        ] {
            assert_eq!(
                outcome.exit_code,
                Some(exit::PREFLIGHT_SYSTEMD),
                "{outcome:?}"
            );
            assert!(outcome.message.contains("247"), "{outcome:?}");
        }
    }
}

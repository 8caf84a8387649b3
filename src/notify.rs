//! Telling systemd about our state: readiness, status lines, watchdog pings, reloads and stops.
//!
//! A thin wrapper over `sd-notify` 0.5. Every call is a no-op outside systemd (no
//! `NOTIFY_SOCKET`), and a failure to notify is logged, never fatal.

use std::os::fd::AsFd;
use std::time::Duration;

use sd_notify::NotifyState;

/// Sends notifications to the service manager.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    watchdog_timeout: Option<Duration>,
}

impl Notifier {
    /// Reads the watchdog timeout (`WATCHDOG_USEC`, for this process only) from the environment.
    pub fn from_env() -> Self {
        Notifier {
            watchdog_timeout: sd_notify::watchdog_enabled(),
        }
    }

    /// How often to call [`Notifier::watchdog`]: half the watchdog timeout, as `sd_watchdog_enabled(3)`
    /// recommends; `None` when systemd runs no watchdog for us.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_timeout.map(|timeout| timeout / 2)
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STATUS=` shown by `systemctl status`.
    pub fn status(&self, status: &str) {
        send(&[NotifyState::Status(status)]);
    }

    /// `WATCHDOG=1`. Call it only from a loop that proved it is making progress.
    pub fn watchdog(&self) {
        if self.watchdog_timeout.is_some() {
            send(&[NotifyState::Watchdog]);
        }
    }

    /// `RELOADING=1` with the monotonic time systemd needs to match it; follow with
    /// [`Notifier::ready`].
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now]),
            Err(_) => send(&[NotifyState::Reloading]),
        }
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        send(&[NotifyState::Stopping]);
    }

    /// `READY=1` and a status line sent on behalf of another process (the hook speaks for zdb,
    /// whose unit has `NotifyAccess=all`), followed by a barrier: it returns only once systemd
    /// has processed the messages, or after `timeout`. Without the barrier a process that exits
    /// right away can be gone before systemd reads its message, and systemd then drops it
    /// because it cannot tell which unit the sender belonged to.
    pub fn ready_and_wait(&self, status: &str, timeout: Duration) -> std::io::Result<()> {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Ok(());
        }
        sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)])?;
        let (read_end, write_end) = nix::unistd::pipe()?;
        sd_notify::notify_with_fds(&[NotifyState::Custom("BARRIER=1")], &[write_end.as_fd()])?;
        drop(write_end);
        // systemd closes its copy of the write end after handling everything sent before it.
        let mut fds = [nix::poll::PollFd::new(
            read_end.as_fd(),
            nix::poll::PollFlags::POLLHUP,
        )];
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(millis))? {
            0 => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "systemd did not confirm the notification",
            )),
            _ => Ok(()),
        }
    }
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// One test, because `NOTIFY_SOCKET` is process-wide.
    #[test]
    fn messages_reach_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        let notifier = Notifier {
            watchdog_timeout: Some(Duration::from_secs(10)),
        };
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(5)));

        let mut buf = [0u8; 512];
        let mut next = || {
            let n = socket.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        notifier.ready("serving");
        assert_eq!(next(), "READY=1\nSTATUS=serving\n");
        notifier.watchdog();
        assert_eq!(next(), "WATCHDOG=1\n");
        notifier.reloading();
        assert!(next().starts_with("RELOADING=1\nMONOTONIC_USEC="));
        notifier.stopping();
        assert_eq!(next(), "STOPPING=1\n");

        // Nobody answers the barrier here, so it times out after the messages were sent.
        let err = notifier
            .ready_and_wait("zdb ready", Duration::from_millis(50))
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(next(), "READY=1\nSTATUS=zdb ready\n");
        assert_eq!(next(), "BARRIER=1\n");

        std::env::remove_var("NOTIFY_SOCKET");
        notifier.ready("nobody listens");
        Notifier::default().watchdog();
        notifier
            .ready_and_wait("nobody listens", Duration::from_millis(50))
            .unwrap();
    }
}

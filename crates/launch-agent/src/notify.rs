//! systemd's notification protocol (`sd_notify(3)`), for `Type=notify` units: `READY=1` once the
//! claim loop runs, `STATUS=Healthy` / `STATUS=Unhealthy: …` as claims succeed or fail,
//! `WATCHDOG=1` at half of `WATCHDOG_USEC` from the loop itself (a stuck loop stops the pings
//! and systemd restarts the agent), `STOPPING=1` when a drain starts. Without `NOTIFY_SOCKET`
//! every call does nothing. Written here rather than taken from a crate: one datagram per call.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where systemd listens, read once: `None` outside a notify unit.
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    /// Half the watchdog interval, when systemd asks for pings.
    pub watchdog: Option<Duration>,
    last_status: std::sync::Mutex<String>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.into_string().ok()?;
            let address = match path.strip_prefix('@') {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt as _;
                    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
                }
                None => std::os::unix::net::SocketAddr::from_pathname(&path).ok()?,
            };
            let socket = UnixDatagram::unbound().ok()?;
            Some((socket, address))
        });
        // systemd sets WATCHDOG_PID too; a value for another process is not ours.
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|pid| pid == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|usec| *usec > 0 && for_us && socket.is_some())
            .map(|usec| Duration::from_micros(usec / 2));
        Notifier {
            socket,
            watchdog,
            last_status: std::sync::Mutex::new(String::new()),
        }
    }

    fn send(&self, message: &str) {
        if let Some((socket, address)) = &self.socket {
            if let Err(err) = socket.send_to_addr(message.as_bytes(), address) {
                tracing::debug!("NOTIFY_SOCKET: {err}");
            }
        }
    }

    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=Healthy");
        self.remember("Healthy");
    }

    /// `STATUS=…`, sent only when it changes.
    pub fn status(&self, status: &str) {
        if self.remember(status) {
            self.send(&format!("STATUS={status}"));
        }
    }

    pub fn watchdog_ping(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=Draining");
        self.remember("Draining");
    }

    /// Records `status`; whether it differs from the last one.
    fn remember(&self, status: &str) -> bool {
        let Ok(mut last) = self.last_status.lock() else {
            return true;
        };
        if *last == status {
            return false;
        }
        status.clone_into(&mut last);
        true
    }
}

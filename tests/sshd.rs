//! A real OpenSSH server on loopback for tests of git over `ssh://` and of `add_ssh_keys`.
//!
//! This file uses the standard library only, so that test harnesses that cannot depend on
//! `bosun_tests` (the task-agent's and the server's own tests) include it with `#[path]`
//! instead of keeping a copy.
//!
//! The server runs as the current user (`/usr/sbin/sshd -D -e`), so it only lets that user log
//! in: URLs name `USER@127.0.0.1:PORT`. As root, sshd insists on its privilege separation
//! directory `/run/sshd`, which Debian's service creates at boot; [`Sshd::start`] creates it
//! when it is missing (an empty 0755 directory, as the service would).

use std::io::Read as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`Sshd::start`] waits for the port to accept connections.
const SSHD_STARTUP: Duration = Duration::from_secs(20);

/// A key pair made by `ssh-keygen`, with its fingerprints as `ssh-keygen -l` prints them.
#[derive(Clone)]
pub struct SshKeyPair {
    /// The OpenSSH private key file's text.
    pub private_key: String,
    /// The `authorized_keys` line.
    pub public_key: String,
    /// `SHA256:...`.
    pub fingerprint: String,
    /// `aa:bb:...` (without the `MD5:` prefix).
    pub md5_fingerprint: String,
}

impl std::fmt::Debug for SshKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshKeyPair")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Generates an ed25519 key pair under `dir` (as `<dir>/<name>` and `<name>.pub`).
pub fn ssh_keypair(dir: &Path, name: &str) -> SshKeyPair {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    run_checked(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path),
    );
    let fingerprint = |hash: &str| {
        let out = run_checked(
            Command::new("ssh-keygen")
                .args(["-l", "-E", hash, "-f"])
                .arg(&path),
        );
        // `256 SHA256:xxxx comment (ED25519)`
        out.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected ssh-keygen -l output: {out}"))
            .to_owned()
    };
    let md5 = fingerprint("md5");
    SshKeyPair {
        private_key: std::fs::read_to_string(&path).expect("reading the private key"),
        public_key: std::fs::read_to_string(path.with_extension("pub"))
            .expect("reading the public key")
            .trim()
            .to_owned(),
        fingerprint: fingerprint("sha256"),
        md5_fingerprint: md5.strip_prefix("MD5:").unwrap_or(&md5).to_owned(),
    }
}

/// A running `sshd`, killed when dropped.
pub struct Sshd {
    child: Child,
    dir: PathBuf,
    config: PathBuf,
    port: u16,
    user: String,
}

impl Sshd {
    /// Starts sshd on a free loopback port with a fresh ed25519 host key, accepting the
    /// `authorized_keys` lines given, and waits until it accepts connections. Its files live in
    /// `dir`.
    pub fn start(dir: &Path, authorized_keys: &[&str]) -> Sshd {
        for program in ["/usr/sbin/sshd", "/usr/bin/ssh-keygen", "/usr/bin/ssh"] {
            assert!(
                Path::new(program).is_file(),
                "`{program}` is not installed (the ssh checkout and add_ssh_keys tests run a real \
                 sshd): it is a test prerequisite listed in xtask/src/prereqs.rs; \
                 `cargo xtask test` installs it (as root)"
            );
        }
        if nix_is_root() && !Path::new("/run/sshd").is_dir() {
            use std::os::unix::fs::DirBuilderExt as _;
            let made = std::fs::DirBuilder::new().mode(0o755).create("/run/sshd");
            if let Err(err) = made {
                assert!(
                    err.kind() == std::io::ErrorKind::AlreadyExists,
                    "cannot create sshd's privilege separation directory /run/sshd: {err}"
                );
            }
        }
        std::fs::create_dir_all(dir).expect("creating the sshd directory");
        let mut lines = authorized_keys.join("\n");
        lines.push('\n');
        std::fs::write(dir.join("authorized_keys"), lines).expect("writing authorized_keys");
        let user = current_user();
        let mut sshd = Sshd {
            child: Command::new("true").spawn().expect("spawning true"),
            dir: dir.to_owned(),
            config: dir.join("sshd_config"),
            port: 0,
            user,
        };
        sshd.new_host_key();
        sshd.launch();
        sshd
    }

    /// Stops the server, gives it a new host key and starts it again on the same port: a
    /// client's stored `known_hosts` line no longer matches.
    pub fn restart_with_new_host_key(&mut self) {
        self.stop();
        self.new_host_key();
        self.launch();
    }

    /// Lets `public_key` (an `authorized_keys` line) log in too, from the next connection on.
    pub fn authorize(&self, public_key: &str) {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("authorized_keys"))
            .expect("opening authorized_keys");
        writeln!(file, "{}", public_key.trim()).expect("writing authorized_keys");
    }

    /// What sshd logged so far (connections, accepted and refused keys), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// The port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user that may log in (the current one).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// `ssh://USER@127.0.0.1:PORT/abs/path` for the repository at `repo` on this machine.
    pub fn url(&self, repo: &Path) -> String {
        let repo = std::fs::canonicalize(repo).unwrap_or_else(|_| repo.to_owned());
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA...`, as ssh writes it into `known_hosts`.
    pub fn known_hosts_line(&self) -> String {
        let public = std::fs::read_to_string(self.dir.join("host_key.pub"))
            .expect("reading the host public key");
        let mut words = public.split_whitespace();
        let kind = words.next().expect("host key type");
        let key = words.next().expect("host key");
        format!("[127.0.0.1]:{} {kind} {key}", self.port)
    }

    fn new_host_key(&self) {
        let key = self.dir.join("host_key");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        run_checked(
            Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "bosun-test-host",
                    "-f",
                ])
                .arg(&key),
        );
    }

    /// Writes the config (on a new free port the first time) and starts sshd. A port taken by
    /// someone else between the probe and sshd's bind is retried on another one.
    fn launch(&mut self) {
        let keep_port = self.port != 0;
        for _ in 0..5 {
            if !keep_port {
                self.port = free_port();
            }
            let config = format!(
                "ListenAddress 127.0.0.1\n\
                 Port {port}\n\
                 HostKey {dir}/host_key\n\
                 AuthorizedKeysFile {dir}/authorized_keys\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 PidFile none\n\
                 LogLevel VERBOSE\n",
                port = self.port,
                dir = self.dir.display(),
            );
            std::fs::write(&self.config, config).expect("writing sshd_config");
            let log = std::fs::File::create(self.dir.join("sshd.log")).expect("sshd.log");
            self.child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&self.config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting /usr/sbin/sshd");
            let deadline = Instant::now() + SSHD_STARTUP;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                    // sshd speaks first: its banner proves it is ours and ready.
                    let mut banner = [0u8; 4];
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            self.stop();
            if keep_port {
                break;
            }
        }
        let log = std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default();
        panic!(
            "sshd did not start listening on 127.0.0.1:{}: {log}",
            self.port
        );
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("address").port()
}

/// Whether this process runs as root: `/proc/self` belongs to the effective user.
fn nix_is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

fn current_user() -> String {
    let out = run_checked(Command::new("id").arg("-un"));
    out.trim().to_owned()
}

fn run_checked(command: &mut Command) -> String {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("running {command:?}: {err}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

//! A throwaway PostgreSQL cluster from Debian's packages: `initdb` in a temp dir, a
//! postmaster on 127.0.0.1 and a free port (trust auth, no fsync: it is thrown away),
//! stopped on drop — and, should the test process die without dropping it, by a
//! watchdog that stops it once the process is gone.
//!
//! `initdb` refuses to run as root; as root the cluster belongs to the `postgres` user
//! (created by the package) and every command runs through `runuser -u postgres`.
//! Missing PostgreSQL is a failure naming the fix (`make postgres`), never a skip.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{free_port, wait_for};

/// Where `initdb`, `pg_ctl` and `postgres` are: `$PG_BIN`, else the newest
/// `/usr/lib/postgresql/<major>/bin`.
pub fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `make postgres` \
             (apt-get update && apt-get install -y postgresql), or set PG_BIN"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command that runs as the cluster's owner.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}\nfix: `make postgres` installs PostgreSQL; as root the `postgres` user must exist",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running throwaway cluster.
pub struct PgCluster {
    pub port: u16,
    dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    stopped: bool,
}

impl PgCluster {
    /// `initdb` + start, waiting until it accepts connections.
    pub fn start() -> PgCluster {
        Self::start_with(None)
    }

    /// Like [`PgCluster::start`], serving TLS with `pki`'s server certificate (signed by
    /// the test's own CA) and logging each connection (`SSL enabled` when it is TLS).
    pub fn start_tls(pki: &crate::TestPki) -> PgCluster {
        Self::start_with(Some(pki))
    }

    fn start_with(pki: Option<&crate::TestPki>) -> PgCluster {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("epochgate-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut tls_opts = String::new();
        if let Some(pki) = pki {
            // Postgres wants the key readable by its owner only.
            let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::copy(&pki.cert, &cert).unwrap();
            std::fs::copy(&pki.key, &key).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            tls_opts = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c log_connections=on",
                cert.display(),
                key.display()
            );
        }
        if is_root() {
            run(
                "chown postgres",
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path()),
            );
        }
        run(
            "initdb",
            as_owner(&bin.join("initdb"))
                .args([
                    "--auth=trust",
                    "--username=postgres",
                    "--no-sync",
                    "--encoding=UTF8",
                    "-D",
                ])
                .arg(&data),
        );
        let port = free_port();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c fsync=off -c max_connections=200{tls_opts}",
            dir.path().display()
        );
        run(
            "pg_ctl start",
            as_owner(&bin.join("pg_ctl"))
                .args(["-w", "-t", "60", "-o", &opts, "-l"])
                .arg(dir.path().join("postgres.log"))
                .arg("-D")
                .arg(&data)
                .arg("start"),
        );
        let cluster = PgCluster {
            port,
            dir,
            data,
            bin,
            stopped: false,
        };
        cluster.watchdog();
        wait_for(
            "Postgres to accept connections",
            Duration::from_secs(30),
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        );
        cluster
    }

    /// One cluster for the whole test process (stopped by the watchdog at exit).
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(PgCluster::start)
    }

    /// Stops the cluster once this process is gone, however it ended.
    fn watchdog(&self) {
        let pid = std::process::id();
        let pg_ctl = self.bin.join("pg_ctl");
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {} -D '{}' -m immediate stop >/dev/null 2>&1",
            if is_root() { format!("runuser -u postgres -- {}", pg_ctl.display()) } else { pg_ctl.display().to_string() },
            self.data.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// A new, empty database; its URL.
    pub fn create_database(&self, name: &str) -> String {
        run(
            "createdb",
            Command::new(self.bin.join("createdb")).args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ]),
        );
        self.url(name)
    }

    /// A database with a fresh unique name.
    pub fn fresh_database(&self) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("t{}_{n}", std::process::id()))
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let _ = as_owner(&self.bin.join("pg_ctl"))
                .args(["-m", "immediate", "-D"])
                .arg(&self.data)
                .arg("stop")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

//! A throwaway PostgreSQL cluster for the tests: PostgreSQL installed by
//! `scripts/install-postgresql.sh` when missing, `initdb` in a temporary
//! directory (as the `postgres` user when the tests run as root), a port
//! the OS hands out, trust authentication on loopback — but for two roles
//! that test what a server refuses. One cluster per test process; each
//! test takes a database of its own. A watchdog stops the server and
//! removes its files when the test process is gone.
//!
//! The tests' cluster skips fsync (they kill agentform, not the server);
//! the benchmark starts one that keeps it (`Cluster::start(true)`), to
//! compare with a sled state that flushes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A role that must give its password (scram), and the password.
pub const PASSWORD_USER: &str = "pw_user";
pub const PASSWORD: &str = "right-password";
/// A role that may connect but not create anything.
pub const NO_PERMISSION_USER: &str = "noperm";

pub struct Cluster {
    pub port: u16,
    bin: PathBuf,
    base: PathBuf,
    data: PathBuf,
    fsync: bool,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The cluster of this test process, started on first use.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| Cluster::start(false))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program` with its arguments, as the `postgres` user when root (the
/// server refuses to run as root).
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Cluster {
    /// A new cluster; `fsync` as a production server has it.
    pub fn start(fsync: bool) -> Cluster {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-postgresql.sh");
        let out = Command::new("bash")
            .arg(script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/install-postgresql.sh");
        assert!(
            out.status.success(),
            "the PostgreSQL tests need PostgreSQL and `{script}` could not install it"
        );
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
        let base = tempfile::Builder::new()
            .prefix("agentform-pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&base)
                .status()
                .expect("chown");
            assert!(status.success(), "chown the cluster's directory");
        }
        let data = base.join("data");
        let out = as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hba = format!(
            "local all all trust\n\
             host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n\
             host all all 127.0.0.1/32 trust\n\
             host all all ::1/128 trust\n"
        );
        // Written through the owner: the file is theirs.
        let mut write = as_owner(Path::new("tee"))
            .arg(data.join("pg_hba.conf"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("write pg_hba.conf");
        std::io::Write::write_all(write.stdin.as_mut().expect("stdin"), hba.as_bytes())
            .expect("pg_hba.conf");
        drop(write.stdin.take());
        assert!(write.wait().expect("tee").success());
        for _ in 0..5 {
            let port = free_port();
            if let Some(cluster) = Self::launch(&bin, &base, &data, port, fsync) {
                cluster.setup();
                return cluster;
            }
        }
        panic!("PostgreSQL did not start; see {}/log", base.display());
    }

    /// Starts the server on `port` under a watchdog; the cluster once it
    /// answers, `None` when it stopped (the port was taken meanwhile).
    fn launch(bin: &Path, base: &Path, data: &Path, port: u16, fsync: bool) -> Option<Cluster> {
        let postgres = bin.join("postgres");
        let parent = std::process::id();
        let script = format!(
            "'{postgres}' -D '{data}' -p {port} -k '{base}' -c listen_addresses=127.0.0.1 \
             -c fsync={fsync} -c max_connections=300 -c shared_buffers=32MB >>'{base}/log' 2>&1 &\n\
             pg=$!\n\
             while [ -d /proc/{parent} ] && kill -0 $pg 2>/dev/null; do sleep 1; done\n\
             kill -INT $pg 2>/dev/null; wait $pg\n\
             [ -d /proc/{parent} ] || rm -rf '{base}'\n",
            postgres = postgres.display(),
            data = data.display(),
            base = base.display(),
            fsync = if fsync { "on" } else { "off" },
        );
        let mut watchdog = as_owner(Path::new("sh"))
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start PostgreSQL");
        let cluster = Cluster {
            port,
            bin: bin.to_path_buf(),
            base: base.to_path_buf(),
            data: data.to_path_buf(),
            fsync,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = watchdog.try_wait() {
                return None;
            }
            if cluster.try_psql("postgres", "SELECT 1").is_ok() {
                // Reaped when it ends (with this process, as a rule).
                std::thread::spawn(move || watchdog.wait());
                return Some(cluster);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = watchdog.kill();
        let _ = watchdog.wait();
        None
    }

    /// Crashes the server as a power cut would crash its processes: an
    /// immediate shutdown (SIGQUIT), so the WAL not yet written is lost and
    /// the next start recovers from the log; then starts it again on the
    /// same port and data.
    pub fn crash_and_restart(&self) {
        let pid_file = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .expect("postmaster.pid of a running server");
        let pid = pid_file
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let status = Command::new("kill")
            .args(["-QUIT", &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "SIGQUIT to the postmaster {pid}");
        let gone = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                gone.elapsed() < Duration::from_secs(60),
                "the server did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let restarted = Self::launch(&self.bin, &self.base, &self.data, self.port, self.fsync);
        assert!(
            restarted.is_some(),
            "PostgreSQL did not start again; see {}/log",
            self.base.display()
        );
    }

    fn setup(&self) {
        self.psql(
            "postgres",
            &format!(
                "CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'; \
                 CREATE ROLE {NO_PERMISSION_USER} LOGIN;"
            ),
        );
    }

    fn psql_program(&self) -> PathBuf {
        let local = self.bin.join("psql");
        if local.exists() {
            local
        } else {
            PathBuf::from("psql")
        }
    }

    /// Runs `sql` in `db` as the superuser; its rows, one a line.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.psql_program())
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .env_remove("PGPASSWORD")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    #[track_caller]
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql `{sql}` in {db}: {e}"))
    }

    /// A new, empty database, owned by `owner`.
    pub fn database_owned_by(&self, owner: &str) -> String {
        let n = DATABASES.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER {owner}"));
        name
    }

    /// A new, empty database.
    pub fn database(&self) -> String {
        self.database_owned_by("postgres")
    }

    /// The state URL of `db`, as the superuser, in `schema` when given.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }
}

//! A throwaway PostgreSQL cluster on loopback, for the tests and for
//! `breakwater demo --fleet`.
//!
//! [`PgCluster::start`] runs `initdb` into a new temporary directory, starts
//! the server with `pg_ctl`, listening on 127.0.0.1 only at a free port with
//! its Unix socket inside that directory, and creates the `breakwater`
//! database. Dropping the cluster stops the server and removes the
//! directory.
//!
//! The server programs are found by [`find_binaries`]. `initdb` and `pg_ctl`
//! refuse to run as root, so a process running as root runs them as the
//! `postgres` user through `runuser`, and hands the directory to that user.
//!
//! Every call blocks while it runs programs and waits for them; from async
//! code, call it through `tokio::task::spawn_blocking`.
//!
//! ```no_run
//! use breakwater_dispatch::pg_cluster::PgCluster;
//!
//! let cluster = PgCluster::start()?;
//! println!("PostgreSQL on {}", cluster.url());
//! # Ok::<(), breakwater_dispatch::pg_cluster::PgClusterError>(())
//! ```

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::distr::{Alphanumeric, SampleString};
use tempfile::TempDir;

/// The command that installs PostgreSQL's server programs on Debian and
/// Ubuntu; error messages name it.
pub const INSTALL_HINT: &str = "apt-get update && apt-get install -y postgresql";

/// The superuser `initdb` creates, and the owner of [`DATABASE`].
pub const USER: &str = "breakwater";

/// The database created at start.
pub const DATABASE: &str = "breakwater";

/// The user the server runs as when this process runs as root.
const SERVER_OS_USER: &str = "postgres";

/// How long `pg_ctl` may wait for the server to start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// How long a started server may take to accept TCP connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the server processes may take to go after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// The interval between two checks while waiting.
const POLL: Duration = Duration::from_millis(20);

/// How many free ports are tried when the one chosen is taken before the
/// server binds it.
const PORT_ATTEMPTS: usize = 5;

/// The server log lines an error carries.
const ERROR_LOG_LINES: usize = 20;

/// Why a cluster could not be started, stopped or killed.
#[derive(Debug, thiserror::Error)]
pub enum PgClusterError {
    /// PostgreSQL's server programs are not installed.
    #[error(
        "PostgreSQL's server programs (initdb, pg_ctl) were not found (looked in: {looked_in}); \
         install them with: {hint}",
        hint = INSTALL_HINT
    )]
    Missing {
        /// Where they were looked for.
        looked_in: String,
    },
    /// This process runs as root, and the server cannot run as the
    /// `postgres` user.
    #[error(
        "PostgreSQL refuses to run as root, and it cannot run as the `postgres` user: {problem}"
    )]
    RootSetup {
        /// What is missing or wrong.
        problem: String,
    },
    /// A program failed.
    #[error(
        "`{command}` failed ({status}):\n{output}\n--- last lines of the server log ---\n{log_tail}"
    )]
    Command {
        /// The command line.
        command: String,
        /// How it ended (its exit status).
        status: String,
        /// What it printed: its standard error, then its standard output.
        output: String,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// The server started but did not accept TCP connections in time.
    #[error(
        "the PostgreSQL server did not accept connections on 127.0.0.1:{port} within {waited:?}\n\
         --- last lines of the server log ---\n{log_tail}"
    )]
    NotReady {
        /// The port it should listen on.
        port: u16,
        /// How long it was waited for.
        waited: Duration,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// Every port chosen was taken by someone else before the server could
    /// bind it.
    #[error(
        "no free port on 127.0.0.1 for PostgreSQL after {attempts} attempts: each one was taken \
         before the server bound it\n--- last lines of the server log ---\n{log_tail}"
    )]
    NoFreePort {
        /// How many ports were tried.
        attempts: usize,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// Server processes were still alive after SIGKILL.
    #[error("PostgreSQL server processes {pids:?} were still alive {waited:?} after SIGKILL")]
    StillRunning {
        /// Their process ids.
        pids: Vec<u32>,
        /// How long they were waited for.
        waited: Duration,
    },
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A function that wraps an I/O error with what was being done.
fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> PgClusterError {
    let context = context.into();
    move |source| PgClusterError::Io { context, source }
}

/// The directory holding PostgreSQL's server programs (`initdb`, `pg_ctl`,
/// `postgres`).
///
/// Looks, in order, at `pg_config --bindir`, at the newest
/// `/usr/lib/postgresql/VERSION/bin` (where Debian and Ubuntu install them,
/// off `PATH`), then along `PATH`, following a symbolic link to `initdb`
/// (such as `/usr/local/bin/initdb`) to the directory it points into.
///
/// # Errors
///
/// [`PgClusterError::Missing`] when none of them has the programs; its
/// message names the command that installs them.
pub fn find_binaries() -> Result<PathBuf, PgClusterError> {
    find_binaries_in(
        OsStr::new("pg_config"),
        Path::new("/usr/lib/postgresql"),
        std::env::var_os("PATH"),
    )
}

/// [`find_binaries`] with its three places given.
fn find_binaries_in(
    pg_config: &OsStr,
    versions_dir: &Path,
    path: Option<std::ffi::OsString>,
) -> Result<PathBuf, PgClusterError> {
    let mut looked_in = Vec::new();

    match Command::new(pg_config)
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server_programs(&dir) {
                return Ok(dir);
            }
            looked_in.push(format!("{} (from pg_config --bindir)", dir.display()));
        }
        Ok(_) => looked_in.push("pg_config --bindir (it failed)".to_string()),
        Err(_) => looked_in.push("pg_config --bindir (no pg_config on PATH)".to_string()),
    }

    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(versions_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = name
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    if let Some((_, dir)) = versions.iter().find(|(_, dir)| has_server_programs(dir)) {
        return Ok(dir.clone());
    }
    looked_in.push(format!("{}/*/bin", versions_dir.display()));

    for dir in path.iter().flat_map(std::env::split_paths) {
        let initdb = dir.join("initdb");
        if !initdb.is_file() {
            continue;
        }
        if let Some(real_dir) = fs::canonicalize(&initdb)
            .ok()
            .and_then(|real| real.parent().map(Path::to_path_buf))
        {
            if has_server_programs(&real_dir) {
                return Ok(real_dir);
            }
        }
        if has_server_programs(&dir) {
            return Ok(dir);
        }
    }
    looked_in.push("the directories on PATH".to_string());

    Err(PgClusterError::Missing {
        looked_in: looked_in.join(", "),
    })
}

/// Whether `dir` holds executable `initdb`, `pg_ctl` and `postgres`.
fn has_server_programs(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"].iter().all(|name| {
        fs::metadata(dir.join(name))
            .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// The OS user the server programs run as when this process runs as root.
#[derive(Debug, Clone)]
struct ServerUser {
    runuser: PathBuf,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl ServerUser {
    /// The `postgres` user and `runuser`, checked.
    fn find() -> Result<Self, PgClusterError> {
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
            .iter()
            .map(PathBuf::from)
            .chain(
                std::env::var_os("PATH")
                    .iter()
                    .flat_map(std::env::split_paths)
                    .map(|dir| dir.join("runuser")),
            )
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| PgClusterError::RootSetup {
                problem: "`runuser` (from util-linux) was not found".to_string(),
            })?;
        let uid = id_numbers("-u")?;
        let gid = id_numbers("-g")?;
        let groups = id_numbers("-G")?;
        match (uid.first(), gid.first()) {
            (Some(&uid), Some(&gid)) => Ok(Self {
                runuser,
                uid,
                gid,
                groups,
            }),
            _ => Err(PgClusterError::RootSetup {
                problem: format!("`id` printed no number for the `{SERVER_OS_USER}` user"),
            }),
        }
    }

    /// Whether this user may pass through `dir` (search permission).
    fn can_traverse(&self, dir: &Path) -> bool {
        let Ok(meta) = fs::metadata(dir) else {
            return false;
        };
        let mode = meta.mode();
        mode & 0o001 != 0
            || (meta.uid() == self.uid && mode & 0o100 != 0)
            || (self.groups.contains(&meta.gid()) && mode & 0o010 != 0)
    }

    /// Makes `path` owned by this user.
    fn own(&self, path: &Path) -> Result<(), PgClusterError> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(io_error(format!(
            "could not make {} owned by the `{SERVER_OS_USER}` user",
            path.display()
        )))
    }
}

/// The numbers `id FLAG postgres` prints.
fn id_numbers(flag: &str) -> Result<Vec<u32>, PgClusterError> {
    let out = Command::new("id")
        .args([flag, SERVER_OS_USER])
        .stdin(Stdio::null())
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| PgClusterError::RootSetup {
            problem: format!("could not run `id {flag} {SERVER_OS_USER}`: {e}"),
        })?;
    if !out.status.success() {
        return Err(PgClusterError::RootSetup {
            problem: format!(
                "there is no `{SERVER_OS_USER}` user (`id {flag} {SERVER_OS_USER}`: {}); \
                 the postgresql package creates it: {INSTALL_HINT}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|n| {
            n.parse::<u32>().map_err(|_| PgClusterError::RootSetup {
                problem: format!("`id {flag} {SERVER_OS_USER}` printed {n:?}, not a number"),
            })
        })
        .collect()
}

/// A PostgreSQL server of its own, on 127.0.0.1, in a temporary directory.
///
/// It is reached over TCP as [`USER`] with [`password`](Self::password)
/// (SCRAM-SHA-256), or over the Unix socket in
/// [`socket_dir`](Self::socket_dir) without a password. `fsync` is on, so
/// committed data survives [`kill`](Self::kill). Dropping it stops the
/// server at once and removes the directory.
pub struct PgCluster {
    bin_dir: PathBuf,
    /// The temporary directory (canonical path) holding everything else.
    root: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    server_user: Option<ServerUser>,
    port: u16,
    password: String,
    running: bool,
    /// Removes the directory when dropped, after [`Drop::drop`] has stopped
    /// the server.
    _dir: TempDir,
}

impl fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCluster")
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .field("running", &self.running)
            .field("as_postgres_user", &self.server_user.is_some())
            .field("password", &"<hidden>")
            .finish()
    }
}

/// How a `pg_ctl start` failed.
enum StartFailure {
    /// The port was taken before the server could bind it.
    PortTaken(PgClusterError),
    /// Anything else.
    Other(PgClusterError),
}

impl From<PgClusterError> for StartFailure {
    fn from(e: PgClusterError) -> Self {
        Self::Other(e)
    }
}

impl PgCluster {
    /// Creates a cluster in a new temporary directory, starts it on a free
    /// port of 127.0.0.1, waits until it accepts connections and creates
    /// the [`DATABASE`] database.
    ///
    /// Takes about a second or two: `initdb` does most of the work.
    ///
    /// # Errors
    ///
    /// [`PgClusterError::Missing`] when PostgreSQL is not installed;
    /// otherwise the step that failed, with what the program printed and
    /// the end of the server log.
    pub fn start() -> Result<Self, PgClusterError> {
        let bin_dir = find_binaries()?;
        let dir = tempfile::Builder::new()
            .prefix("breakwater-pg-")
            .tempdir()
            .map_err(io_error(format!(
                "could not create a temporary directory in {}",
                std::env::temp_dir().display()
            )))?;
        let root = fs::canonicalize(dir.path()).map_err(io_error(format!(
            "could not resolve the temporary directory {}",
            dir.path().display()
        )))?;
        // A new file or directory is owned by the effective user: uid 0 is
        // root.
        let as_root = fs::metadata(&root)
            .map_err(io_error(format!("could not read {}", root.display())))?
            .uid()
            == 0;
        let server_user = if as_root {
            Some(ServerUser::find()?)
        } else {
            None
        };

        let mut cluster = Self {
            bin_dir,
            data_dir: root.join("data"),
            socket_dir: root.join("socket"),
            log_file: root.join("server.log"),
            root,
            server_user,
            port: 0,
            password: Alphanumeric.sample_string(&mut rand::rng(), 32),
            running: false,
            _dir: dir,
        };
        cluster.prepare_directory()?;
        cluster.init_data_dir()?;
        cluster.start_on_a_free_port()?;
        cluster.create_database()?;
        Ok(cluster)
    }

    /// The TCP port on 127.0.0.1. It stays the same across
    /// [`stop`](Self::stop) and [`start_again`](Self::start_again).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's name: [`USER`].
    pub fn user(&self) -> &str {
        USER
    }

    /// The superuser's password, random for each cluster. It is made of
    /// ASCII letters and digits only, so it needs no escaping in a URL or a
    /// connection string.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The database created at start: [`DATABASE`].
    pub fn database(&self) -> &str {
        DATABASE
    }

    /// `postgres://breakwater@127.0.0.1:PORT/breakwater`: without the
    /// password, fit for logs and messages.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// [`url`](Self::url) with the password in it, for the programs and
    /// tests that connect. Keep it out of logs.
    pub fn url_with_password(&self) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{DATABASE}",
            self.password, self.port
        )
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory of the server's Unix socket (`.s.PGSQL.PORT`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Whether the server was started and has not been stopped or killed
    /// since (it may still have died on its own).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Stops the server (`pg_ctl stop -m fast`: open sessions are ended,
    /// committed data is kept) and waits until it has exited. Stopping a
    /// stopped server does nothing.
    ///
    /// # Errors
    ///
    /// [`PgClusterError::Command`] when `pg_ctl` fails, with its output
    /// and the end of the server log.
    pub fn stop(&mut self) -> Result<(), PgClusterError> {
        if !self.running && !self.pid_file().exists() {
            return Ok(());
        }
        let mut cmd = self.server_command("pg_ctl");
        cmd.args(["stop", "-m", "fast", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-D"])
            .arg(&self.data_dir);
        self.run_checked(cmd)?;
        self.running = false;
        Ok(())
    }

    /// Starts the stopped (or killed) server again: same data, same port.
    /// Waits until it accepts connections. Starting a running server does
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`PgClusterError::Command`] when `pg_ctl` fails (for instance
    /// because another program took the port meanwhile), with its output
    /// and the end of the server log; [`PgClusterError::NotReady`] when the
    /// server does not accept connections in time.
    pub fn start_again(&mut self) -> Result<(), PgClusterError> {
        if self.running {
            return Ok(());
        }
        match self.pg_ctl_start() {
            Ok(()) => Ok(()),
            Err(StartFailure::PortTaken(e) | StartFailure::Other(e)) => Err(e),
        }
    }

    /// Kills the server with SIGKILL, its postmaster and every process it
    /// started, as a crash would, and waits until they are gone. What was
    /// committed is recovered by [`start_again`](Self::start_again).
    /// Killing a stopped server does nothing.
    ///
    /// # Errors
    ///
    /// [`PgClusterError::StillRunning`] when server processes are still
    /// alive after a while; [`PgClusterError::Io`] when the lock files
    /// the dead server left cannot be removed.
    pub fn kill(&mut self) -> Result<(), PgClusterError> {
        // The postmaster first, so that it starts no process meanwhile. The
        // pid file may be stale and its pid reused: only a process working
        // in this data directory is this server's.
        let processes = self.server_processes();
        if let Some(pid) = self.postmaster_pid().filter(|pid| processes.contains(pid)) {
            self.send_sigkill(pid);
        }
        let deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            let left = self.server_processes();
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(PgClusterError::StillRunning {
                    pids: left,
                    waited: KILL_TIMEOUT,
                });
            }
            for &pid in &left {
                self.send_sigkill(pid);
            }
            std::thread::sleep(POLL);
        }
        // A killed postmaster leaves its lock files behind. The server
        // would take them for a running postmaster while the dead one is a
        // zombie not yet reaped (a container's init may be slow to reap).
        let socket_lock = self.socket_dir.join(format!(".s.PGSQL.{}.lock", self.port));
        for lock in [self.pid_file(), socket_lock] {
            match fs::remove_file(&lock) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(io_error(format!("could not remove {}", lock.display()))(e));
                }
            }
        }
        self.running = false;
        Ok(())
    }

    /// The last `lines` lines of the server log, or a note saying why
    /// there are none.
    pub fn log_tail(&self, lines: usize) -> String {
        match fs::read(&self.log_file) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                if all.is_empty() {
                    return "(the server log is empty)".to_string();
                }
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                "(no server log yet: the server was not started)".to_string()
            }
            Err(e) => format!(
                "(could not read the server log {}: {e})",
                self.log_file.display()
            ),
        }
    }

    /// Hands the temporary directory to the server's user when running as
    /// root, and creates the socket directory.
    fn prepare_directory(&self) -> Result<(), PgClusterError> {
        if let Some(user) = &self.server_user {
            if let Some(blocked) = self
                .root
                .ancestors()
                .skip(1)
                .find(|dir| !user.can_traverse(dir))
            {
                return Err(PgClusterError::RootSetup {
                    problem: format!(
                        "it may not enter {} (no search permission), on the way to the temporary \
                         directory {}; set TMPDIR to a directory it can reach, such as /tmp",
                        blocked.display(),
                        self.root.display()
                    ),
                });
            }
            user.own(&self.root)?;
        }
        fs::create_dir(&self.socket_dir).map_err(io_error(format!(
            "could not create {}",
            self.socket_dir.display()
        )))?;
        fs::set_permissions(&self.socket_dir, fs::Permissions::from_mode(0o700)).map_err(
            io_error(format!(
                "could not set the permissions of {}",
                self.socket_dir.display()
            )),
        )?;
        self.own(&self.socket_dir)
    }

    /// Runs `initdb` with the superuser's password, in the C.UTF-8 locale
    /// or, where that is missing, in C.
    fn init_data_dir(&self) -> Result<(), PgClusterError> {
        let pwfile = self.root.join("password");
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pwfile)
            .and_then(|mut file| file.write_all(format!("{}\n", self.password).as_bytes()));
        written.map_err(io_error(format!("could not write {}", pwfile.display())))?;
        self.own(&pwfile)?;

        let mut result = self.initdb(&pwfile, "C.UTF-8");
        if let Err(PgClusterError::Command { output, .. }) = &result {
            if output.contains("locale") {
                if self.data_dir.exists() {
                    fs::remove_dir_all(&self.data_dir).map_err(io_error(format!(
                        "could not remove {}",
                        self.data_dir.display()
                    )))?;
                }
                result = self.initdb(&pwfile, "C");
            }
        }
        // The password is in the cluster now; the file is of no more use.
        let _ = fs::remove_file(&pwfile);
        result?;

        let conf = self.data_dir.join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut file| {
                file.write_all(b"\n# breakwater's throwaway cluster\ninclude = 'breakwater.conf'\n")
            })
            .map_err(io_error(format!("could not append to {}", conf.display())))
    }

    /// One `initdb` run.
    fn initdb(&self, pwfile: &Path, locale: &str) -> Result<(), PgClusterError> {
        let mut cmd = self.server_command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-U", USER])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                &format!("--locale={locale}"),
                "--no-sync",
            ]);
        self.run_checked(cmd).map(drop)
    }

    /// Writes the settings file, port included.
    fn write_settings(&self) -> Result<(), PgClusterError> {
        let path = self.data_dir.join("breakwater.conf");
        let settings = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = {socket_dir}\n\
             max_connections = 200\n\
             shared_buffers = 32MB\n\
             fsync = on\n\
             log_min_messages = warning\n",
            port = self.port,
            socket_dir = conf_string(&self.socket_dir.to_string_lossy()),
        );
        fs::write(&path, settings)
            .map_err(io_error(format!("could not write {}", path.display())))?;
        self.own(&path)
    }

    /// Starts the server on a free port, choosing another when the port is
    /// taken before the server binds it.
    fn start_on_a_free_port(&mut self) -> Result<(), PgClusterError> {
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            self.write_settings()?;
            match self.pg_ctl_start() {
                Ok(()) => return Ok(()),
                Err(StartFailure::PortTaken(_)) => continue,
                Err(StartFailure::Other(e)) => return Err(e),
            }
        }
        Err(PgClusterError::NoFreePort {
            attempts: PORT_ATTEMPTS,
            log_tail: self.log_tail(ERROR_LOG_LINES),
        })
    }

    /// `pg_ctl start`, then a wait until the port accepts connections.
    fn pg_ctl_start(&mut self) -> Result<(), StartFailure> {
        let log_before = fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.server_command("pg_ctl");
        cmd.args(["start", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-D"])
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file);
        if let Err(e) = self.run_checked(cmd) {
            return Err(
                if self
                    .log_since(log_before)
                    .contains("Address already in use")
                {
                    StartFailure::PortTaken(e)
                } else {
                    StartFailure::Other(e)
                },
            );
        }
        self.running = true;
        self.wait_until_accepting()?;
        Ok(())
    }

    /// Waits until 127.0.0.1:port accepts a TCP connection.
    fn wait_until_accepting(&self) -> Result<(), PgClusterError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if started.elapsed() >= READY_TIMEOUT {
                return Err(PgClusterError::NotReady {
                    port: self.port,
                    waited: READY_TIMEOUT,
                    log_tail: self.log_tail(ERROR_LOG_LINES),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// `CREATE DATABASE breakwater`, through the Unix socket (trusted).
    fn create_database(&self) -> Result<(), PgClusterError> {
        let psql = self.bin_dir.join("psql");
        let mut cmd = if psql.is_file() {
            Command::new(psql)
        } else {
            Command::new("psql")
        };
        self.prepare(&mut cmd);
        cmd.args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", USER, "-d", "postgres", "-c"])
            .arg(format!("CREATE DATABASE {DATABASE}"));
        self.run_checked(cmd).map(drop)
    }

    /// A command running one of the server programs, as the `postgres`
    /// user when this process is root.
    fn server_command(&self, program: &str) -> Command {
        let program = self.bin_dir.join(program);
        let mut cmd = match &self.server_user {
            Some(user) => {
                let mut cmd = Command::new(&user.runuser);
                cmd.args(["-u", SERVER_OS_USER, "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        self.prepare(&mut cmd);
        cmd
    }

    /// What every command gets: no input, a working directory the server's
    /// user can enter (the server programs fail in one they cannot), none
    /// of the caller's `PG*` variables (they would change the defaults) and
    /// untranslated messages.
    fn prepare(&self, cmd: &mut Command) {
        cmd.current_dir(&self.root)
            .stdin(Stdio::null())
            .env("LC_ALL", "C");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PG") {
                cmd.env_remove(name);
            }
        }
    }

    /// Runs `cmd`; a failure carries its output and the server log's end.
    fn run_checked(&self, mut cmd: Command) -> Result<Output, PgClusterError> {
        let command = describe(&cmd);
        let out = cmd
            .output()
            .map_err(io_error(format!("could not run `{command}`")))?;
        if out.status.success() {
            return Ok(out);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let output = [stderr.trim(), stdout.trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        Err(PgClusterError::Command {
            command,
            status: out.status.to_string(),
            output: if output.is_empty() {
                "(it printed nothing)".to_string()
            } else {
                output
            },
            log_tail: self.log_tail(ERROR_LOG_LINES),
        })
    }

    /// What the server logged after the first `offset` bytes.
    fn log_since(&self, offset: u64) -> String {
        let bytes = fs::read(&self.log_file).unwrap_or_default();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// Makes `path` owned by the server's user, when running as root.
    fn own(&self, path: &Path) -> Result<(), PgClusterError> {
        match &self.server_user {
            Some(user) => user.own(path),
            None => Ok(()),
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.data_dir.join("postmaster.pid")
    }

    /// The postmaster's process id, from its pid file.
    fn postmaster_pid(&self) -> Option<u32> {
        fs::read_to_string(self.pid_file())
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The live processes of this server: every server process works in
    /// the data directory. Zombies (dead, not yet reaped) do not count.
    fn server_processes(&self) -> Vec<u32> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == self.data_dir)
                    && !is_zombie(*pid)
            })
            .collect()
    }

    /// SIGKILL to one process, through `pg_ctl kill` (as the server's
    /// user); a process already gone is no error.
    fn send_sigkill(&self, pid: u32) {
        let mut cmd = self.server_command("pg_ctl");
        cmd.args(["kill", "KILL", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = cmd.status();
    }
}

impl Drop for PgCluster {
    /// Stops the server at once (`pg_ctl stop -m immediate`; SIGKILL when
    /// that fails); the temporary directory is removed afterwards.
    fn drop(&mut self) {
        if !self.running && !self.pid_file().exists() {
            return;
        }
        let mut cmd = self.server_command("pg_ctl");
        cmd.args([
            "stop",
            "-m",
            "immediate",
            "-w",
            "-t",
            PG_CTL_TIMEOUT_SECS,
            "-D",
        ])
        .arg(&self.data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let stopped = cmd.status().is_ok_and(|status| status.success());
        if !stopped {
            let _ = self.kill();
        }
        self.running = false;
    }
}

/// A port of 127.0.0.1 free at the time of the call: the one the system
/// gives to a listener bound to port 0, closed at once.
fn free_port() -> Result<u16, PgClusterError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(io_error("could not bind a TCP listener on 127.0.0.1:0"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(io_error("could not read the address of a TCP listener"))
}

/// `s` as a quoted string of postgresql.conf.
fn conf_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The command line of `cmd`, for messages.
fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether process `pid` is a zombie (or gone).
fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The state follows the command name, which is in parentheses and may
    // hold spaces or parentheses itself.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_programs_name_the_install_command() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_binaries_in(
            OsStr::new("/nonexistent/pg_config"),
            &empty.path().join("postgresql"),
            Some(empty.path().as_os_str().to_owned()),
        )
        .unwrap_err();
        assert!(matches!(err, PgClusterError::Missing { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("PostgreSQL's server programs (initdb, pg_ctl) were not found"),
            "{message}"
        );
        assert!(
            message.ends_with("install them with: apt-get update && apt-get install -y postgresql"),
            "{message}"
        );
        assert!(message.contains("pg_config --bindir"), "{message}");
        assert!(message.contains("postgresql/*/bin"), "{message}");
        assert!(message.contains("PATH"), "{message}");
    }

    #[test]
    fn the_newest_version_directory_wins_and_a_path_symlink_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let versions = dir.path().join("postgresql");
        for version in ["9.6", "15", "13", "not-a-version"] {
            let bin = versions.join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            for program in ["initdb", "pg_ctl", "postgres"] {
                let path = bin.join(program);
                fs::write(&path, "").unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let found =
            find_binaries_in(OsStr::new("/nonexistent/pg_config"), &versions, None).unwrap();
        assert_eq!(found, versions.join("15").join("bin"));

        // Only on PATH, as a symbolic link to initdb.
        let on_path = dir.path().join("local-bin");
        fs::create_dir(&on_path).unwrap();
        std::os::unix::fs::symlink(versions.join("13/bin/initdb"), on_path.join("initdb")).unwrap();
        let found = find_binaries_in(
            OsStr::new("/nonexistent/pg_config"),
            &dir.path().join("nothing"),
            Some(on_path.into_os_string()),
        )
        .unwrap();
        assert_eq!(found, fs::canonicalize(versions.join("13/bin")).unwrap());
    }

    #[test]
    fn conf_strings_are_quoted() {
        assert_eq!(conf_string("/tmp/a'b\\c"), "'/tmp/a''b\\\\c'");
    }

    #[test]
    fn zombie_state_is_read_after_the_command_name() {
        assert!(!is_zombie(std::process::id()));
        assert!(is_zombie(u32::MAX));
    }
}

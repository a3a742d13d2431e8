//! The throwaway PostgreSQL cluster: it answers on loopback to its password
//! only, keeps its data across a stop or a crash, and is gone once dropped.
//!
//! These tests need PostgreSQL's server programs. Without them they fail,
//! with the message that says what to install; they never skip.

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use breakwater_dispatch::pg_cluster::{PgCluster, PgClusterError};
use support::wait_until;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

const LIMIT: Duration = Duration::from_secs(30);

fn start() -> PgCluster {
    ok(PgCluster::start())
}

/// The value, or a panic with the error's message (which says what to
/// install when PostgreSQL is missing).
fn ok<T>(result: Result<T, PgClusterError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

async fn connect(cluster: &PgCluster, password: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={} password={password} dbname={} connect_timeout=10",
            cluster.port(),
            cluster.user(),
            cluster.database()
        ),
        NoTls,
    )
    .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn connect_ok(cluster: &PgCluster) -> Client {
    connect(cluster, cluster.password())
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", cluster.url()))
}

fn accepts_tcp(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

async fn show(client: &Client, setting: &str) -> String {
    client
        .query_one(&format!("SHOW {setting}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn starts_on_loopback_and_answers_queries() {
    let cluster = start();
    let port = cluster.port();
    assert_ne!(port, 0);
    assert!(cluster.is_running());
    assert_eq!(cluster.user(), "breakwater");
    assert_eq!(cluster.database(), "breakwater");
    assert!(cluster.password().len() >= 16);
    assert_eq!(
        cluster.url(),
        format!("postgres://breakwater@127.0.0.1:{port}/breakwater")
    );
    assert!(!cluster.url().contains(cluster.password()));
    assert_eq!(
        cluster.url_with_password(),
        format!(
            "postgres://breakwater:{}@127.0.0.1:{port}/breakwater",
            cluster.password()
        )
    );
    assert!(!format!("{cluster:?}").contains(cluster.password()));

    let client = connect_ok(&cluster).await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    // The database belongs to the breakwater superuser.
    let row = client
        .query_one(
            "SELECT current_database(), pg_get_userbyid(datdba), \
                    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
             FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "breakwater");
    assert_eq!(row.get::<_, String>(1), "breakwater");
    assert!(row.get::<_, bool>(2));

    assert_eq!(show(&client, "listen_addresses").await, "127.0.0.1");
    assert_eq!(show(&client, "port").await, port.to_string());
    assert_eq!(show(&client, "fsync").await, "on");
    assert_eq!(show(&client, "max_connections").await, "200");
    assert_eq!(show(&client, "shared_buffers").await, "32MB");
    assert_eq!(show(&client, "server_encoding").await, "UTF8");
    let socket_dir = show(&client, "unix_socket_directories").await;
    assert_eq!(socket_dir, cluster.socket_dir().to_string_lossy());
    assert!(cluster
        .socket_dir()
        .join(format!(".s.PGSQL.{port}"))
        .exists());
    assert!(cluster
        .socket_dir()
        .starts_with(std::env::temp_dir().canonicalize().unwrap()));
}

#[tokio::test]
async fn a_wrong_or_missing_password_is_refused() {
    let cluster = start();
    let err = connect(&cluster, "not-the-password")
        .await
        .expect_err("a wrong password was accepted");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err}");

    let no_password = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=breakwater dbname=breakwater connect_timeout=10",
            cluster.port()
        ),
        NoTls,
    )
    .await;
    assert!(no_password.is_err(), "no password at all was accepted");

    // The right one still works.
    connect_ok(&cluster).await;
}

#[tokio::test]
async fn stop_then_start_again_keeps_the_data_and_the_port() {
    let mut cluster = start();
    let port = cluster.port();
    let client = connect_ok(&cluster).await;
    client
        .batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before the stop')")
        .await
        .unwrap();

    ok(cluster.stop());
    assert!(!cluster.is_running());
    assert!(!accepts_tcp(port), "the port still accepts after stop()");
    assert!(connect(&cluster, cluster.password()).await.is_err());
    assert!(client.query_one("SELECT 1", &[]).await.is_err());
    // Stopping again does nothing.
    ok(cluster.stop());

    ok(cluster.start_again());
    assert!(cluster.is_running());
    assert_eq!(cluster.port(), port);
    let client = connect_ok(&cluster).await;
    let v: String = client
        .query_one("SELECT v FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "before the stop");
}

#[tokio::test]
async fn start_again_on_a_taken_port_fails_with_the_reason() {
    let mut cluster = start();
    let port = cluster.port();
    ok(cluster.stop());
    let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();

    let err = cluster
        .start_again()
        .expect_err("started on a port someone else listens on");
    assert!(matches!(err, PgClusterError::Command { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("pg_ctl start"), "{message}");
    assert!(message.contains("could not start server"), "{message}");
    assert!(message.contains("Address already in use"), "{message}");
    assert!(!cluster.is_running());

    drop(squatter);
    ok(cluster.start_again());
    connect_ok(&cluster).await;
}

#[tokio::test]
async fn kill_then_start_again_recovers_what_was_committed() {
    let mut cluster = start();
    let port = cluster.port();
    let client = connect_ok(&cluster).await;
    client
        .batch_execute(
            "CREATE TABLE kept (v int); INSERT INTO kept SELECT generate_series(1, 1000)",
        )
        .await
        .unwrap();

    ok(cluster.kill());
    assert!(!cluster.is_running());
    assert!(!accepts_tcp(port), "the port still accepts after kill()");
    assert!(!cluster.data_dir().join("postmaster.pid").exists());

    ok(cluster.start_again());
    let client = connect_ok(&cluster).await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1000);
}

#[tokio::test]
async fn dropping_stops_the_server_and_removes_its_directory() {
    let cluster = start();
    let port = cluster.port();
    let dir = cluster.data_dir().parent().unwrap().to_path_buf();
    assert!(dir.is_dir());
    connect_ok(&cluster).await;
    drop(cluster);
    wait_until("the dropped server to close its port", LIMIT, || {
        !accepts_tcp(port)
    })
    .await;
    assert!(!dir.exists(), "{} is still there", dir.display());

    // After a kill, too.
    let mut cluster = start();
    let dir = cluster.data_dir().parent().unwrap().to_path_buf();
    ok(cluster.kill());
    drop(cluster);
    assert!(!dir.exists(), "{} is still there", dir.display());
}

#[tokio::test]
async fn two_clusters_at_once_get_their_own_ports() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(start);
        let b = s.spawn(start);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    assert_ne!(a.password(), b.password());
    for cluster in [&a, &b] {
        let client = connect_ok(cluster).await;
        let port: String = client
            .query_one("SELECT current_setting('port')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(port, cluster.port().to_string());
    }
    // One's password does not open the other.
    assert!(connect(&a, b.password()).await.is_err());
}

#[test]
fn the_server_log_can_be_read() {
    let cluster = start();
    let tail = cluster.log_tail(50);
    assert!(
        tail.contains("database system is ready to accept connections"),
        "{tail}"
    );
    assert!(cluster.log_tail(1).lines().count() <= 1);
}

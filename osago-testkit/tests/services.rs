//! Each service starts privately, survives what it should across a stop, a
//! kill and a restart, and is gone once dropped.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use osago_testkit::{Postgres, Tansu, Valkey, ValkeyOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn postgres_keeps_data_across_stop_kill_and_restart() {
    let mut pg = Postgres::start().await;
    assert_ne!(pg.port, 5432);
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port)
    );
    let url = pg.create_database("app").await;
    assert_eq!(
        url,
        format!("postgres://postgres@127.0.0.1:{}/app", pg.port)
    );

    psql(
        pg.port,
        "app",
        "create table t (v text); insert into t values ('kept')",
    );
    pg.stop().await;
    assert!(!accepts(pg.port).await, "stopped server still listens");
    pg.restart().await;
    assert_eq!(psql(pg.port, "app", "select v from t"), "kept");

    psql(pg.port, "app", "insert into t values ('after kill')");
    pg.kill().await;
    assert!(!accepts(pg.port).await, "killed server still listens");
    pg.restart().await;
    assert_eq!(
        psql(
            pg.port,
            "app",
            "select string_agg(v, ',' order by v) from t"
        ),
        "after kill,kept"
    );

    let port = pg.port;
    drop(pg);
    assert!(!accepts(port).await, "dropped server still listens");
}

#[tokio::test]
async fn postgres_instances_are_independent() {
    let (a, b) = tokio::join!(Postgres::start(), Postgres::start());
    assert_ne!(a.port, b.port);
    psql(a.port, "postgres", "create table only_in_a (x int)");
    assert_eq!(
        psql(
            b.port,
            "postgres",
            "select count(*) from pg_tables where tablename = 'only_in_a'"
        ),
        "0"
    );
}

#[tokio::test]
async fn valkey_with_appendonly_keeps_keys_across_stop_and_kill() {
    let mut valkey = Valkey::start_with(ValkeyOptions {
        appendonly: true,
        ..ValkeyOptions::default()
    })
    .await;
    assert_ne!(valkey.port, 6379);
    assert_eq!(valkey.url(), format!("redis://127.0.0.1:{}", valkey.port));

    assert_eq!(resp(valkey.port, &["SET", "k", "v"]).await, "+OK");
    valkey.stop().await;
    assert!(!accepts(valkey.port).await, "stopped server still listens");
    valkey.restart().await;
    assert_eq!(resp(valkey.port, &["GET", "k"]).await, "$1");

    assert_eq!(resp(valkey.port, &["SET", "k2", "v2"]).await, "+OK");
    valkey.kill().await;
    assert!(!accepts(valkey.port).await, "killed server still listens");
    valkey.restart().await;
    assert_eq!(resp(valkey.port, &["GET", "k2"]).await, "$2");
}

#[tokio::test]
async fn valkey_without_appendonly_starts_empty() {
    let mut valkey = Valkey::start().await;
    assert_eq!(resp(valkey.port, &["SET", "k", "v"]).await, "+OK");
    valkey.kill().await;
    valkey.restart().await;
    assert_eq!(resp(valkey.port, &["GET", "k"]).await, "$-1");

    let port = valkey.port;
    drop(valkey);
    assert!(!accepts(port).await, "dropped server still listens");
}

#[tokio::test]
async fn tansu_answers_after_kill_and_restart() {
    let mut tansu = Tansu::start().await;
    assert_eq!(tansu.bootstrap(), format!("127.0.0.1:{}", tansu.port));
    assert!(api_versions(tansu.port).await);

    tansu.kill().await;
    assert!(!accepts(tansu.port).await, "killed broker still listens");
    tansu.restart().await;
    assert!(api_versions(tansu.port).await);

    tansu.stop().await;
    assert!(!accepts(tansu.port).await, "stopped broker still listens");
    tansu.restart().await;
    assert!(api_versions(tansu.port).await);

    let port = tansu.port;
    drop(tansu);
    assert!(!accepts(port).await, "dropped broker still listens");
}

/// Runs `sql` with psql (unaligned, tuples only) and returns its output.
fn psql(port: u16, db: &str, sql: &str) -> String {
    let out = Command::new(psql_path())
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .arg("-p")
        .arg(port.to_string())
        .args(["-U", "postgres", "-d", db, "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn psql_path() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("OSAGO_PG_BIN")
        .map(|dir| PathBuf::from(dir).join("psql"))
        .into_iter()
        .collect();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut dirs: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        dirs.sort_by_key(|d| {
            d.file_name()
                .and_then(|n| n.to_str()?.split('.').next()?.parse::<u32>().ok())
        });
        candidates.extend(dirs.into_iter().rev().map(|d| d.join("bin/psql")));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("psql"))
}

/// Whether something accepts TCP connections on the port.
async fn accepts(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect(("127.0.0.1", port))
        )
        .await,
        Ok(Ok(_))
    )
}

/// One RESP command; the first line of the reply.
async fn resp(port: u16, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("valkey accepts");
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 512];
    let n = stream.read(&mut buf).await.expect("read");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A Kafka `ApiVersions` v0 round trip; whether it answered with no error.
async fn api_versions(port: u16) -> bool {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tansu accepts");
    let client = b"test";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&7i32.to_be_bytes());
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await.expect("write");
    let _size = stream.read_i32().await.expect("size");
    let correlation = stream.read_i32().await.expect("correlation id");
    let error = stream.read_i16().await.expect("error code");
    correlation == 7 && error == 0
}

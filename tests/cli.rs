//! The command line: invalid settings stop the start with a message naming the key.

use std::process::Command;

fn serve(args: &[&str]) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&dir)
        .args(args)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_configuration_fails_at_start_with_the_key_named() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    for (args, needle) in [
        (vec!["--set", "log.segment.bytes=abc"], "log.segment.bytes"),
        (vec!["--set", "num.partitions=0"], "num.partitions"),
        (vec!["--listen", "nowhere"], "listen"),
        (
            vec!["--set", "default.replication.factor=3"],
            "default.replication.factor",
        ),
        (
            vec!["--set", "queued.max.request.bytes=2048"],
            "queued.max.request.bytes",
        ),
        (
            vec!["--config", "/nonexistent/sluice.properties"],
            "config file",
        ),
        (vec!["--frobnicate"], "unknown argument"),
        (
            vec![
                "--listen",
                &format!("127.0.0.1:{}", busy.local_addr().unwrap().port()),
            ],
            "cannot listen",
        ),
    ] {
        let (code, stderr) = serve(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

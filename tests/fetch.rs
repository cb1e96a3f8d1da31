//! `mnist fetch` against mirrors on loopback: failing mirrors are skipped, content is verified.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;

use common::*;

const FASHION: &str = "/usr/share/datasets/fashion-mnist";

/// Serves `/good/<file>` from Debian's Fashion-MNIST, `/corrupt/<file>` as gzip of the wrong
/// bytes and anything else as 404, until the test process ends. Returns the base URL.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut request = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            reader.read_line(&mut request).unwrap();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap() <= 2 {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            let name = path.rsplit('/').next().unwrap_or_default();
            let body = if path.starts_with("/good/") {
                std::fs::read(PathBuf::from(FASHION).join(name)).ok()
            } else if path.starts_with("/corrupt/") {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                gz.write_all(b"not the dataset").unwrap();
                Some(gz.finish().unwrap())
            } else {
                None
            };
            let response = match body {
                Some(body) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend(body);
                    r
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    base
}

#[test]
fn fetch_skips_failing_mirrors_and_verifies_the_content() {
    assert!(
        PathBuf::from(FASHION).is_dir(),
        "needs Debian's dataset-fashion-mnist (installed by .ci/run)"
    );
    let base = serve();
    let out = tempfile::tempdir().unwrap();
    let output = succeeds(
        mnist()
            .args(["fetch", "--dataset", "fashion", "--output"])
            .arg(out.path())
            .args(["--mirror", &format!("{base}/missing")])
            .args(["--mirror", &format!("{base}/corrupt")])
            .args(["--mirror", &format!("{base}/good")]),
    );
    let log = stderr(&output);
    assert!(log.contains("404"), "{log}");
    assert!(log.contains("checksum mismatch"), "{log}");
    assert_eq!(log.matches("checksum verified").count(), 4, "{log}");
    for name in listing(out.path()) {
        let ours = std::fs::read(out.path().join(&name)).unwrap();
        assert_eq!(
            ours,
            std::fs::read(PathBuf::from(FASHION).join(&name)).unwrap()
        );
    }
    assert_eq!(listing(out.path()).len(), 4);

    // Present and valid: nothing is downloaded again.
    let output = succeeds(
        mnist()
            .args(["fetch", "--dataset", "fashion", "--output"])
            .arg(out.path())
            .args(["--mirror", &format!("{base}/missing")]),
    );
    assert_eq!(
        stderr(&output)
            .matches("present, checksum verified")
            .count(),
        4
    );
}

#[test]
fn fetch_fails_cleanly_when_no_mirror_has_the_file() {
    let base = serve();
    let out = tempfile::tempdir().unwrap();
    let err = fails(
        mnist()
            .args(["fetch", "--dataset", "mnist", "--output"])
            .arg(out.path())
            .args(["--mirror", &format!("{base}/corrupt")])
            // Only loopback is reachable in tests: the built-in mirrors must not be tried.
            .arg("--no-default-mirrors"),
    );
    assert!(
        err.contains("could not download train-images-idx3-ubyte.gz"),
        "{err}"
    );
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(listing(out.path()).is_empty(), "{:?}", listing(out.path()));
}

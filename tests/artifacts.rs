//! The artifact store: air-gapped lookup, download into the cache from a
//! loopback HTTP server, and checksum refusal.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bootstrap::artifacts::{ArtifactError, ArtifactStore, Pinned};
use sha2::{Digest, Sha256};

/// A one-file HTTP/1.1 server on loopback that counts the requests it served.
fn serve(body: &'static [u8]) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/crd.yaml", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut s = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            counter.fetch_add(1, Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        }
    });
    (url, hits)
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[tokio::test]
async fn downloads_once_into_the_cache_then_serves_locally() {
    bootstrap::tls::install_crypto_provider();
    const BODY: &[u8] = b"kind: CustomResourceDefinition\n";
    let (url, hits) = serve(BODY);
    let dir = tempfile::tempdir().unwrap();
    let store = ArtifactStore {
        offline: None,
        cache: dir.path().join("cache"),
    };
    let a = Pinned {
        file: "crd.yaml".into(),
        url: Some(url),
        sha256: sha(BODY),
    };
    let p = store.get(&a).await.unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), BODY);
    store.get(&a).await.unwrap();
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the second get is served from the cache"
    );
}

#[tokio::test]
async fn a_wrong_checksum_is_refused_and_nothing_is_cached() {
    bootstrap::tls::install_crypto_provider();
    let (url, _) = serve(b"tampered");
    let dir = tempfile::tempdir().unwrap();
    let store = ArtifactStore {
        offline: None,
        cache: dir.path().join("cache"),
    };
    let a = Pinned {
        file: "crd.yaml".into(),
        url: Some(url),
        sha256: sha(b"original"),
    };
    match store.get(&a).await {
        Err(ArtifactError::Checksum { expected, actual, .. }) => {
            assert_eq!(expected, sha(b"original"));
            assert_eq!(actual, sha(b"tampered"));
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert!(!dir.path().join("cache/crd.yaml").exists());
}

#[tokio::test]
async fn air_gapped_runs_use_the_artifacts_dir_and_never_fetch() {
    // The real upstream Gateway API CRD, pinned in phases/crds.toml.
    // `shared/` sits beside the repository (CI) or higher up (a git worktree).
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/crds/gateway-api-v1.6.1"))
        .find(|p| p.is_dir())
        .expect("../shared/crds beside the repository");
    let phases: toml::Table =
        toml::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/phases/crds.toml")).unwrap())
            .unwrap();
    let first = &phases["source"].as_array().unwrap()[0];
    let a = Pinned {
        file: first["file"].as_str().unwrap().into(),
        // Unroutable on purpose: the store must not need it.
        url: Some("http://127.0.0.1:9/never".into()),
        sha256: first["sha256"].as_str().unwrap().into(),
    };
    let dir = tempfile::tempdir().unwrap();
    let store = ArtifactStore {
        offline: Some(shared.clone()),
        cache: dir.path().to_path_buf(),
    };
    let p = store.get(&a).await.unwrap();
    assert!(p.starts_with(&shared));

    let wrong = Pinned {
        sha256: sha(b"x"),
        ..a.clone()
    };
    assert!(matches!(store.get(&wrong).await, Err(ArtifactError::Checksum { .. })));
    let missing = Pinned {
        file: "absent.yaml".into(),
        url: None,
        ..a
    };
    assert!(matches!(store.get(&missing).await, Err(ArtifactError::NotFound { .. })));
}

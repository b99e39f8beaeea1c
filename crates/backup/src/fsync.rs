//! fsync of a tokio file through `myelin-fsutil` (so its `fsutil::fsync` failpoint covers it
//! too), off the async threads: the one way this crate syncs a file it wrote with tokio.

use std::io;

use tokio::io::AsyncWriteExt;

/// Waits for the file's last write and fsyncs it.
pub(crate) async fn sync_all(mut file: tokio::fs::File) -> io::Result<()> {
    // tokio finishes the last write in the background: flushing waits for it and reports its
    // error, which `into_std` (and tokio's own `sync_all`) would drop.
    file.flush().await?;
    let file = file.into_std().await;
    tokio::task::spawn_blocking(move || myelin_fsutil::sync_all(&file))
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_synced_tokio_file_holds_every_byte_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("staged");
        let mut file = tokio::fs::File::create(&path).await.expect("create");
        file.write_all(b"first ").await.expect("write");
        file.write_all(b"last").await.expect("write");
        sync_all(file).await.expect("fsync");
        assert_eq!(std::fs::read(&path).expect("read"), b"first last");
    }
}

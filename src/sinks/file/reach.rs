//! `tally check-config --reach` for the file sink: whether its folder is there (a push creates
//! it when it is not); nothing is written.

use super::FileSink;

impl FileSink {
    /// Where the files go, and whether that folder exists yet.
    pub async fn reach(&self) -> anyhow::Result<String> {
        match tokio::fs::metadata(&self.dir).await {
            Ok(meta) if meta.is_dir() => Ok(format!("folder {} exists", self.dir.display())),
            Ok(_) => anyhow::bail!("{} is not a folder", self.dir.display()),
            Err(_) => Ok(format!(
                "folder {} does not exist yet; the first push creates it",
                self.dir.display()
            )),
        }
    }
}

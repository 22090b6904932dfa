//! `tally check-config --reach` for CCC: signs in to each configured service and reads one
//! page of one user, so that a wrong password or service shows before the night's run.

use super::Ccc;

impl Ccc {
    /// Signs in to every service and reads page 1 of its users with a page size of 1.
    pub async fn reach(&self) -> anyhow::Result<String> {
        let mut users = 0;
        for service in &self.services {
            let page = self.client.users(service, 1, 1).await?;
            users += page.total_items.unwrap_or(page.results.len() as u64);
        }
        Ok(format!(
            "signed in to {} service(s); {users} user(s)",
            self.services.len()
        ))
    }
}

//! TEMPORARY stand-in until the store branch lands.
use spec_provider::config::DatabaseSettings;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}
pub struct TestDb {
    pub settings: DatabaseSettings,
}
impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let _ = backend;
        TestDb {
            settings: DatabaseSettings::default(),
        }
    }
}

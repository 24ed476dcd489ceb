//! The sqlite driver.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::Store;
use crate::config::DatabaseSettings;
use crate::domain::{DeleteCommand, Error, ListQuery, PutCommand, PutOutcome, SpecId, SpecRecord};

/// Specs stored in sqlite.
#[derive(Debug, Clone)]
pub struct SqliteStore {}

impl SqliteStore {
    /// Opens the store (connections are made lazily).
    pub async fn open(settings: &DatabaseSettings) -> Result<Self, Error> {
        let _ = settings;
        todo!("helper")
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }
    async fn migrate(&self) -> Result<(), Error> {
        todo!("helper")
    }
    async fn ping(&self) -> Result<(), Error> {
        todo!("helper")
    }
    async fn get(&self, id: &SpecId, now: DateTime<Utc>) -> Result<Option<SpecRecord>, Error> {
        let _ = (id, now);
        todo!("helper")
    }
    async fn get_spec(&self, id: &SpecId, now: DateTime<Utc>) -> Result<Option<Vec<u8>>, Error> {
        let _ = (id, now);
        todo!("helper")
    }
    async fn put(&self, cmd: PutCommand, now: DateTime<Utc>) -> Result<PutOutcome, Error> {
        let _ = (cmd, now);
        todo!("helper")
    }
    async fn delete(&self, cmd: &DeleteCommand, now: DateTime<Utc>) -> Result<bool, Error> {
        let _ = (cmd, now);
        todo!("helper")
    }
    async fn list(&self, query: &ListQuery, now: DateTime<Utc>) -> Result<Vec<SpecRecord>, Error> {
        let _ = (query, now);
        todo!("helper")
    }
    async fn delete_expired(&self, now: DateTime<Utc>, batch_size: u32) -> Result<u64, Error> {
        let _ = (now, batch_size);
        todo!("helper")
    }
}

//! A transaction whose statements are prepared once per connection and
//! reused (`deadpool_postgres`'s statement cache), instead of being parsed
//! and planned by PostgreSQL on every call: the store's SQL is a fixed set
//! of texts, run thousands of times a second.

use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row};

pub(crate) struct Transaction<'a>(deadpool_postgres::Transaction<'a>);

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl<'a> Transaction<'a> {
    pub fn new(txn: deadpool_postgres::Transaction<'a>) -> Self {
        Self(txn)
    }

    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        let statement = self.0.prepare_cached(sql).await?;
        self.0.query(&statement, params).await
    }

    pub async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, Error> {
        let statement = self.0.prepare_cached(sql).await?;
        self.0.query_one(&statement, params).await
    }

    pub async fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error> {
        let statement = self.0.prepare_cached(sql).await?;
        self.0.query_opt(&statement, params).await
    }

    pub async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        let statement = self.0.prepare_cached(sql).await?;
        self.0.execute(&statement, params).await
    }

    /// Several statements in one text, not prepared (migrations).
    pub async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.0.batch_execute(sql).await
    }

    pub async fn commit(self) -> Result<(), Error> {
        self.0.commit().await
    }
}

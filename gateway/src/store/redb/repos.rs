//! Repositories, their webhooks and their known tags.

use redb::{ReadTransaction, ReadableMultimapTable, ReadableTable, Table, WriteTransaction};

use super::StoreError;
use super::records::{decode, encode};
use super::schema::{REPOSITORIES, REPOSITORY_NAMES, REPOSITORY_WEBHOOKS, TAGS, WEBHOOKS};
use crate::records::{KnownTag, Repository, Webhook};

/// Reads that work inside a write transaction as well as in a snapshot.
pub trait Reader {
    fn repository(&self, id: &str) -> Result<Option<Repository>, StoreError>;
    fn webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError>;
    fn repositories_named(&self, name: &str) -> Result<Vec<Repository>, StoreError>;
    /// The repository's webhooks, in creation order.
    fn webhooks_of(&self, repository_id: &str) -> Result<Vec<Webhook>, StoreError>;
    /// Every known tag of the repository, by tag.
    fn tags_of(&self, repository_id: &str) -> Result<Vec<(String, KnownTag)>, StoreError>;
}

macro_rules! impl_reader {
    ($txn:ty) => {
        impl Reader for $txn {
            fn repository(&self, id: &str) -> Result<Option<Repository>, StoreError> {
                let table = self.open_table(REPOSITORIES)?;
                let value = table.get(id)?;
                value.map(|v| decode("repositories", v.value())).transpose()
            }

            fn webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError> {
                let table = self.open_table(WEBHOOKS)?;
                let value = table.get(id)?;
                value.map(|v| decode("webhooks", v.value())).transpose()
            }

            fn repositories_named(&self, name: &str) -> Result<Vec<Repository>, StoreError> {
                let ids: Vec<String> = {
                    let names = self.open_multimap_table(REPOSITORY_NAMES)?;
                    names
                        .get(name)?
                        .map(|id| id.map(|id| id.value().to_owned()))
                        .collect::<Result<_, _>>()?
                };
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(repo) = self.repository(&id)? {
                        out.push(repo);
                    }
                }
                Ok(out)
            }

            fn webhooks_of(&self, repository_id: &str) -> Result<Vec<Webhook>, StoreError> {
                let ids: Vec<String> = {
                    let links = self.open_multimap_table(REPOSITORY_WEBHOOKS)?;
                    links
                        .get(repository_id)?
                        .map(|id| id.map(|id| id.value().to_owned()))
                        .collect::<Result<_, _>>()?
                };
                let table = self.open_table(WEBHOOKS)?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(v) = table.get(id.as_str())? {
                        out.push(decode::<Webhook>("webhooks", v.value())?);
                    }
                }
                // Ids are ULIDs: sorting by id is creation order.
                out.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(out)
            }

            fn tags_of(&self, repository_id: &str) -> Result<Vec<(String, KnownTag)>, StoreError> {
                tags_in(&self.open_table(TAGS)?, repository_id)
            }
        }
    };
}

impl_reader!(ReadTransaction);
impl_reader!(WriteTransaction);

/// Every repository, by id (creation order).
pub fn list_repositories(txn: &ReadTransaction) -> Result<Vec<Repository>, StoreError> {
    let table = txn.open_table(REPOSITORIES)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (_, v) = row?;
        out.push(decode("repositories", v.value())?);
    }
    Ok(out)
}

/// Inserts or replaces a repository, keeping the name index right.
pub fn put_repository(txn: &WriteTransaction, repo: &Repository) -> Result<(), StoreError> {
    let mut table = txn.open_table(REPOSITORIES)?;
    let previous: Option<Repository> = table
        .get(repo.id.as_str())?
        .map(|v| decode("repositories", v.value()))
        .transpose()?;
    table.insert(repo.id.as_str(), encode(repo).as_slice())?;
    let mut names = txn.open_multimap_table(REPOSITORY_NAMES)?;
    if let Some(previous) = previous
        && previous.name != repo.name
    {
        names.remove(previous.name.as_str(), repo.id.as_str())?;
    }
    names.insert(repo.name.as_str(), repo.id.as_str())?;
    Ok(())
}

/// Deletes a repository, its webhooks and its known tags (not its events:
/// the log is history). Returns the deleted webhooks' ids.
pub fn delete_repository(txn: &WriteTransaction, id: &str) -> Result<Vec<String>, StoreError> {
    let repo = txn
        .repository(id)?
        .ok_or_else(|| StoreError::not_found("repository", id))?;
    let webhooks: Vec<String> = txn.webhooks_of(id)?.into_iter().map(|w| w.id).collect();
    for webhook in &webhooks {
        delete_webhook(txn, webhook)?;
    }
    txn.open_table(REPOSITORIES)?.remove(id)?;
    txn.open_multimap_table(REPOSITORY_NAMES)?
        .remove(repo.name.as_str(), id)?;
    let tags: Vec<String> = txn.tags_of(id)?.into_iter().map(|(t, _)| t).collect();
    let mut table = txn.open_table(TAGS)?;
    for tag in tags {
        table.remove((id, tag.as_str()))?;
    }
    Ok(webhooks)
}

pub fn put_webhook(txn: &WriteTransaction, webhook: &Webhook) -> Result<(), StoreError> {
    txn.open_table(WEBHOOKS)?
        .insert(webhook.id.as_str(), encode(webhook).as_slice())?;
    txn.open_multimap_table(REPOSITORY_WEBHOOKS)?
        .insert(webhook.repository_id.as_str(), webhook.id.as_str())?;
    Ok(())
}

/// Deletes a webhook and ends its pending deliveries (kept as history).
pub fn delete_webhook(txn: &WriteTransaction, id: &str) -> Result<(), StoreError> {
    let webhook = txn
        .webhook(id)?
        .ok_or_else(|| StoreError::not_found("webhook", id))?;
    super::deliveries::cancel_pending(txn, id, "the webhook was deleted")?;
    txn.open_table(WEBHOOKS)?.remove(id)?;
    txn.open_multimap_table(REPOSITORY_WEBHOOKS)?
        .remove(webhook.repository_id.as_str(), id)?;
    Ok(())
}

/// Turns a webhook off, saying why; its pending deliveries wait for it to
/// be enabled again.
pub fn note_attempt(
    txn: &WriteTransaction,
    id: &str,
    health: &crate::store::HealthUpdate,
) -> Result<(), StoreError> {
    if let Some(mut webhook) = txn.webhook(id)? {
        if let Some(reason) = webhook.note_attempt(&health.attempt, &health.policy) {
            tracing::warn!(webhook = id, "webhook disabled: {reason}");
        }
        put_webhook(txn, &webhook)?;
    }
    Ok(())
}

/// Every webhook, by id.
pub fn list_webhooks(txn: &ReadTransaction) -> Result<Vec<Webhook>, StoreError> {
    let table = txn.open_table(WEBHOOKS)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (_, v) = row?;
        out.push(decode("webhooks", v.value())?);
    }
    Ok(out)
}

/// The known tags' table, opened once for a batch of changes.
pub struct Tags<'txn> {
    table: Table<'txn, (&'static str, &'static str), &'static [u8]>,
}

impl<'txn> Tags<'txn> {
    pub fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            table: txn.open_table(TAGS)?,
        })
    }

    pub fn get(&self, repository_id: &str, tag: &str) -> Result<Option<KnownTag>, StoreError> {
        let value = self.table.get((repository_id, tag))?;
        value.map(|v| decode("tags", v.value())).transpose()
    }

    pub fn put(
        &mut self,
        repository_id: &str,
        tag: &str,
        known: &KnownTag,
    ) -> Result<(), StoreError> {
        self.table
            .insert((repository_id, tag), encode(known).as_slice())?;
        Ok(())
    }

    pub fn remove(&mut self, repository_id: &str, tag: &str) -> Result<(), StoreError> {
        self.table.remove((repository_id, tag))?;
        Ok(())
    }

    /// Every known tag of the repository, by tag.
    pub fn of(&self, repository_id: &str) -> Result<Vec<(String, KnownTag)>, StoreError> {
        tags_in(&self.table, repository_id)
    }
}

/// Every known tag of `repository_id` in the tags table, by tag.
fn tags_in(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    repository_id: &str,
) -> Result<Vec<(String, KnownTag)>, StoreError> {
    let mut out = Vec::new();
    for row in table.range((repository_id, "")..)? {
        let (k, v) = row?;
        let (repo, tag) = k.value();
        if repo != repository_id {
            break;
        }
        out.push((tag.to_owned(), decode("tags", v.value())?));
    }
    Ok(out)
}

/// The repository a registry's notification is for (`changes::notified_repository`).
pub fn find_local(
    txn: &WriteTransaction,
    name: &str,
    host: Option<&str>,
) -> Result<Option<Repository>, StoreError> {
    Ok(crate::changes::notified_repository(
        txn.repositories_named(name)?,
        host,
    ))
}

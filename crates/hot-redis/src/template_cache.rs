//! The shared (second-level) template cache: every node's local cache misses land here before
//! the database, so a template is read from MySQL about once per TTL for the whole fleet.
//! Entries are the flat `TemplateRecord` as JSON under `<prefix>:{tpl:<id>}:doc`, with a TTL;
//! a change evicts the entry before other nodes are told to reload. A read that raced a change
//! and refilled an old copy lives at most one TTL; claims never depend on it, since the hot
//! state in Redis is what decides status and stock.

use crate::Connection;
use crate::backend;
use async_trait::async_trait;
use stampede_core::catalog::SharedTemplateCache;
use stampede_core::ports::StoreError;
use stampede_core::records::TemplateRecord;
use stampede_domain::ids::TemplateId;
use stampede_domain::template::Template;
use std::time::Duration;

pub struct RedisTemplateCache {
    conn: Connection,
    prefix: String,
    ttl: Duration,
}

impl RedisTemplateCache {
    pub fn new(conn: impl Into<Connection>, prefix: &str, ttl: Duration) -> Self {
        Self {
            conn: conn.into(),
            prefix: prefix.to_owned(),
            ttl,
        }
    }

    fn key(&self, id: TemplateId) -> String {
        format!("{}:{{tpl:{}}}:doc", self.prefix, id.get())
    }
}

#[async_trait]
impl SharedTemplateCache for RedisTemplateCache {
    async fn get(&self, id: TemplateId) -> Result<Option<Template>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.key(id))
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        match raw {
            None => Ok(None),
            Some(json) => {
                let record: TemplateRecord = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("cached template {id}: {e}")))?;
                record.into_template().map(Some)
            }
        }
    }

    async fn put(&self, t: &Template) -> Result<(), StoreError> {
        let json = serde_json::to_string(&TemplateRecord::from_template(t))
            .map_err(|e| StoreError::Corrupt(format!("template {}: {e}", t.id)))?;
        let mut conn = self.conn.clone();
        let ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let _: () = redis::cmd("SET")
            .arg(self.key(t.id))
            .arg(json)
            .arg("PX")
            .arg(ms)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn evict(&self, id: TemplateId) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(self.key(id))
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

//! Managed tables ([`meshward_api::managed`]) through a [`Client`]: typed calls over
//! [`Client::send`]. Writes go to the leader (a follower forwards them); reads answer what the
//! node holds. Cancel-safe as [`Client::send`] is.

use meshward_api::managed::{ManagedRow, RowPage, RowQuery, TableList};
use meshward_api::{Reply, Request};

use crate::{Client, ClientError};

impl Client {
    /// Writes a row; the mastered version the leader signed.
    pub async fn put_row(
        &self,
        namespace: &str,
        table: &str,
        key: &str,
        document: serde_json::Value,
    ) -> Result<u64, ClientError> {
        let request = Request::PutRow {
            namespace: namespace.into(),
            table: table.into(),
            key: key.into(),
            document,
        };
        written(self.send(&request).await?)
    }

    /// Deletes a row; the mastered version the leader signed.
    pub async fn delete_row(
        &self,
        namespace: &str,
        table: &str,
        key: &str,
    ) -> Result<u64, ClientError> {
        let request = Request::DeleteRow {
            namespace: namespace.into(),
            table: table.into(),
            key: key.into(),
        };
        written(self.send(&request).await?)
    }

    /// One row as the node holds it (a 404 problem: it holds none).
    pub async fn get_row(
        &self,
        namespace: &str,
        table: &str,
        key: &str,
    ) -> Result<ManagedRow, ClientError> {
        let request = Request::GetRow {
            namespace: namespace.into(),
            table: table.into(),
            key: key.into(),
        };
        match self.send(&request).await? {
            Reply::Row(row) => Ok(row),
            other => Err(unexpected(&other)),
        }
    }

    /// A page of a table's rows; give `next` as `query.after` for the next one.
    pub async fn list_rows(
        &self,
        namespace: &str,
        table: &str,
        query: RowQuery,
    ) -> Result<RowPage, ClientError> {
        let request = Request::ListRows {
            namespace: namespace.into(),
            table: table.into(),
            query,
        };
        match self.send(&request).await? {
            Reply::Rows(page) => Ok(page),
            other => Err(unexpected(&other)),
        }
    }

    /// The tables of a namespace that hold rows.
    pub async fn list_tables(&self, namespace: &str) -> Result<TableList, ClientError> {
        let request = Request::ListTables {
            namespace: namespace.into(),
        };
        match self.send(&request).await? {
            Reply::Tables(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }
}

fn written(reply: Reply) -> Result<u64, ClientError> {
    match reply {
        Reply::Written(w) => Ok(w.version),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Protocol(format!("unexpected answer {reply:?}"))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule refused the write (duplicate name, token hash, …).
    #[error("conflicts with an existing record")]
    Conflict,
    #[error("stale write: the record is at version {current}")]
    VersionMismatch { current: i64 },
    /// The write's precondition no longer holds (an approval already decided, a parent
    /// credential revoked meanwhile); nothing was written.
    #[error("{0}")]
    Precondition(&'static str),
    #[error("refusing to revoke the last active admin")]
    LastAdmin,
    /// A referenced record (say, a team) does not exist.
    #[error("a referenced record does not exist")]
    MissingReference,
    /// Text no store can keep: a NUL character, which PostgreSQL refuses in text.
    #[error("text may not contain the NUL character")]
    InvalidText,
    #[error("store misconfigured: {0}")]
    Config(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::MissingReference
            }
            // 22021 (character_not_in_repertoire) and 22P05 (untranslatable_character): a NUL
            // in text or JSON. The input is at fault, not the store.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("22021" | "22P05")) =>
            {
                StoreError::InvalidText
            }
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(error.to_string()),
            _ => StoreError::Unavailable(error.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        StoreError::Unavailable(format!("migration failed: {error}"))
    }
}

//! Which backend a `database.url` names: the one place that knows the backends' URL schemes, for
//! [`super::open`] and for the settings' validation alike. It uses nothing else of the crate, so
//! `config` can ask it without depending on the drivers.

/// A database the store can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL (`postgres://` or `postgresql://`): for several replicas sharing one database.
    Postgres,
    /// Embedded SQLite (`sqlite://`): one replica.
    Sqlite,
}

impl Backend {
    /// The backend a URL's scheme names, if it names one.
    pub fn from_scheme(scheme: &str) -> Option<Self> {
        match scheme {
            "postgres" | "postgresql" => Some(Self::Postgres),
            "sqlite" => Some(Self::Sqlite),
            _ => None,
        }
    }

    /// The backend's name, for logs: `postgres` or `sqlite`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Backend;

    #[test]
    fn each_scheme_names_its_backend_and_others_none() {
        assert_eq!(Backend::from_scheme("postgres"), Some(Backend::Postgres));
        assert_eq!(Backend::from_scheme("postgresql"), Some(Backend::Postgres));
        assert_eq!(Backend::from_scheme("sqlite"), Some(Backend::Sqlite));
        assert_eq!(Backend::from_scheme("mysql"), None);
        assert_eq!(Backend::from_scheme("POSTGRES"), None);
    }
}

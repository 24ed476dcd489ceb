//! Test databases: a fresh PostgreSQL database or SQLite file per test.

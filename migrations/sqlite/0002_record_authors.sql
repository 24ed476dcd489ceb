-- Who created each record and who last changed it: `cert:<name>`, `token:<12 hex digits of the
-- token's SHA-256>` or `anonymous` (see the README's "The API in short"). Records written before
-- this migration say `unknown`. (SQLite cannot drop a column's default; every write names its
-- caller all the same.)
ALTER TABLE specs ADD COLUMN created_by TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE specs ADD COLUMN updated_by TEXT NOT NULL DEFAULT 'unknown';

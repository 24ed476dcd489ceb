-- Who created each record and who last changed it: `cert:<name>`, `token:<12 hex digits of the
-- token's SHA-256>` or `anonymous` (see the README's "The API in short"). Records written before
-- this migration say `unknown`. With a constant default, adding the columns rewrites no row; the
-- defaults are then dropped, so that every write must name its caller.
ALTER TABLE specs
    ADD COLUMN created_by TEXT NOT NULL DEFAULT 'unknown',
    ADD COLUMN updated_by TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE specs
    ALTER COLUMN created_by DROP DEFAULT,
    ALTER COLUMN updated_by DROP DEFAULT;

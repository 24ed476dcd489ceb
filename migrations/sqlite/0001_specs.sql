-- One row per spec id. A row whose expire_time has passed is invisible to every read and is
-- replaced by the next put of its id; the sweeper only reclaims its space.
--
-- A rowid table rather than WITHOUT ROWID: specs carrying direct layers can be megabytes, and
-- SQLite recommends WITHOUT ROWID only for small rows. STRICT makes SQLite refuse values of the
-- wrong type instead of silently storing them.
CREATE TABLE specs (
    -- TEXT compares with BINARY collation: byte order, as the "C" collation in PostgreSQL.
    id          TEXT NOT NULL PRIMARY KEY,
    -- The spec's protobuf encoding, served byte for byte.
    spec        BLOB NOT NULL,
    spec_digest TEXT NOT NULL,
    -- A JSON object of string keys to string values, filtered with json_each.
    labels      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(labels) AND json_type(labels) = 'object'),
    generation  INTEGER NOT NULL CHECK (generation >= 1),
    -- Times are microseconds since the Unix epoch (UTC), the precision PostgreSQL keeps.
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    expire_time INTEGER
) STRICT;

-- Most records never expire; the sweeper only needs to find the ones that do.
CREATE INDEX specs_expire_time_idx ON specs (expire_time) WHERE expire_time IS NOT NULL;

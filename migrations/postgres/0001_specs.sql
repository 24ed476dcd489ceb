-- One row per spec id. A row whose expire_time has passed is invisible to every read and is
-- replaced by the next put of its id; the sweeper only reclaims its space.
CREATE TABLE specs (
    -- "C" makes ORDER BY and the keyset / prefix ranges byte order, as in SQLite, whatever
    -- the database's default collation is.
    id          TEXT COLLATE "C" PRIMARY KEY,
    -- The spec's protobuf encoding, served byte for byte.
    spec        BYTEA NOT NULL,
    spec_digest TEXT NOT NULL,
    labels      JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(labels) = 'object'),
    generation  BIGINT NOT NULL CHECK (generation >= 1),
    create_time TIMESTAMPTZ NOT NULL,
    update_time TIMESTAMPTZ NOT NULL,
    expire_time TIMESTAMPTZ
);

-- jsonb_path_ops serves `labels @> '{"k": "v"}'` and is smaller than the default GIN opclass.
CREATE INDEX specs_labels_idx ON specs USING GIN (labels jsonb_path_ops);

-- Most records never expire; the sweeper only needs to find the ones that do.
CREATE INDEX specs_expire_time_idx ON specs (expire_time) WHERE expire_time IS NOT NULL;

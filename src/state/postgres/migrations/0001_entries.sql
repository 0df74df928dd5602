-- agentform state, version 1: the trees of the state and of the local
-- runtime (the same as sled's), the ids that order events, and who holds
-- the state's lock.
CREATE TABLE schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE entries (
    tree text NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tree, key)
);
CREATE SEQUENCE ids INCREMENT BY 64 MINVALUE 0 START WITH 0;
CREATE TABLE lock_holder (
    id smallint PRIMARY KEY CHECK (id = 1),
    pid integer NOT NULL,
    host text NOT NULL,
    command text NOT NULL,
    since text NOT NULL
);

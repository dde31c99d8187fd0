-- Audit tags (docs/FORMATS.md, "Audit tags"): with audit keys, every event
-- carries an HMAC-SHA256 tag over its hash, and each chain's head row the
-- tag of the head (chain, seq, hash), both under a key derived from
-- SECRET_KEY (tag_key: the 4-byte id of that SECRET_KEY). Whoever can
-- write these tables but does not hold SECRET_KEY cannot make either.
ALTER TABLE audit_events
    ADD COLUMN tag_key bytea CHECK (length(tag_key) = 4),
    ADD COLUMN tag     bytea CHECK (length(tag) = 32),
    ADD CHECK ((tag_key IS NULL) = (tag IS NULL));
ALTER TABLE audit_heads
    ADD COLUMN tag_key bytea CHECK (length(tag_key) = 4),
    ADD COLUMN tag     bytea CHECK (length(tag) = 32),
    ADD CHECK ((tag_key IS NULL) = (tag IS NULL));

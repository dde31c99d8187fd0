-- Signing-secret rotation (issue 19): the secrets a rotation retired, each
-- still signing until its end. A JSON array of {"secret": <ciphertext as
-- text>, "until": <RFC 3339>}, latest end first, at most 10 (core keeps the
-- rule; FORMATS.md Part 2). Each ciphertext is bound to its target and to
-- its end, so editing "until" here makes that secret fail to open.
ALTER TABLE targets
    ADD COLUMN retired_signing_secrets jsonb NOT NULL DEFAULT '[]'::jsonb
        CHECK (jsonb_typeof(retired_signing_secrets) = 'array');

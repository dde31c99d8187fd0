-- The key that collected an auto-rotated successor's plaintext by
-- presenting itself (KeyService::collect_successor): revoking that key
-- revokes the successor too (KeyRecord::collected_by).
ALTER TABLE api_keys ADD COLUMN collected_by bytea CHECK (length(collected_by) = 16);

-- Paged reads (issue 16, finding 9): each page an index range scan in the
-- page's own order, whatever the size of what is paged.
--
-- KeyStore::keys_page: a project's keys by id, after a cursor id.
CREATE INDEX api_keys_by_project_and_id ON api_keys (project, id);
-- AuditLog::events_for_user_page: a user's events (as actor, as subject)
-- in the export's order (time, chain with the global chain's empty key
-- first, seq), after a cursor (at, chain, seq). These replace the indexes
-- on the user columns alone, which are their prefixes.
CREATE INDEX audit_events_by_actor_in_order
    ON audit_events (actor_user, at, chain, seq) WHERE actor_user IS NOT NULL;
CREATE INDEX audit_events_by_subject_in_order
    ON audit_events (subject, at, chain, seq) WHERE subject IS NOT NULL;
DROP INDEX audit_events_by_actor;
DROP INDEX audit_events_by_subject;
-- MembershipStore::members_page uses the primary key (project, user_id);
-- the tree cap counts a project's rows through lines_by_project,
-- endpoints_by_project and targets_by_project.

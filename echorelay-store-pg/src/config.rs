//! `ConfigStore` and `MembershipStore`: projects, lines, endpoints,
//! targets and memberships.
//!
//! Every change in a project first locks the project's row
//! (`FOR NO KEY UPDATE`: it does not block the foreign-key checks of
//! concurrent inserts), so changes of one project are serialised, the
//! compare-and-swap versions are decided under that lock, and the owner
//! count of [`MembershipStore::set_role`] is read under it.

use async_trait::async_trait;
use echorelay_core::access::Role;
use echorelay_core::audit::AuditDraft;
use echorelay_core::config::{
    ConfigChange, Endpoint, Line, Project, ProjectTree, Slug, Target, Write,
};
use echorelay_core::error::StoreError;
use echorelay_core::ids::{EndpointId, ProjectId, TargetId, UserId};
use echorelay_core::ports::{
    ConfigStore, IngestRoute, MembershipStore, StoreResult, TreeImport, rules,
};
use std::sync::LazyLock;

use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use crate::row::{Reader, i64_of, idb, json_of, opt_idb};
use crate::{PgStore, backend, db_err, limit_of};

pub(crate) const PROJECT_COLUMNS: &str =
    "id, slug, name, key_policy, created_at, version, api_keys_manage_keys";
const LINE_COLUMNS: &str = "id, project, name, created_at";
const ENDPOINT_COLUMNS: &str = "id, project, line, name, created_at";
const TARGET_COLUMNS: &str = "id, project, line, name, url, auth, signing_secret, \
     retired_signing_secrets, created_at, updated_at, version";

fn project_of(row: &PgRow) -> StoreResult<Project> {
    let r = Reader::new(row, "projects", "id");
    Ok(Project {
        id: r.id("id")?,
        slug: r.parsed("slug", Slug::parse)?,
        name: r.text("name")?,
        key_policy: r.json("key_policy")?,
        created_at: r.time("created_at")?,
        version: r.u64("version")?,
        api_keys_manage_keys: r.boolean("api_keys_manage_keys")?,
    })
}

fn line_of(row: &PgRow) -> StoreResult<Line> {
    let r = Reader::new(row, "lines", "id");
    Ok(Line {
        id: r.id("id")?,
        project: r.id("project")?,
        name: r.text("name")?,
        created_at: r.time("created_at")?,
    })
}

fn endpoint_of(row: &PgRow) -> StoreResult<Endpoint> {
    let r = Reader::new(row, "endpoints", "id");
    Ok(Endpoint {
        id: r.id("id")?,
        project: r.id("project")?,
        line: r.id("line")?,
        name: r.text("name")?,
        created_at: r.time("created_at")?,
    })
}

fn target_of(row: &PgRow) -> StoreResult<Target> {
    let r = Reader::new(row, "targets", "id");
    Ok(Target {
        id: r.id("id")?,
        project: r.id("project")?,
        line: r.id("line")?,
        name: r.text("name")?,
        url: r.text("url")?,
        auth: r.json("auth")?,
        signing_secret: r.ciphertext("signing_secret")?,
        retired_signing_secrets: r.json("retired_signing_secrets")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
        version: r.u64("version")?,
    })
}

/// Locks the project's row for this transaction; its version, or
/// `NotFound`.
async fn lock_project(conn: &mut PgConnection, id: ProjectId) -> StoreResult<Project> {
    let row = sqlx::query(&format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1 FOR NO KEY UPDATE"
    ))
    .bind(idb(&id))
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?
    .ok_or(StoreError::NotFound { kind: "project" })?;
    project_of(&row)
}

/// The tree cap ([`rules::tree_has_room`]) for a create in `project`,
/// whose row the caller has locked: the count cannot change before the
/// insert commits.
async fn tree_has_room(conn: &mut PgConnection, project: ProjectId) -> StoreResult<()> {
    let held: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM lines WHERE project = $1) \
              + (SELECT count(*) FROM endpoints WHERE project = $1) \
              + (SELECT count(*) FROM targets WHERE project = $1)",
    )
    .bind(idb(&project))
    .fetch_one(&mut *conn)
    .await
    .map_err(backend)?;
    rules::tree_has_room(usize::try_from(held).unwrap_or(usize::MAX), 1)
}

async fn line_in(conn: &mut PgConnection, project: ProjectId, line: &[u8]) -> StoreResult<()> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM lines WHERE id = $1 AND project = $2")
            .bind(line)
            .bind(idb(&project))
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
    found
        .map(|_| ())
        .ok_or(StoreError::NotFound { kind: "line" })
}

/// Inserts a project row with `version` (a new project: 0; a restored
/// one: as the snapshot has it).
pub(crate) async fn insert_project(
    conn: &mut PgConnection,
    p: &Project,
    version: u64,
) -> StoreResult<()> {
    sqlx::query(&format!(
        "INSERT INTO projects ({PROJECT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    ))
    .bind(idb(&p.id))
    .bind(p.slug.as_str())
    .bind(&p.name)
    .bind(json_of(&p.key_policy)?)
    .bind(p.created_at)
    .bind(i64_of(version)?)
    .bind(p.api_keys_manage_keys)
    .execute(&mut *conn)
    .await
    .map_err(db_err("project"))?;
    Ok(())
}

/// Inserts a tree's lines, endpoints and targets (targets with their own
/// versions), in that order.
pub(crate) async fn insert_tree_entities(
    conn: &mut PgConnection,
    tree: &ProjectTree,
) -> StoreResult<()> {
    for l in &tree.lines {
        insert_line(conn, l).await?;
    }
    for e in &tree.endpoints {
        insert_endpoint(conn, e).await?;
    }
    for t in &tree.targets {
        insert_target(conn, t, t.version).await?;
    }
    Ok(())
}

pub(crate) async fn insert_line(conn: &mut PgConnection, l: &Line) -> StoreResult<()> {
    sqlx::query(&format!(
        "INSERT INTO lines ({LINE_COLUMNS}) VALUES ($1, $2, $3, $4)"
    ))
    .bind(idb(&l.id))
    .bind(idb(&l.project))
    .bind(&l.name)
    .bind(l.created_at)
    .execute(&mut *conn)
    .await
    .map_err(db_err("line"))?;
    Ok(())
}

pub(crate) async fn insert_endpoint(conn: &mut PgConnection, e: &Endpoint) -> StoreResult<()> {
    sqlx::query(&format!(
        "INSERT INTO endpoints ({ENDPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
    ))
    .bind(idb(&e.id))
    .bind(idb(&e.project))
    .bind(idb(&e.line))
    .bind(&e.name)
    .bind(e.created_at)
    .execute(&mut *conn)
    .await
    .map_err(db_err("endpoint"))?;
    Ok(())
}

pub(crate) async fn insert_target(
    conn: &mut PgConnection,
    t: &Target,
    version: u64,
) -> StoreResult<()> {
    sqlx::query(&format!(
        "INSERT INTO targets ({TARGET_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(idb(&t.id))
    .bind(idb(&t.project))
    .bind(idb(&t.line))
    .bind(&t.name)
    .bind(&t.url)
    .bind(json_of(&t.auth)?)
    .bind(t.signing_secret.to_bytes())
    .bind(json_of(&t.retired_signing_secrets)?)
    .bind(t.created_at)
    .bind(t.updated_at)
    .bind(i64_of(version)?)
    .execute(&mut *conn)
    .await
    .map_err(db_err("target"))?;
    Ok(())
}

/// Applies `change` inside the transaction (the project row is locked);
/// returns nothing, or the refusal.
async fn apply_in(conn: &mut PgConnection, change: ConfigChange) -> StoreResult<ProjectId> {
    let updated = |r: sqlx::postgres::PgQueryResult| r.rows_affected() == 1;
    Ok(match change {
        ConfigChange::PutLine(w, line) => {
            lock_project(conn, line.project).await?;
            match w {
                Write::Create => {
                    tree_has_room(conn, line.project).await?;
                    insert_line(conn, &line).await?
                }
                Write::Update => {
                    let r = sqlx::query(
                        "UPDATE lines SET name = $3, created_at = $4 WHERE id = $1 AND project = $2",
                    )
                    .bind(idb(&line.id))
                    .bind(idb(&line.project))
                    .bind(&line.name)
                    .bind(line.created_at)
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                    if !updated(r) {
                        return Err(StoreError::NotFound { kind: "line" });
                    }
                }
            }
            line.project
        }
        ConfigChange::DeleteLine(p, id) => {
            lock_project(conn, p).await?;
            // Endpoints and targets go with it (ON DELETE CASCADE).
            let r = sqlx::query("DELETE FROM lines WHERE id = $1 AND project = $2")
                .bind(idb(&id))
                .bind(idb(&p))
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
            if !updated(r) {
                return Err(StoreError::NotFound { kind: "line" });
            }
            p
        }
        ConfigChange::PutEndpoint(w, ep) => {
            lock_project(conn, ep.project).await?;
            line_in(conn, ep.project, idb(&ep.line)).await?;
            match w {
                Write::Create => {
                    tree_has_room(conn, ep.project).await?;
                    insert_endpoint(conn, &ep).await?
                }
                Write::Update => {
                    let r = sqlx::query(
                        "UPDATE endpoints SET line = $3, name = $4, created_at = $5 \
                         WHERE id = $1 AND project = $2",
                    )
                    .bind(idb(&ep.id))
                    .bind(idb(&ep.project))
                    .bind(idb(&ep.line))
                    .bind(&ep.name)
                    .bind(ep.created_at)
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                    if !updated(r) {
                        return Err(StoreError::NotFound { kind: "endpoint" });
                    }
                }
            }
            ep.project
        }
        ConfigChange::DeleteEndpoint(p, id) => {
            lock_project(conn, p).await?;
            let r = sqlx::query("DELETE FROM endpoints WHERE id = $1 AND project = $2")
                .bind(idb(&id))
                .bind(idb(&p))
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
            if !updated(r) {
                return Err(StoreError::NotFound { kind: "endpoint" });
            }
            p
        }
        ConfigChange::PutTarget(w, t) => {
            lock_project(conn, t.project).await?;
            line_in(conn, t.project, idb(&t.line)).await?;
            match w {
                Write::Create => {
                    tree_has_room(conn, t.project).await?;
                    insert_target(conn, &t, 0).await?
                }
                Write::Update => {
                    let r = sqlx::query(
                        "UPDATE targets SET line = $3, name = $4, url = $5, auth = $6, \
                             signing_secret = $7, created_at = $8, updated_at = $9, \
                             retired_signing_secrets = $11, version = version + 1 \
                         WHERE id = $1 AND project = $2 AND version = $10",
                    )
                    .bind(idb(&t.id))
                    .bind(idb(&t.project))
                    .bind(idb(&t.line))
                    .bind(&t.name)
                    .bind(&t.url)
                    .bind(json_of(&t.auth)?)
                    .bind(t.signing_secret.to_bytes())
                    .bind(t.created_at)
                    .bind(t.updated_at)
                    .bind(i64_of(t.version)?)
                    .bind(json_of(&t.retired_signing_secrets)?)
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                    if !updated(r) {
                        let mine: Option<i32> = sqlx::query_scalar(
                            "SELECT 1 FROM targets WHERE id = $1 AND project = $2",
                        )
                        .bind(idb(&t.id))
                        .bind(idb(&t.project))
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(backend)?;
                        return Err(match mine {
                            None => StoreError::NotFound { kind: "target" },
                            Some(_) => StoreError::Conflict {
                                reason: "the target changed since it was read",
                            },
                        });
                    }
                }
            }
            t.project
        }
        ConfigChange::DeleteTarget(p, id) => {
            lock_project(conn, p).await?;
            let r = sqlx::query("DELETE FROM targets WHERE id = $1 AND project = $2")
                .bind(idb(&id))
                .bind(idb(&p))
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
            if !updated(r) {
                return Err(StoreError::NotFound { kind: "target" });
            }
            p
        }
        ConfigChange::UpdateProject(p) => {
            let cur = lock_project(conn, p.id).await?;
            rules::project_update(&cur, &p)?;
            sqlx::query(
                "UPDATE projects SET name = $2, key_policy = $3, api_keys_manage_keys = $4 \
                 WHERE id = $1",
            )
            .bind(idb(&p.id))
            .bind(&p.name)
            .bind(json_of(&p.key_policy)?)
            .bind(p.api_keys_manage_keys)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
            p.id
        }
        // `ConfigChange` is non-exhaustive for users of core; a variant
        // this adapter does not know changes nothing.
        #[allow(unreachable_patterns)]
        _ => {
            return Err(StoreError::Conflict {
                reason: "unsupported change",
            });
        }
    })
}

#[async_trait]
impl ConfigStore for PgStore {
    async fn create_project(
        &self,
        project: Project,
        owner: UserId,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        insert_project(&mut tx, &project, 0).await?;
        sqlx::query("INSERT INTO memberships (project, user_id, role) VALUES ($1, $2, 'owner')")
            .bind(idb(&project.id))
            .bind(idb(&owner))
            .execute(&mut *tx)
            .await
            .map_err(db_err("membership"))?;
        self.append_in(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn project_by_slug(&self, slug: &Slug) -> StoreResult<Option<Project>> {
        let row = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE slug = $1"
        ))
        .bind(slug.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(project_of).transpose()
    }

    async fn project(&self, id: ProjectId) -> StoreResult<Option<Project>> {
        let row = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1"
        ))
        .bind(idb(&id))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(project_of).transpose()
    }

    async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        let rows = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects ORDER BY slug"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(project_of).collect()
    }

    async fn apply(&self, change: ConfigChange, audit: AuditDraft) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let project = apply_in(&mut tx, change).await?;
        sqlx::query("UPDATE projects SET version = version + 1 WHERE id = $1")
            .bind(idb(&project))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        self.append_in(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn tree(&self, project: ProjectId) -> StoreResult<ProjectTree> {
        // One snapshot for the whole tree.
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let p = self_project(&mut tx, project)
            .await?
            .ok_or(StoreError::NotFound { kind: "project" })?;
        let (lines, endpoints, targets) = children(&mut tx, project).await?;
        tx.commit().await.map_err(backend)?;
        Ok(ProjectTree {
            project: p,
            lines,
            endpoints,
            targets,
        })
    }

    async fn ingest_route(
        &self,
        project: ProjectId,
        endpoint: EndpointId,
    ) -> StoreResult<Option<IngestRoute>> {
        // One row per target of the endpoint's line (the project's columns
        // on each), one with a NULL target for a line without targets, one
        // with a NULL endpoint for a project without that endpoint; no row:
        // no project.
        // The statement is built once: the project's columns come from a
        // subquery, so the outer select names them as `p.*`.
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT p.*, e.id AS endpoint, t.id AS target \
                 FROM (SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1) p \
                 LEFT JOIN endpoints e ON e.project = p.id AND e.id = $2 \
                 LEFT JOIN targets t ON t.line = e.line \
                 ORDER BY t.created_at, t.id"
            )
        });
        let rows = sqlx::query(SQL.as_str())
            .bind(idb(&project))
            .bind(idb(&endpoint))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let project = project_of(first)?;
        let found: Option<EndpointId> =
            Reader::new(first, "endpoints", "endpoint").opt_id("endpoint")?;
        let targets = match found {
            None => None,
            Some(_) => {
                let mut targets = Vec::with_capacity(rows.len());
                for row in &rows {
                    if let Some(t) = Reader::new(row, "targets", "target").opt_id("target")? {
                        targets.push(t);
                    }
                }
                Some(targets)
            }
        };
        Ok(Some(IngestRoute { project, targets }))
    }

    async fn target(&self, project: ProjectId, id: TargetId) -> StoreResult<Option<Target>> {
        let row = sqlx::query(&format!(
            "SELECT {TARGET_COLUMNS} FROM targets WHERE id = $1 AND project = $2"
        ))
        .bind(idb(&id))
        .bind(idb(&project))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(target_of).transpose()
    }

    async fn targets_page(
        &self,
        after: Option<TargetId>,
        limit: usize,
    ) -> StoreResult<Vec<Target>> {
        let rows = sqlx::query(&format!(
            "SELECT {TARGET_COLUMNS} FROM targets WHERE ($1::bytea IS NULL OR id > $1) \
             ORDER BY id LIMIT $2"
        ))
        .bind(opt_idb(&after))
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(target_of).collect()
    }

    async fn import_tree(&self, import: TreeImport, audit: AuditDraft) -> StoreResult<()> {
        let TreeImport {
            tree,
            expect_version,
            owner_if_new,
        } = import;
        let pid = tree.project.id;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let current = match lock_project(&mut tx, pid).await {
            Ok(p) => Some(p),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        rules::import(
            current.as_ref().map(|p| p.version),
            expect_version,
            owner_if_new,
        )?;
        // The import replaces the whole tree.
        rules::tree_has_room(
            0,
            tree.lines.len() + tree.endpoints.len() + tree.targets.len(),
        )?;
        let holder: Option<Vec<u8>> = sqlx::query_scalar("SELECT id FROM projects WHERE slug = $1")
            .bind(tree.project.slug.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if holder.is_some_and(|h| h.as_slice() != pid.as_bytes()) {
            return Err(StoreError::AlreadyExists {
                kind: "project slug",
            });
        }
        // Ids must not collide with another project's entities.
        let foreign = {
            let mut foreign = false;
            for (table, ids) in [
                (
                    "lines",
                    tree.lines
                        .iter()
                        .map(|l| l.id.as_bytes().to_vec())
                        .collect::<Vec<_>>(),
                ),
                (
                    "endpoints",
                    tree.endpoints
                        .iter()
                        .map(|e| e.id.as_bytes().to_vec())
                        .collect(),
                ),
                (
                    "targets",
                    tree.targets
                        .iter()
                        .map(|t| t.id.as_bytes().to_vec())
                        .collect(),
                ),
            ] {
                let n: i64 = sqlx::query_scalar(&format!(
                    "SELECT count(*) FROM {table} WHERE id = ANY($1) AND project <> $2"
                ))
                .bind(&ids)
                .bind(idb(&pid))
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
                foreign |= n > 0;
            }
            foreign
        };
        if foreign {
            return Err(StoreError::AlreadyExists {
                kind: "config entity id",
            });
        }
        let p = &tree.project;
        match &current {
            Some(old) => {
                sqlx::query(
                    "UPDATE projects SET slug = $2, name = $3, key_policy = $4, created_at = $5, \
                         version = $6, api_keys_manage_keys = $7 WHERE id = $1",
                )
                .bind(idb(&pid))
                .bind(p.slug.as_str())
                .bind(&p.name)
                .bind(json_of(&p.key_policy)?)
                .bind(p.created_at)
                .bind(i64_of(old.version + 1)?)
                .bind(p.api_keys_manage_keys)
                .execute(&mut *tx)
                .await
                .map_err(db_err("project slug"))?;
                for table in ["targets", "endpoints", "lines"] {
                    sqlx::query(&format!("DELETE FROM {table} WHERE project = $1"))
                        .bind(idb(&pid))
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                }
            }
            None => {
                insert_project(&mut tx, p, 0).await?;
                if let Some(owner) = owner_if_new {
                    sqlx::query(
                        "INSERT INTO memberships (project, user_id, role) VALUES ($1, $2, 'owner')",
                    )
                    .bind(idb(&pid))
                    .bind(idb(&owner))
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err("membership"))?;
                }
            }
        }
        insert_tree_entities(&mut tx, &tree).await?;
        self.append_in(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }
}

async fn self_project(conn: &mut PgConnection, id: ProjectId) -> StoreResult<Option<Project>> {
    let row = sqlx::query(&format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1"
    ))
    .bind(idb(&id))
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?;
    row.as_ref().map(project_of).transpose()
}

async fn children(
    conn: &mut PgConnection,
    project: ProjectId,
) -> StoreResult<(Vec<Line>, Vec<Endpoint>, Vec<Target>)> {
    let lines = sqlx::query(&format!(
        "SELECT {LINE_COLUMNS} FROM lines WHERE project = $1 ORDER BY created_at, id"
    ))
    .bind(idb(&project))
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    .iter()
    .map(line_of)
    .collect::<StoreResult<Vec<_>>>()?;
    let endpoints = sqlx::query(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE project = $1 ORDER BY created_at, id"
    ))
    .bind(idb(&project))
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    .iter()
    .map(endpoint_of)
    .collect::<StoreResult<Vec<_>>>()?;
    let targets = sqlx::query(&format!(
        "SELECT {TARGET_COLUMNS} FROM targets WHERE project = $1 ORDER BY created_at, id"
    ))
    .bind(idb(&project))
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    .iter()
    .map(target_of)
    .collect::<StoreResult<Vec<_>>>()?;
    Ok((lines, endpoints, targets))
}

fn role_of_text(r: &Reader<'_>) -> StoreResult<Role> {
    r.parsed("role", |s| s.parse::<Role>())
}

#[async_trait]
impl MembershipStore for PgStore {
    async fn role_of(&self, user: UserId, project: ProjectId) -> StoreResult<Option<Role>> {
        let row = sqlx::query(
            "SELECT project, role FROM memberships WHERE project = $1 AND user_id = $2",
        )
        .bind(idb(&project))
        .bind(idb(&user))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|row| role_of_text(&Reader::new(&row, "memberships", "project")))
            .transpose()
    }

    async fn set_role(
        &self,
        project: ProjectId,
        user: UserId,
        role: Option<Role>,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The project row lock serialises membership changes of the
        // project: the owner count below cannot change under us.
        lock_project(&mut tx, project).await?;
        let rows = sqlx::query("SELECT project, user_id, role FROM memberships WHERE project = $1")
            .bind(idb(&project))
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        let mut owners = 0usize;
        let mut current = None;
        for row in &rows {
            let r = Reader::new(row, "memberships", "user_id");
            let member: UserId = r.id("user_id")?;
            let role = role_of_text(&r)?;
            if role == Role::Owner {
                owners += 1;
            }
            if member == user {
                current = Some(role);
            }
        }
        rules::role_change(current, role, owners)?;
        match role {
            Some(r) => sqlx::query(
                "INSERT INTO memberships (project, user_id, role) VALUES ($1, $2, $3) \
                 ON CONFLICT (project, user_id) DO UPDATE SET role = EXCLUDED.role",
            )
            .bind(idb(&project))
            .bind(idb(&user))
            .bind(r.as_str()),
            None => sqlx::query("DELETE FROM memberships WHERE project = $1 AND user_id = $2")
                .bind(idb(&project))
                .bind(idb(&user)),
        }
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        self.append_in(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn memberships_of(&self, user: UserId) -> StoreResult<Vec<(ProjectId, Role)>> {
        let rows = sqlx::query(
            "SELECT project, role FROM memberships WHERE user_id = $1 ORDER BY project",
        )
        .bind(idb(&user))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let r = Reader::new(row, "memberships", "project");
                Ok((r.id("project")?, role_of_text(&r)?))
            })
            .collect()
    }

    async fn members_page(
        &self,
        project: ProjectId,
        after: Option<UserId>,
        limit: usize,
    ) -> StoreResult<Vec<(UserId, Role)>> {
        // The primary key (project, user_id) serves the page; the empty
        // bytea sorts before every id.
        let rows = sqlx::query(
            "SELECT user_id, role FROM memberships \
             WHERE project = $1 AND user_id > coalesce($2::bytea, '\\x'::bytea) \
             ORDER BY user_id LIMIT $3",
        )
        .bind(idb(&project))
        .bind(opt_idb(&after))
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let r = Reader::new(row, "memberships", "user_id");
                Ok((r.id("user_id")?, role_of_text(&r)?))
            })
            .collect()
    }
}

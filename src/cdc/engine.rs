//! The CDC apply loop over normalized changes: transactions grouped into
//! target commits, statements planned by [`Follow`] and applied in the
//! source's session context, XA transactions with the source's outcome,
//! tables copied when they enter the selection, checkpoints.
//!
//! It talks to the target through [`Target`] (the real one is
//! [`super::Applier`]), so it can be driven from a list of changes in a
//! test without any server.

use std::collections::HashMap;

use tracing::{info, warn};

use super::error::{CdcError, TargetError};
use super::follow::{Follow, Step};
use crate::job::{DdlPolicy, JobSpec};
use crate::model::BinlogPos;
use crate::model::RateLimit;
use crate::model::SessionContext;
use crate::model::{now_ms, Checkpoint};
use crate::source::binlog::{Change, Op, Query, RowFlags, Rows};
use crate::source::decode::Images;
use crate::state::Store;

/// The end of a source transaction: its position and GTID.
pub type TxnEnd = (BinlogPos, Option<String>);

/// The rows of one rows event, for the target.
pub(crate) struct RowChange<'a> {
    pub db: &'a str,
    pub table: &'a str,
    pub op: Op,
    pub images: Images,
    pub flags: RowFlags,
    /// Safe mode: inserts become upserts, updates of missing rows upserts.
    pub safe: bool,
    pub at: &'a BinlogPos,
    /// The TABLE_MAP's facts: ENUM and SET member names.
    pub info: &'a crate::source::binlog::TableInfo,
}

/// Where changes land.
#[allow(async_fn_in_trait)]
pub(crate) trait Target {
    /// Queues the rows of one rows event.
    async fn rows(&mut self, change: RowChange<'_>) -> Result<(), CdcError>;
    /// A source transaction begins: what comes until the next commit or
    /// [`Target::rollback_txn`] belongs to it.
    fn begin_txn(&mut self);
    /// The source rolled the open transaction back: undo its rows.
    async fn rollback_txn(&mut self) -> Result<(), CdcError>;
    /// Ends a group of source transactions at `end` (sent, not awaited).
    async fn commit(&mut self, end: TxnEnd) -> Result<(), CdcError>;
    /// Waits for what was sent.
    async fn settle(&mut self) -> Result<(), CdcError>;
    /// Drops what is not committed (a stop).
    async fn abandon(&mut self);
    fn busy(&self) -> bool;
    fn queued_bytes(&self) -> usize;
    /// The newest group end the target has committed since the last call.
    fn take_committed(&mut self) -> Option<TxnEnd>;
    /// Runs a statement in database `db` with the source's session.
    async fn execute(
        &mut self,
        db: &str,
        sql: &str,
        ctx: &SessionContext,
    ) -> Result<(), TargetError>;
    /// Copies a source table whole (schema and rows, one consistent
    /// snapshot) to `target_db`; returns the binlog position of the
    /// snapshot (the table's changes up to it are in the copy).
    async fn copy_table(
        &mut self,
        db: &str,
        table: &str,
        target_db: &str,
    ) -> Result<BinlogPos, CdcError>;
}

/// Source transactions applied but not yet committed on the target.
#[derive(Default)]
struct Group {
    txns: u32,
    /// The end of the last whole source transaction in the group.
    end: Option<TxnEnd>,
}

impl Group {
    const MAX_TXNS: u32 = 500;
    const MAX_BYTES: usize = 512 << 10;
}

/// The apply loop's state.
pub(crate) struct Engine<'a, T: Target> {
    job: &'a JobSpec,
    store: &'a Store,
    limit: &'a RateLimit,
    pub target: T,
    pub follow: Follow,
    pub cp: Checkpoint,
    group: Group,
    in_txn: bool,
    /// Rows of the open XA transaction: applied only when it commits.
    xa_rows: Option<Vec<Rows>>,
    /// XA transactions resolved, kept in the state until checkpointed.
    xa_done: Vec<(String, BinlogPos)>,
    /// Tables copied in a snapshot: their changes up to it are in the copy.
    snapshots: HashMap<String, BinlogPos>,
    /// A statement that may have been applied before a crash.
    ddl_pending: Option<BinlogPos>,
    /// The end of the last change read (a heartbeat's is the source's head).
    pub seen: BinlogPos,
    /// Rows applied.
    pub rows: u64,
}

impl<'a, T: Target> Engine<'a, T> {
    pub fn new(
        job: &'a JobSpec,
        store: &'a Store,
        limit: &'a RateLimit,
        target: T,
        cp: Checkpoint,
    ) -> Result<Self, CdcError> {
        let snapshots = store.snapshots(&job.name)?.into_iter().collect();
        let follow = Follow::new(job, store.ghosts(&job.name)?);
        Ok(Engine {
            job,
            store,
            limit,
            target,
            follow,
            seen: cp.position.clone(),
            cp,
            group: Group::default(),
            in_txn: false,
            xa_rows: None,
            xa_done: Vec::new(),
            snapshots,
            ddl_pending: store.ddl_pending(&job.name)?,
            rows: 0,
        })
    }

    /// Nothing read is waiting to be applied or committed.
    pub fn idle(&self) -> bool {
        !self.in_txn && self.group.txns == 0 && !self.target.busy()
    }

    /// Between source transactions with a group waiting: commit it soon.
    pub fn group_waiting(&self) -> bool {
        self.group.txns > 0 && !self.in_txn
    }

    /// The position up to which everything read is applied.
    pub fn applied(&self) -> &BinlogPos {
        if self.idle() {
            &self.seen
        } else {
            &self.cp.position
        }
    }

    pub async fn handle(&mut self, change: Change) -> Result<(), CdcError> {
        match change {
            Change::Heartbeat { at } => {
                if at.pos > 0 && at >= self.seen {
                    self.seen = at;
                }
                if !self.in_txn {
                    self.flush().await?;
                }
            }
            Change::Begin { xa, .. } => {
                self.in_txn = true;
                if xa {
                    self.xa_rows = Some(Vec::new());
                } else {
                    self.target.begin_txn();
                }
            }
            Change::Rows(r) => {
                self.seen = r.end.clone();
                match self.xa_rows.as_mut() {
                    Some(buf) => buf.push(r),
                    None => self.rows(r, None).await?,
                }
            }
            Change::Commit { end, gtid } => {
                self.seen = end.clone();
                self.in_txn = false;
                if let Some(rows) = self.xa_rows.take() {
                    // An XA transaction committed in one phase.
                    self.target.begin_txn();
                    for r in rows {
                        self.rows(r, None).await?;
                    }
                }
                self.end_txn(end, gtid).await?;
            }
            Change::Rollback { end } => {
                self.seen = end;
                self.in_txn = false;
                self.xa_rows = None;
                self.target.rollback_txn().await?;
            }
            Change::XaPrepare { xid, end, gtid } => {
                self.seen = end.clone();
                self.in_txn = false;
                let rows = self.xa_rows.take().unwrap_or_default();
                self.store
                    .put_xa(&self.job.name, &xid, &super::xa::stash(&rows))?;
                info!(xid, at = %end, rows = rows.len(), "XA transaction prepared; applied when it commits");
                self.end_txn(end, gtid).await?;
            }
            Change::XaEnd {
                xid,
                commit,
                end,
                gtid,
            } => {
                self.seen = end.clone();
                self.in_txn = false;
                if commit {
                    let stored = super::xa::prepared_xa(self.store, &self.job.name, &xid, &end)?;
                    self.target.begin_txn();
                    for r in super::xa::unstash(stored) {
                        self.rows(r, Some(&end)).await?;
                    }
                }
                let what = if commit { "committed" } else { "rolled back" };
                info!(xid, at = %end, "XA transaction {what}");
                self.xa_done.push((xid, end.clone()));
                self.end_txn(end, gtid).await?;
            }
            Change::Query(q) => self.query(*q).await?,
        }
        Ok(())
    }

    async fn end_txn(&mut self, end: BinlogPos, gtid: Option<String>) -> Result<(), CdcError> {
        self.group.txns += 1;
        self.group.end = Some((end, gtid));
        if self.group.txns >= Group::MAX_TXNS || self.target.queued_bytes() > Group::MAX_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Applies the rows of one event; `at` overrides its position (an XA
    /// transaction's rows are applied at its commit).
    async fn rows(&mut self, r: Rows, at: Option<&BinlogPos>) -> Result<(), CdcError> {
        let (db, table) = (&*r.table.db, &*r.table.name);
        let Some(target_db) = self.follow.target_of(db, table).map(str::to_string) else {
            return Ok(());
        };
        if self
            .snapshots
            .get(&format!("{db}.{table}"))
            .is_some_and(|s| r.end <= *s)
        {
            return Ok(());
        }
        let at = at.unwrap_or(&r.end);
        let safe = self.cp.safe_until.as_ref().is_some_and(|s| at <= s);
        let n = r.images.len() as u64;
        self.rows += n;
        self.limit.acquire(n).await;
        self.target
            .rows(RowChange {
                db: &target_db,
                table,
                op: r.op,
                images: r.images,
                flags: r.flags,
                safe,
                at,
                info: &r.table,
            })
            .await
    }

    /// Commits the group (between source transactions only).
    pub async fn flush(&mut self) -> Result<(), CdcError> {
        if let Some(end) = self.group.end.take() {
            self.target.commit(end).await?;
            self.record()?;
        }
        self.group.txns = 0;
        Ok(())
    }

    /// Checkpoints what the target has committed since the last call.
    pub fn record(&mut self) -> Result<(), CdcError> {
        if let Some(end) = self.target.take_committed() {
            self.checkpoint(end)?;
        }
        Ok(())
    }

    pub fn checkpoint(&mut self, (pos, gtid): TxnEnd) -> Result<(), CdcError> {
        self.cp.position = pos;
        self.cp.gtid = gtid;
        self.cp.unix_ms = now_ms();
        self.store.put_checkpoint(&self.job.name, &self.cp)?;
        // What the checkpoint has passed is never read again.
        let cp = self.cp.position.clone();
        let job = &self.job.name;
        for (xid, _) in self.xa_done.iter().filter(|(_, end)| *end <= cp) {
            self.store.remove_xa(job, xid)?;
        }
        self.xa_done.retain(|(_, end)| *end > cp);
        if self.ddl_pending.as_ref().is_some_and(|p| *p <= cp) {
            self.ddl_pending = None;
            self.store.set_ddl_pending(job, None)?;
        }
        Ok(())
    }

    /// Commits everything before a statement and waits for it.
    async fn barrier(&mut self) -> Result<(), CdcError> {
        self.flush().await?;
        self.target.settle().await?;
        self.record()
    }

    async fn query(&mut self, q: Query) -> Result<(), CdcError> {
        self.seen = q.end.clone();
        let before = self.follow.ghosts().clone();
        let mut steps = self.follow.plan(&q);
        if *self.follow.ghosts() != before {
            self.store
                .put_ghosts(&self.job.name, self.follow.ghosts())?;
        }
        // A table copied after this statement has it in its copy already.
        steps.retain(|s| match s {
            Step::Run {
                source_db,
                table: Some(t),
                ..
            } => self
                .snapshots
                .get(&format!("{source_db}.{t}"))
                .is_none_or(|snap| q.end > *snap),
            _ => true,
        });
        let at = q.end.to_string();
        if let Some(Step::Fail(why)) = steps.iter().find(|s| matches!(s, Step::Fail(_))) {
            return Err(CdcError::Unsupported {
                at,
                message: why.clone(),
            });
        }
        let event = |store: &Store, message: String| {
            let _ = store.add_event(&self.job.name, "ddl", &message);
        };
        for s in &steps {
            if let Step::Skip(why) = s {
                if !quiet(why) {
                    event(self.store, format!("skipped at {at}: {why}: {}", shown(&q)));
                }
            }
        }
        if !steps.iter().any(Step::changes_target) {
            return Ok(());
        }
        match self.job.cdc.ddl {
            DdlPolicy::Stop => {
                return Err(CdcError::DdlStop {
                    at,
                    statement: shown(&q),
                })
            }
            DdlPolicy::Skip => {
                warn!(at, statement = %shown(&q), "DDL skipped ([cdc] ddl = \"skip\")");
                event(
                    self.store,
                    format!("skipped at {at} ([cdc] ddl = \"skip\"): {}", shown(&q)),
                );
                return Ok(());
            }
            DdlPolicy::Apply => {}
        }
        // Everything before the statement is committed first.
        self.barrier().await?;
        // A statement the target may have seen already: sent before a crash,
        // or in the hand-over window (a table the full load created from
        // today's schema).
        let replay = self.ddl_pending.as_ref() == Some(&q.end)
            || self.cp.safe_until.as_ref().is_some_and(|s| q.end <= *s);
        self.ddl_pending = Some(q.end.clone());
        self.store.set_ddl_pending(&self.job.name, Some(&q.end))?;
        for step in steps {
            match step {
                Step::Run {
                    db, sql, context, ..
                } => {
                    info!(at, statement = %sql, "applying DDL");
                    match self.target.execute(&db, &sql, &context).await {
                        Ok(()) => event(
                            self.store,
                            format!("applied at {at}: {}", crate::model::truncate(&sql, 300)),
                        ),
                        Err(e) if replay && e.already_done() => {
                            info!(at, error = %e, "DDL already applied before the restart");
                        }
                        Err(e) if e.is_retryable() => return Err(e.into()),
                        Err(source) => {
                            return Err(CdcError::DdlFailed {
                                at,
                                statement: crate::model::truncate(&sql, 500),
                                source: Box::new(source),
                            })
                        }
                    }
                }
                Step::Copy { db, table } => {
                    let target_db = self
                        .follow
                        .target_of(&db, &table)
                        .unwrap_or(&db)
                        .to_string();
                    info!(at, table = %format!("{db}.{table}"), "copying a table that entered the selection");
                    let snap = self.target.copy_table(&db, &table, &target_db).await?;
                    let id = format!("{db}.{table}");
                    self.store.put_copied_table(&self.job.name, &id, &snap)?;
                    event(
                        self.store,
                        format!(
                            "copied {id} at {at} (it entered the selection; snapshot at {snap})"
                        ),
                    );
                    self.snapshots.insert(id, snap);
                }
                Step::Skip(_) | Step::Fail(_) => {}
            }
        }
        if !q.in_txn {
            // The lanes record the statement's position with this commit.
            self.target.commit((q.end.clone(), q.gtid.clone())).await?;
            self.target.settle().await?;
            self.record()?;
            self.checkpoint((q.end, q.gtid))?;
        }
        Ok(())
    }
}

/// Skips not worth an event: statements about other databases.
fn quiet(why: &str) -> bool {
    matches!(
        why,
        "database not selected" | "not about a selected database" | "transaction control"
    ) || why.starts_with("statement-format row change outside")
}

/// A statement as the event log shows it: never the text of account
/// statements (they may hold passwords).
fn shown(q: &Query) -> String {
    match q.statement.kind {
        crate::source::ddl::Kind::Never(what) => format!("({what} statement)"),
        _ => crate::model::truncate(&q.statement.text, 300),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::testkit::{self, *};
    use crate::db::DbError;
    use crate::source::decode::Image;

    /// A target that records what it is asked to do.
    #[derive(Default)]
    struct Recorder {
        log: Vec<String>,
        committed: Option<TxnEnd>,
        fail_with: Option<u16>,
    }

    impl Target for Recorder {
        async fn rows(&mut self, c: RowChange<'_>) -> Result<(), CdcError> {
            for (b, a) in &c.images {
                let v = |i: &Option<Image>| {
                    i.as_ref()
                        .map(|i| format!("{:?}", i.values))
                        .unwrap_or_default()
                };
                self.log.push(format!(
                    "{:?} {}.{} {}->{} safe={} fk={}",
                    c.op,
                    c.db,
                    c.table,
                    v(b),
                    v(a),
                    c.safe,
                    !c.flags.no_foreign_key_checks
                ));
            }
            Ok(())
        }
        fn begin_txn(&mut self) {}
        async fn rollback_txn(&mut self) -> Result<(), CdcError> {
            self.log.push("rollback".into());
            Ok(())
        }
        async fn commit(&mut self, end: TxnEnd) -> Result<(), CdcError> {
            self.log.push(format!("commit {}", end.0));
            self.committed = Some(end);
            Ok(())
        }
        async fn settle(&mut self) -> Result<(), CdcError> {
            Ok(())
        }
        async fn abandon(&mut self) {}
        fn busy(&self) -> bool {
            false
        }
        fn queued_bytes(&self) -> usize {
            0
        }
        fn take_committed(&mut self) -> Option<TxnEnd> {
            self.committed.take()
        }
        async fn execute(
            &mut self,
            db: &str,
            sql: &str,
            ctx: &SessionContext,
        ) -> Result<(), TargetError> {
            if let Some(code) = self.fail_with {
                return Err(TargetError::Db(DbError::Query {
                    role: "target",
                    context: "DDL".into(),
                    source: mysql_async::Error::Server(mysql_async::ServerError {
                        code,
                        message: "exists".into(),
                        state: "42S01".into(),
                    }),
                }));
            }
            self.log
                .push(format!("run in {db} at {}: {sql}", ctx.timestamp));
            Ok(())
        }
        async fn copy_table(
            &mut self,
            db: &str,
            table: &str,
            target_db: &str,
        ) -> Result<BinlogPos, CdcError> {
            self.log.push(format!("copy {db}.{table} -> {target_db}"));
            Ok(pos(1000))
        }
    }

    fn job(extra: &str) -> JobSpec {
        testkit::job(
            "sync",
            &format!("[[select]]\ndatabase = \"shop\"\ntables = [\"t\", \"u\"]\nrename = \"copy\"\n{extra}"),
        )
    }

    async fn drive(
        job: &JobSpec,
        store: &Store,
        target: Recorder,
        changes: Vec<Change>,
    ) -> (Vec<String>, BinlogPos) {
        let limit = RateLimit::new(0);
        let mut e = Engine::new(job, store, &limit, target, cp()).expect("engine");
        for c in changes {
            e.handle(c).await.expect("handled");
        }
        e.flush().await.expect("flushed");
        (e.target.log, e.cp.position)
    }

    #[tokio::test]
    async fn transactions_are_grouped_and_statements_run_between_them() {
        let (_d, store) = store();
        let job = job("");
        let (log, at) = drive(
            &job,
            &store,
            Recorder::default(),
            vec![
                begin(),
                insert("t", 1, 100),
                insert("other", 9, 110),
                commit(120),
                begin(),
                insert("u", 2, 130),
                commit(140),
                ddl("ALTER TABLE t ADD c INT", 150),
                ddl("DROP TABLE other", 160),
                begin(),
                insert("t", 3, 170),
                commit(180),
            ],
        )
        .await;
        assert_eq!(
            log,
            vec![
                "Insert copy.t ->[Int(1)] safe=false fk=true",
                "Insert copy.u ->[Int(2)] safe=false fk=true",
                "commit binlog.000001:140",
                "run in copy at 77: ALTER TABLE t ADD c INT",
                "commit binlog.000001:150",
                "Insert copy.t ->[Int(3)] safe=false fk=true",
                "commit binlog.000001:180",
            ]
        );
        assert_eq!(at, pos(180));
        // The skipped DROP of an unselected table is in the job's events.
        let events = store.events("j").expect("events");
        assert!(
            events
                .iter()
                .any(|e| e.message.contains("DROP TABLE other")),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn xa_transactions_apply_with_their_outcome() {
        let (_d, store) = store();
        let job = job("");
        let mut changes = xa_prepared("X'01',X'',1", 1, 100);
        changes.extend(xa_prepared("X'02',X'',1", 2, 200));
        changes.push(begin());
        changes.push(insert("t", 3, 300));
        changes.push(commit(310));
        changes.push(xa_end("X'01',X'',1", false, 400));
        changes.push(xa_end("X'02',X'',1", true, 500));
        let (log, at) = drive(&job, &store, Recorder::default(), changes).await;
        assert_eq!(
            log,
            vec![
                "Insert copy.t ->[Int(3)] safe=false fk=true",
                "Insert copy.t ->[Int(2)] safe=false fk=true",
                "commit binlog.000001:500",
            ]
        );
        assert_eq!(at, pos(500));
        assert!(
            store.xa("j", "X'02',X'',1").expect("xa").is_none(),
            "stash dropped once checkpointed"
        );
        // A commit of an XA transaction prepared before the job started.
        let limit = RateLimit::new(0);
        let mut e = Engine::new(&job, &store, &limit, Recorder::default(), cp()).unwrap();
        let err = e
            .handle(xa_end("X'03',X'',1", true, 600))
            .await
            .expect_err("unknown XA");
        assert!(err.to_string().contains("X'03'"), "{err}");
    }

    #[tokio::test]
    async fn a_rolled_back_transaction_is_undone_and_osc_cut_over_alters_the_table() {
        let (_d, store) = store();
        let job = job("");
        let (log, _) = drive(
            &job,
            &store,
            Recorder::default(),
            vec![
                begin(),
                insert("t", 1, 100),
                Change::Rollback { end: pos(110) },
                ddl("CREATE TABLE `_t_new` (id INT PRIMARY KEY)", 120),
                ddl("ALTER TABLE `_t_new` ADD c INT", 130),
                begin(),
                insert("_t_new", 5, 140),
                insert("t", 6, 141),
                commit(150),
                ddl("RENAME TABLE t TO _t_old, _t_new TO t", 160),
                ddl("DROP TABLE IF EXISTS _t_old", 170),
            ],
        )
        .await;
        assert_eq!(
            log,
            vec![
                "Insert copy.t ->[Int(1)] safe=false fk=true",
                "rollback",
                "Insert copy.t ->[Int(6)] safe=false fk=true",
                "commit binlog.000001:150",
                "run in copy at 77: ALTER TABLE `t` ADD c INT",
                "commit binlog.000001:160",
            ]
        );
    }

    #[tokio::test]
    async fn tables_renamed_in_are_copied_and_their_earlier_changes_skipped() {
        let (_d, store) = store();
        let job = job("");
        let (log, _) = drive(
            &job,
            &store,
            Recorder::default(),
            vec![
                ddl("RENAME TABLE staging TO u", 100),
                begin(),
                insert("u", 1, 200), // before the copy's snapshot (1000)
                commit(210),
                begin(),
                insert("u", 2, 1100),
                commit(1110),
            ],
        )
        .await;
        assert_eq!(
            log,
            vec![
                "copy shop.u -> copy",
                "commit binlog.000001:100",
                "Insert copy.u ->[Int(2)] safe=false fk=true",
                "commit binlog.000001:1110",
            ]
        );
        assert_eq!(
            store.snapshots("j").unwrap(),
            vec![("shop.u".to_string(), pos(1000))]
        );
    }

    #[tokio::test]
    async fn a_statement_replayed_after_a_crash_tolerates_its_own_effect() {
        let (_d, store) = store();
        let job = job("");
        store.set_ddl_pending("j", Some(&pos(150))).unwrap();
        let target = Recorder {
            fail_with: Some(1060),
            ..Default::default()
        };
        let (log, at) = drive(
            &job,
            &store,
            target,
            vec![ddl("ALTER TABLE t ADD c INT", 150)],
        )
        .await;
        assert_eq!(log, vec!["commit binlog.000001:150"]);
        assert_eq!(at, pos(150));
        assert_eq!(store.ddl_pending("j").unwrap(), None);
        // Not in a replay, the same error stops the job.
        let limit = RateLimit::new(0);
        let target = Recorder {
            fail_with: Some(1060),
            ..Default::default()
        };
        let mut e = Engine::new(&job, &store, &limit, target, cp()).unwrap();
        assert!(e.handle(ddl("ALTER TABLE t ADD d INT", 200)).await.is_err());
    }

    #[tokio::test]
    async fn statement_format_dml_stops_the_job_naming_the_position() {
        let (_d, store) = store();
        let job = job("");
        let limit = RateLimit::new(0);
        let mut e = Engine::new(&job, &store, &limit, Recorder::default(), cp()).unwrap();
        e.handle(begin()).await.unwrap();
        let err = e
            .handle(ddl("INSERT INTO t VALUES (1)", 321))
            .await
            .expect_err("stops");
        let text = err.to_string();
        assert!(
            text.contains("binlog.000001:321") && text.contains("binlog_format"),
            "{text}"
        );
    }
}

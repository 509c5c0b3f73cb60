//! Behaviour analytics use cases: load what a run needs from the store (aggregated there), run the pure
//! pipeline off the async runtime, and commit the run's results in one transaction; read them back for the
//! API.

use std::sync::Arc;

use chrono::{Days, NaiveDate};

use super::{App, AppError};
use crate::analytics::{self, AnalyticsParams, Dataset, RawRows};
use crate::members::MemberId;
use crate::store::{AnalyticsChange, AnalyticsRun, MemberAnalyticsRow, MemberTagRow};

/// What a finished run reports (the CLI prints it; `--json` prints it whole).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub run: AnalyticsRun,
    /// Seconds per stage, in order. The store reads are one stage, `load`.
    pub stages: Vec<(String, f64)>,
    /// Seconds per store read within `load`, in the order they finished. Two run at a time, so these add up
    /// to more than `load`.
    pub reads: Vec<(String, f64)>,
}

impl App {
    /// The analysis parameters in force (`[analytics]` in the configuration).
    pub fn analytics_params(&self) -> &AnalyticsParams {
        &self.config.analytics
    }

    /// Run the whole analysis as of the end of `as_of` (UTC), reading nothing later, and store its results
    /// as a new run. `progress` hears each stage's name as it starts. Refused with
    /// [`AppError::AnalysisBusy`] while another run of this process is in progress.
    pub async fn analyze(
        &self,
        as_of: NaiveDate,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<RunReport, AppError> {
        let _running = self.analysis.clone().try_lock_owned().map_err(|_| AppError::AnalysisBusy)?;
        let run = self.begin_analysis(as_of).await?;
        self.complete_analysis(run, progress).await
    }

    /// Start a run in the background and return it at once (status `running`); poll
    /// [`Self::analytics_run`] for its end. Refused with [`AppError::AnalysisBusy`] while another run of
    /// this process is in progress.
    pub async fn start_analysis(self: &std::sync::Arc<Self>, as_of: NaiveDate) -> Result<AnalyticsRun, AppError> {
        let running = self.analysis.clone().try_lock_owned().map_err(|_| AppError::AnalysisBusy)?;
        let run = self.begin_analysis(as_of).await?;
        let (app, started) = (self.clone(), run.clone());
        tokio::spawn(async move {
            let _running = running;
            let id = started.run_id;
            match app.complete_analysis(started, &|stage| tracing::debug!(stage, "analysis")).await {
                Ok(_) => tracing::info!(run = id, %as_of, "analysis finished"),
                Err(e) => tracing::error!(run = id, error = %e, %as_of, "analysis failed"),
            }
        });
        Ok(run)
    }

    /// One run, whatever its status.
    pub async fn analytics_run(&self, run_id: i64) -> Result<Option<AnalyticsRun>, AppError> {
        Ok(self.store.analytics_run(run_id).await?)
    }

    async fn begin_analysis(&self, as_of: NaiveDate) -> Result<AnalyticsRun, AppError> {
        let params_json = serde_json::to_value(&self.config.analytics).map_err(|e| AppError::Config(e.to_string()))?;
        Ok(self.store.begin_analytics_run(as_of, &params_json, self.now()).await?)
    }

    async fn complete_analysis(
        &self,
        run: AnalyticsRun,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<RunReport, AppError> {
        let params = self.config.analytics.clone();
        match self.analyze_run(&run, params, progress).await {
            Ok((out, stages, reads)) => {
                progress("store results");
                let t = std::time::Instant::now();
                self.store.finish_analytics_run(run.run_id, out, self.now()).await?;
                let mut stages = stages;
                stages.push(("store results".into(), t.elapsed().as_secs_f64()));
                let run = self
                    .store
                    .analytics_run(run.run_id)
                    .await?
                    .ok_or_else(|| AppError::Config("the run vanished".into()))?;
                Ok(RunReport { run, stages, reads })
            }
            Err(e) => {
                self.store.fail_analytics_run(run.run_id, &e.to_string(), self.now()).await?;
                Err(e)
            }
        }
    }

    async fn analyze_run(
        &self,
        run: &AnalyticsRun,
        params: AnalyticsParams,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(crate::store::AnalyticsOutput, Vec<(String, f64)>, Vec<(String, f64)>), AppError> {
        let as_of = run.as_of;
        let until = Dataset::cut_off(as_of);
        let days_back = |d: u32| until.checked_sub_days(Days::new(u64::from(d))).unwrap_or(until);
        // The store reads run two at a time (a read is mostly one thread stepping its statement, or waiting on
        // the database server). They queue for the two slots in the order written, longest first by their
        // measured times at scale, and each takes the next free slot, so no hand-balanced split goes stale
        // when a run also reads the previous run's members and tags. Each read's own time (from taking its
        // slot) is reported too: at scale the reads are a large part of a run, and which one dominates decides
        // what to make faster.
        let mut stages: Vec<(String, f64)> = Vec::new();
        let reads: std::sync::Mutex<Vec<(String, f64)>> = std::sync::Mutex::new(Vec::new());
        // Fair: slots are handed out in the order they were asked for.
        let slots = tokio::sync::Semaphore::new(2);
        let slot = || async { slots.acquire().await.map_err(|_| AppError::Analytics("read slots closed".into())) };
        let timed = |name: &'static str, t: std::time::Instant| -> Result<(), AppError> {
            reads
                .lock()
                .map_err(|_| AppError::Analytics("read timings poisoned".into()))?
                .push((name.to_string(), t.elapsed().as_secs_f64()));
            Ok(())
        };
        macro_rules! read {
            ($name:literal, $read:expr) => {
                async {
                    let _slot = slot().await?;
                    let t = std::time::Instant::now();
                    let rows = $read.await?;
                    timed($name, t)?;
                    Ok::<_, AppError>(rows)
                }
            };
        }
        let s = &self.store;
        progress("load");
        let load = std::time::Instant::now();
        let previous = async {
            // One slot for both reads: the previous members (among the longest) follow at once, not last in line.
            let _slot = slot().await?;
            let t = std::time::Instant::now();
            let run = s.latest_analytics_run().await?;
            timed("previous run", t)?;
            let t = std::time::Instant::now();
            let previous = match run {
                Some(prev) => {
                    let rows = s.previous_members(prev.run_id).await?;
                    timed("previous members", t)?;
                    Some((prev, rows))
                }
                None => None,
            };
            Ok::<_, AppError>(previous)
        };
        let (lines, points, purchases, previous, events, active_by_day, streams, engagement, refunds, members, texts) =
            tokio::try_join!(
                read!("order lines", s.line_facts(days_back(params.rfm.window_days), until)),
                read!("points", s.points_days(until)),
                read!("purchases", s.purchase_days(until)),
                previous,
                read!("event tallies", s.event_tallies(days_back(params.engagement_days), until)),
                read!("active members", s.active_members_by_day(days_back(params.kpi_days), until)),
                read!("event streams", s.event_rows(days_back(params.journey_days), until)),
                read!("engagement", s.engagement_days(days_back(params.churn_history_days), until)),
                read!("refunds", s.refund_days(until)),
                read!("members", s.analytics_members(until)),
                read!("member texts", s.member_texts(days_back(365), until)),
            )?;
        let raw =
            RawRows { members, purchases, refunds, events, lines, points, engagement, streams, active_by_day, texts };
        stages.push(("load".to_string(), load.elapsed().as_secs_f64()));
        let mut reads = reads.into_inner().map_err(|_| AppError::Analytics("read timings poisoned".into()))?;
        let run_id = run.run_id;
        // The stored tags (millions of rows at scale) are read when the tags stage starts. Read with the other
        // reads they were held through every stage, and read while the stages before it ran they met those
        // stages' own peaks (basket rules, funnels).
        let tags_secs: Arc<std::sync::Mutex<Option<f64>>> = Arc::default();
        let stored_tags = {
            let (store, tags_secs) = (self.store.clone(), tags_secs.clone());
            let runtime = tokio::runtime::Handle::current();
            move || -> Result<Vec<MemberTagRow>, analytics::AnalyticsError> {
                let t = std::time::Instant::now();
                let rows = runtime.block_on(store.member_tags(None));
                if let Ok(mut secs) = tags_secs.lock() {
                    *secs = Some(t.elapsed().as_secs_f64());
                }
                rows.map_err(|e| analytics::AnalyticsError::Read { what: "stored tags", message: e.to_string() })
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let job = tokio::task::spawn_blocking(move || {
            let _ = tx.send("group by member".to_string());
            let data = Dataset::new(as_of, raw);
            let (previous_run, previous_rows) = previous.unzip();
            analytics::run(run_id, data, previous_run.as_ref().zip(previous_rows), stored_tags, &params, |stage| {
                let _ = tx.send(stage.to_string());
            })
        });
        let mut job = std::pin::pin!(job);
        let mut last: Option<(String, std::time::Instant)> = None;
        let result = loop {
            tokio::select! {
                stage = rx.recv() => {
                    if let Some(stage) = stage {
                        if let Some((name, started)) = last.take() {
                            stages.push((name, started.elapsed().as_secs_f64()));
                        }
                        log_memory(&stage);
                        progress(&stage);
                        last = Some((stage, std::time::Instant::now()));
                    }
                }
                done = &mut job => break done,
            }
        };
        while let Ok(stage) = rx.try_recv() {
            if let Some((name, started)) = last.take() {
                stages.push((name, started.elapsed().as_secs_f64()));
            }
            last = Some((stage, std::time::Instant::now()));
        }
        if let Some((name, started)) = last.take() {
            stages.push((name, started.elapsed().as_secs_f64()));
        }
        let out = result
            .map_err(|e| AppError::Config(format!("analysis task failed: {e}")))?
            .map_err(|e| AppError::Analytics(e.to_string()))?;
        if let Some(secs) = tags_secs.lock().ok().and_then(|t| *t) {
            reads.push(("tags (in the tags stage)".to_string(), secs));
        }
        Ok((out, stages, reads))
    }

    /// The newest finished run, if any.
    pub async fn latest_analytics_run(&self) -> Result<Option<AnalyticsRun>, AppError> {
        Ok(self.store.latest_analytics_run().await?)
    }

    /// An aggregate result of the newest finished run (`rfm`, `clv`, `cohorts`, …), with the run.
    pub async fn analytics_result(&self, model: &str) -> Result<Option<(AnalyticsRun, serde_json::Value)>, AppError> {
        let Some(run) = self.store.latest_analytics_run().await? else { return Ok(None) };
        Ok(self.store.analytics_result(run.run_id, model).await?.map(|body| (run, body)))
    }

    /// A member's analytic results of the newest run, their logged changes and tags.
    pub async fn member_analytics(
        &self,
        member: MemberId,
    ) -> Result<(Option<(AnalyticsRun, MemberAnalyticsRow)>, Vec<AnalyticsChange>, Vec<MemberTagRow>), AppError> {
        let latest = match self.store.latest_analytics_run().await? {
            Some(run) => self.store.member_analytics(run.run_id, member).await?.map(|row| (run, row)),
            None => None,
        };
        let changes = self.store.member_analytics_changes(member, 20).await?;
        let tags = self.store.member_tags(Some(member)).await?;
        Ok((latest, changes, tags))
    }
}

/// Most days an ad-hoc funnel may span (the events are read into memory).
pub const FUNNEL_QUERY_MAX_DAYS: i64 = 366;

/// An ad-hoc funnel over the events of `[from, to]` (UTC days, both included).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FunnelQueryResult {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Events read (all types; the funnel keeps those its steps and exclusions match).
    pub events_read: usize,
    pub report: analytics::kernels::funnels::FunnelReport,
}

impl App {
    /// Compute a funnel on demand over the stored events of `[from, to]`, off the async runtime. The
    /// definition is validated first: `Ok(Err(_))` names the offending field.
    pub async fn funnel_query(
        &self,
        definition: analytics::kernels::funnels::FunnelDefinition,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Result<FunnelQueryResult, analytics::kernels::funnels::FunnelError>, AppError> {
        if let Err(e) = definition.validate() {
            return Ok(Err(e));
        }
        let since = from.and_time(chrono::NaiveTime::MIN).and_utc();
        let rows = self.store.event_rows(since, Dataset::cut_off(to)).await?;
        let events_read = rows.len();
        let report = tokio::task::spawn_blocking(move || {
            let events = analytics::funnel_events(&rows);
            analytics::kernels::funnels::funnel_report(&events, &definition)
        })
        .await
        .map_err(|e| AppError::Analytics(format!("funnel task failed: {e}")))?;
        Ok(report.map(|report| FunnelQueryResult { from, to, events_read, report }))
    }

    /// Set an operator's tag on a member (weight 1, decaying only under `manual_half_life_days`), audited.
    /// `None` when the member does not exist.
    pub async fn tag_member(
        &self,
        member: MemberId,
        tag: &str,
        category: &str,
        reason: &str,
        who: &crate::security::Principal,
    ) -> Result<Option<MemberTagRow>, AppError> {
        if self.store.member(member).await?.is_none() {
            return Ok(None);
        }
        let now = self.now();
        let row = MemberTagRow {
            member_id: member,
            tag: tag.to_string(),
            category: category.to_string(),
            source: "manual".into(),
            weight: 1.0,
            support_weight: 1.0,
            last_supported_at: now,
            // Kept from the first time when the tag is set again.
            first_tagged_at: now,
            reason: format!("set by {}: {reason}", who.key_id),
        };
        let row = self.store.put_manual_tag(&row).await?;
        let entry = crate::security::AuditEntry::new(
            who,
            now,
            "member.tag",
            Some(member),
            serde_json::json!({ "tag": tag, "category": category, "reason": reason }),
        );
        self.store.append_audit(&[entry]).await?;
        Ok(Some(row))
    }

    /// Remove an operator's tag, audited; false when the member had no such manual tag.
    pub async fn untag_member(
        &self,
        member: MemberId,
        tag: &str,
        who: &crate::security::Principal,
    ) -> Result<bool, AppError> {
        let removed = self.store.delete_manual_tag(member, tag).await?;
        if removed {
            let entry = crate::security::AuditEntry::new(
                who,
                self.now(),
                "member.untag",
                Some(member),
                serde_json::json!({ "tag": tag }),
            );
            self.store.append_audit(&[entry]).await?;
        }
        Ok(removed)
    }
}

impl App {
    /// Run the analysis every day at `analytics.schedule_hour` of the business time zone, as of the last
    /// complete UTC day (started by `huiyuan serve`; off when the hour is negative).
    pub fn spawn_analytics_schedule(self: &std::sync::Arc<Self>) {
        let hour = self.config.analytics.schedule_hour;
        let Ok(hour) = u32::try_from(hour) else { return };
        let Ok(tz) = self.config.timezone.parse::<chrono_tz::Tz>() else { return };
        let app = self.clone();
        tokio::spawn(async move {
            loop {
                let now = app.now();
                let wait = next_run_after(now, hour, tz).signed_duration_since(now);
                tokio::time::sleep(wait.to_std().unwrap_or_default()).await;
                let as_of = (app.now() - chrono::Duration::days(1)).date_naive();
                match app.analyze(as_of, &|stage| tracing::debug!(stage, "analysis")).await {
                    Ok(r) => tracing::info!(run = r.run.run_id, %as_of, "scheduled analysis finished"),
                    Err(e) => tracing::error!(error = %e, %as_of, "scheduled analysis failed"),
                }
            }
        });
    }
}

/// The next instant strictly after `now` at `hour`:00 local time in `tz` (a skipped local hour, at a DST
/// change, runs at the next valid instant).
fn next_run_after(now: chrono::DateTime<chrono::Utc>, hour: u32, tz: chrono_tz::Tz) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    let local = now.with_timezone(&tz).date_naive();
    for day in 0..3 {
        let Some(date) = local.checked_add_days(Days::new(day)) else { continue };
        let Some(at) = date.and_hms_opt(hour.min(23), 0, 0) else { continue };
        let when = match tz.from_local_datetime(&at) {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t.with_timezone(&chrono::Utc),
            chrono::LocalResult::None => (at + chrono::Duration::hours(1)).and_utc(),
        };
        if when > now {
            return when;
        }
    }
    now + chrono::Duration::days(1)
}

/// Resident memory at a stage's start, beside what SQLite holds of it: at scale the level a stage starts
/// from decides the run's peak, and the two allocators keep different things.
fn log_memory(stage: &str) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let resident_kib = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse::<i64>().ok())
    });
    tracing::debug!(
        stage,
        resident_mib = resident_kib.map(|k| k >> 10),
        sqlite_mib = crate::store::sqlite::heap_bytes() >> 20,
        "memory at stage start"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_runs_at_the_next_local_hour() {
        let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
        let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        // 18:00 UTC is 02:00 in Shanghai: the 03:00 run is an hour away.
        assert_eq!(next_run_after(at("2026-11-22T18:00:00Z"), 3, tz), at("2026-11-22T19:00:00Z"));
        // Exactly at 03:00 local the next run is tomorrow's.
        assert_eq!(next_run_after(at("2026-11-22T19:00:00Z"), 3, tz), at("2026-11-23T19:00:00Z"));
    }
}

"""Prometheus metrics (prefix calstream_), one registry per daemon.

Only the daemon's main process records metrics: worker processes report their
durations and memory back with each result, so one endpoint per daemon holds
correct totals without multiprocess collectors. The catalog is documented in
docs/operations.md.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Pipeline runs range from ~1 s (a small subarray) to an hour (a big spec3).
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.arrivals = Counter(
            "calstream_arrivals_total", "Uncal files announced on the raw topic",
            ["source"], registry=r)
        self.stage_runs = Counter(
            "calstream_stage_runs_total",
            "Work items finished, by stage, pipeline and outcome "
            "(success, skipped, duplicate = already done, failed = dead-lettered)",
            ["stage", "pipeline", "outcome"], registry=r)
        self.retries = Counter(
            "calstream_stage_retries_total", "Transient failures retried",
            ["stage", "pipeline"], registry=r)
        # Items parked on an infrastructure fault: in flight, not dead-lettered,
        # tried again every park_recheck_seconds until the cause clears.
        self.parked = Gauge(
            "calstream_parked_items",
            "Work items parked on an infrastructure fault (disk_full, read_only, mount_gone, "
            "broker_unreachable, crds_unreachable, crds_reference_missing, crds_reference_corrupt, "
            "crds_lookup, worker_start, worker_server, topic_not_authorized, broker_error; at start "
            "topics_missing; the watcher's "
            "inbox_gone, inbox_hung, store_hung, work_dir_hung, topic_refuses_record), "
            "waiting for it to clear; root: the directory a disk fault was writing under",
            ["stage", "cause", "root"], registry=r)
        self.parked_total = Counter(
            "calstream_parked_total", "Work items parked, by cause (resumed or not)",
            ["stage", "cause"], registry=r)
        # Claims between daemons sharing a store (doers/work_claims.py).
        self.claims_waited = Counter(
            "calstream_claims_waited_total",
            "Runs that found another daemon's live claim on their work and waited for it",
            ["stage"], registry=r)
        self.claims_taken_over = Counter(
            "calstream_claims_taken_over_total",
            "Stale claims (no heartbeat for claim_stale_seconds) taken over", ["stage"], registry=r)
        self.stage_duration = Histogram(
            "calstream_stage_duration_seconds", "Time inside the pipeline, per run",
            ["stage", "pipeline"], buckets=DURATION_BUCKETS, registry=r)
        self.latency = Histogram(
            "calstream_end_to_end_latency_seconds",
            "From the file's arrival in the inbox to the stage's product event",
            ["stage"], buckets=DURATION_BUCKETS, registry=r)
        self.in_flight = Gauge(
            "calstream_in_flight", "Work items taken from a topic and not yet finished",
            ["stage"], registry=r)
        self.parked_aside = Gauge(
            "calstream_parked_aside", "Parked work items a stage's consumer no longer counts "
            "in flight (at most max_parked_aside)", ["stage"], registry=r)
        self.dead_letters = Counter(
            "calstream_dead_letters_total", "Items sent to the dead-letter topic",
            ["stage", "category"], registry=r)
        self.backups_unkept = Counter(
            "calstream_backups_unkept_total", "Copies kept in the work directory as a backup of "
            "a topic (kept: dead_letter, redrive, deadletter_place, products_place) not kept: "
            "their write unanswered (cause work_dir_hung); the record was sent all the same",
            ["kept", "cause"], registry=r)
        self.records_refused = Counter(
            "calstream_records_refused_total", "Records the broker refused for what they are "
            "(too large for the topic, a policy; never sent again): each a dead letter, or a "
            "log line when it was a dead letter itself or a record put back",
            ["topic", "code"], registry=r)
        self.worker_restarts = Counter(
            "calstream_worker_restarts_total", "Worker processes replaced",
            ["stage", "cause"], registry=r)
        # The one process every worker is forked from (doers/worker_server_watch.py).
        self.worker_server_restarts = Counter(
            "calstream_worker_server_restarts_total", "Worker servers started again after the "
            "last one died (died), was killed making no progress while a start waited (hung), "
            "or could not be reached (unreachable)", ["cause"], registry=r)
        self.planner_rebuilds = Counter(
            "calstream_planner_rebuilds_total",
            "Planners started again from the topics after their restored state could not be read",
            registry=r)
        self.planner_compactions = Counter(
            "calstream_planner_compactions_total",
            "Planners started again from their own snapshot because they were over their "
            "memory budget (planner_memory_mb), by leadership (active, standby)", ["leadership"],
            registry=r)
        self.planner_faults = Counter(
            "calstream_planner_faults_total",
            "Faults the planner survived outside any record: a tick's decisions, its status, "
            "its lag", ["part"], registry=r)
        self.worker_rss = Gauge(
            "calstream_worker_peak_rss_bytes", "Peak resident memory of each worker process",
            ["stage", "worker"], registry=r)
        self.worker_cpu = Counter(
            "calstream_worker_cpu_seconds_total",
            "CPU the workers spent on their tasks (sealing and stcal's pool processes "
            "included), by stage and mode (user, system)", ["stage", "mode"], registry=r)
        # Previews held back while calibrations are in flight in their pool
        # (doers/preview_gate.py), for at most preview_max_wait seconds.
        self.previews_waiting = Gauge(
            "calstream_previews_waiting",
            "Previews waiting for their pool to have no calibration in flight (at most "
            "preview_max_wait seconds) before they ask for a worker", ["stage"], registry=r)
        # Runs waiting while a suspect runs alone (doers/work_item_runs.Solitude):
        # after a crash with many suspects, why a stage makes no progress.
        self.runs_waiting_alone = Gauge(
            "calstream_runs_waiting_alone",
            "Runs waiting because a suspect (a work item whose last run was cut short with "
            "the daemon, beside other runs) runs alone: run=suspect, a suspect waiting for "
            "this daemon's runs in workers to end; run=held_back, a calibration or preview "
            "waiting for a suspect's run to end", ["stage", "run"], registry=r)
        # Entries of a stopped daemon's undrawn previews taken up by this one
        # (doers/pending_previews.py): "resumed" to be drawn, "refused" dropped.
        self.previews_adopted = Counter(
            "calstream_previews_adopted_total",
            "Products whose previews another (stopped) daemon of the stage listed and did not "
            "draw, taken up here, by outcome", ["stage", "outcome"], registry=r)
        self.consumer_lag = Gauge(
            "calstream_consumer_lag_messages",
            "Messages on a topic not yet consumed by this daemon's group",
            ["topic"], registry=r)
        self.last_progress = Gauge(
            "calstream_last_progress_timestamp_seconds",
            "When a stage last finished a work item, or its consumer started (Unix time)",
            ["stage"], registry=r)
        # The poll loop and the stall threshold are exported so that the
        # stalled-consumer alert judges exactly what /readyz judges.
        self.last_poll = Gauge(
            "calstream_consumer_last_poll_timestamp_seconds",
            "When a stage's consumer loop last polled the broker (Unix time)",
            ["stage"], registry=r)
        self.stall_threshold = Gauge(
            "calstream_stall_threshold_seconds",
            "Configured stall_seconds: work in flight and nothing finished for this long "
            "makes /readyz fail", registry=r)
        self.watcher_pending = Gauge(
            "calstream_watcher_pending_files",
            "Files seen in the inbox and not yet complete", registry=r)
        self.work_orders = Counter(
            "calstream_work_orders_total", "Work orders the planner sent",
            ["stage", "degraded"], registry=r)
        self.associations_open = Gauge(
            "calstream_open_associations", "Associations waiting for members or companions",
            ["stage"], registry=r)
        self.associations_abandoned = Gauge(
            "calstream_abandoned_associations",
            "Stage-3 candidates closed with nothing to make: no member has a stage-2 product",
            ["stage"], registry=r)
        self.held_exposures = Gauge(
            "calstream_held_exposures", "Exposures held before stage 2 (ENGQLPTG=PLANNED)",
            registry=r)
        self.held_for_direct_image = Gauge(
            "calstream_held_for_direct_image",
            "WFSS grism exposures held because their direct image's stage-3 i2d, cat and "
            "segm had not come within companion_wait (not counted as pointing holds)",
            registry=r)
        self.hold_releases = Counter(
            "calstream_hold_releases_total",
            "Holds released, by release path (direct_image: a WFSS grism's direct image came)",
            ["path"], registry=r)
        self.held_without_product = Gauge(
            "calstream_held_without_product",
            "Pointing holds the planner keeps for exposures it has no product event of (a "
            "forged held record taken back at a restart, or events gone with a broker): only "
            "`calstream holds release` ends them; counted in calstream_held_exposures too",
            registry=r)
        self.pointing_updates_waiting = Gauge(
            "calstream_pointing_updates_waiting",
            "Pointing updates kept for exposures the planner has no detector1 product of yet "
            "(applied when it comes; at most 10000, the oldest forgotten past that)",
            registry=r)
        self.oldest_hold_age = Gauge(
            "calstream_oldest_hold_age_seconds", "Age of the oldest pointing hold", registry=r)
        self.missing_exposures = Gauge(
            "calstream_missing_exposures",
            "Exposures expected (NEXPOSUR x EXSEGTOT per detector, or a loaded plan) by an "
            "open stage-3 candidate of the live namespace and not arrived", ["program"], registry=r)
        self.oldest_missing_age = Gauge(
            "calstream_oldest_missing_exposure_age_seconds",
            "How long the longest-waiting open live candidate has been missing an exposure",
            registry=r)
        self.superseded = Counter(
            "calstream_superseding_orders_total",
            "Stage-3 work orders that re-open a closed candidate (version 2 and later)",
            registry=r)
        self.planner_leader = Gauge(
            "calstream_planner_leader",
            "Whether this planner holds the planner lease of its group and publishes (1) or "
            "stands by (0); only daemons with the planner role have it", ["group"], registry=r)
        self.planner_leadership_changes = Counter(
            "calstream_planner_leadership_changes",
            "Times this planner gained or lost the planner lease", registry=r)
        self.planner_publishing_pauses = Counter(
            "calstream_planner_publishing_pauses_total",
            "Times this planner, holding the lease, paused its publishing because no "
            "heartbeat answer had vouched for the lease lately (a frozen process, a silent "
            "broker): its decisions are withheld until one does, then sent", registry=r)
        self.plans_loaded = Counter(
            "calstream_plans_loaded_total", "Plans (pools or manifests) the planner applied",
            registry=r)
        self.planner_catching_up = Gauge(
            "calstream_planner_catching_up",
            "1 while the planner reads its history (snapshot tail or full rebuild): no "
            "stage-2 or stage-3 order is late because of it, but /readyz says not ready",
            registry=r)
        self.planner_clock_steps = Counter(
            "calstream_planner_clock_steps_total",
            "Steps of the wall clock (NTP, a resumed VM, a hand-set date) the planner found "
            "by comparing it with the monotonic clock once a second; its waits do not count "
            "them", registry=r)
        self.planner_clock_offset = Gauge(
            "calstream_planner_clock_offset_seconds",
            "The wall clock minus the time the planner's waits run on: the steps not taken, "
            "until a restart", registry=r)
        self.planner_lag = Gauge(
            "calstream_planner_lag_records",
            "Records on the planner's topics (product events, pointing updates, plans) it "
            "has not decided yet, over every partition; each planner reads them all, the "
            "standby too", ["topic"], registry=r)
        self.build_info = Gauge(
            "calstream_build_info", "Versions and CRDS context in use (value is 1)",
            ["calstream_version", "jwst_version", "crds_context"], registry=r)
        # Stalls, liveness and the broker (issue 13): judged exactly as /readyz
        # and /healthz judge them, so the alerts and the probes agree.
        self.oldest_in_flight_start = Gauge(
            "calstream_oldest_in_flight_start_timestamp_seconds",
            "When the oldest work item a stage has in flight was taken, or its run began in "
            "a worker (Unix time; now when nothing is in flight)", ["stage"], registry=r)
        self.stage_stall_threshold = Gauge(
            "calstream_stage_stall_threshold_seconds",
            "A stage's stall limit: an item in flight for this long makes /readyz fail",
            ["stage"], registry=r)
        self.loop_heartbeat = Gauge(
            "calstream_event_loop_heartbeat_timestamp_seconds",
            "When the daemon's event loop last beat (Unix time); /healthz fails when stale",
            registry=r)
        self.broker_up = Gauge(
            "calstream_broker_up", "Whether the Kafka broker answers (1) or is lost (0)",
            registry=r)
        self.broker_restarts = Counter(
            "calstream_embedded_broker_restarts_total",
            "Times the embedded broker died and was started again", registry=r)
        self.broker_records_lost = Counter(
            "calstream_broker_records_lost_total",
            "Times an external broker was found without topics or records it had while "
            "answering every probe (restarted between two), and what it lost was put back",
            registry=r)

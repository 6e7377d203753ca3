-- The worker's reconcile follows the active sites, not the number of sites (issue 28,
-- docs/worker.md "Reconcile"). A pass compares only the sites whose invoice row changed since the
-- previous pass (every ledger write, void and hand-planted row sets site_usage_monthly.updated_at)
-- and the sites it last found drifting; the month's figures are kept here, updated by each pass.
-- `opsmantik reconcile` is the full comparison of every site, and resets this state.

-- The sites whose invoice changed since a time: an index scan of the rows touched since, not a
-- scan of every site's row.
CREATE INDEX site_usage_monthly_updated ON site_usage_monthly (updated_at);

-- One row per billing month the reconcile follows.
CREATE TABLE reconcile_months (
    month          date PRIMARY KEY CHECK (extract(day FROM month) = 1),
    run_at         timestamptz NOT NULL,   -- the last pass, incremental or full
    full_at        timestamptz NOT NULL,   -- the last full comparison of every site
    checked_to     timestamptz NOT NULL,   -- invoice rows updated before this were compared
    ledger_events  numeric NOT NULL        -- the sum of ledger_events over reconcile_sites
);

-- Per month and site, its latest comparison (the fields of opsmantik.billing.reconcile.SiteDrift).
CREATE TABLE reconcile_sites (
    month                      date NOT NULL,
    site_id                    uuid NOT NULL,
    ledger_events              bigint NOT NULL,
    ledger_quantity            numeric NOT NULL,
    ledger_overlimit_events    bigint NOT NULL,
    ledger_overlimit_quantity  numeric NOT NULL,
    invoice_events             bigint NOT NULL,
    invoice_quantity           numeric NOT NULL,
    invoice_overlimit_events   bigint NOT NULL,
    invoice_overlimit_quantity numeric NOT NULL,
    checked_at                 timestamptz NOT NULL,
    drifting                   boolean GENERATED ALWAYS AS (
        ledger_events <> invoice_events OR ledger_quantity <> invoice_quantity
        OR ledger_overlimit_events <> invoice_overlimit_events
        OR ledger_overlimit_quantity <> invoice_overlimit_quantity) STORED,
    PRIMARY KEY (month, site_id)
);
-- The drifting sites of a month: read by every pass (re-compared, exported), normally none.
CREATE INDEX reconcile_sites_drifting ON reconcile_sites (month) WHERE drifting;

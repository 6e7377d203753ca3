"""Usage alerts (docs/alerts.md): rules per site, crossings decided in the ledger's transaction,
an outbox of Standard Webhooks and the dispatcher that delivers them to hostile receivers."""

"""The SLA (seed §2.1, §1, §3): per-site report, maintenance windows, data loss (docs/billing.md)."""

"""The public status page: components from live signals, a snapshot refreshed in the background,
HTML and the hosted-status-page summary JSON rendered from it, and `opsmantik incident`.

  signals.py     reads the live signals (broker probe, its own Postgres connection, gateway state)
  components.py  signals → component states → the page's overall state (pure logic)
  snapshot.py    the background refresher: signals, month SLO figures, 90-day rollups, incidents
  summary.py     the snapshot as /status.json (the common hosted status-page summary shape)
  page.py        the snapshot as server-rendered HTML (no JavaScript; light and dark; phone width)
  incidents.py   `opsmantik incident open|update|resolve|list`
"""

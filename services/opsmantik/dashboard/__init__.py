"""The dashboard's static assets (index.html, dashboard.css, dashboard.js), shipped in the package
and served by services/opsmantik/gateway/routes_dashboard.py. No CDN, no library."""

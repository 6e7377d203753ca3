"""The contracts, shipped inside the package as `opsmantik.schemas` (pyproject.toml's package-dir):
JSON Schemas of the wire formats, the OpenAPI document and the Postgres migrations (postgres/).
Data only: read them with opsmantik.schema_files."""

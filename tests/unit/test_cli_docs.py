"""docs/cli.md's CLI table is the one services/opsmantik/cli/docs.py generates from the parser that prints
`--help`: a command or flag added without regenerating it fails here."""

from pathlib import Path

from opsmantik.cli import docs as cli_docs

ROOT = Path(__file__).resolve().parents[2]


def test_cli_doc_table_is_generated_from_the_parser() -> None:
    current = cli_docs.doc_table((ROOT / cli_docs.CLI_DOC).read_text())
    assert current is not None, "docs/cli.md lost the cli table markers"
    assert current == cli_docs.table(), (
        "docs/cli.md is stale: run `.venv/bin/python -m opsmantik.cli.docs --write`"
    )


def test_the_table_names_every_command() -> None:
    from opsmantik import cli
    from opsmantik.cli import args as cli_args

    text = cli_docs.table()
    for path, _ in cli_args.leaves(cli.build_parser()):
        assert f"`opsmantik {' '.join(path)}" in text

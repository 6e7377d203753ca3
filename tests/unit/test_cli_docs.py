"""README.md's CLI table is the one services/cli_docs.py generates from the parser that prints
`--help`: a command or flag added without regenerating it fails here."""

from services import cli_docs


def test_readme_cli_table_is_generated_from_the_parser() -> None:
    current = cli_docs.readme_table(cli_docs.README.read_text())
    assert current is not None, "README.md lost the cli table markers"
    assert current == cli_docs.table(), \
        "README.md is stale: run `.venv/bin/python -m services.cli_docs --write`"


def test_the_table_names_every_command() -> None:
    from services import cli, cli_args

    text = cli_docs.table()
    for path, _ in cli_args.leaves(cli.build_parser()):
        assert f"`opsmantik {' '.join(path)}" in text

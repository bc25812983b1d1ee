"""``python -m infra.fake_openai``: serve the fake until interrupted (see ``cli.main``)."""

from infra.fake_openai.cli import main

main()

"""``python -m infra.fake_openai``: serve the fake until interrupted (see ``server.main``)."""

from infra.fake_openai.server import main

main()

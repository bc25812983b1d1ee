"""``python -m kiddolingo.vad``: see :mod:`kiddolingo.vad.bench`."""

from .bench import main

raise SystemExit(main())

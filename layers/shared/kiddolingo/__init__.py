"""KiddoLingo Voice: the shared package of the Lambda layer.

Modules are kept import-light on purpose: the audio-chunk path must not import ``openai``
(its cold-start budget is 300 ms of imports), so nothing here imports a provider at module level.
"""

__version__ = "0.1.0"

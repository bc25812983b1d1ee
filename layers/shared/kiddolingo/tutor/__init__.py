"""The application layer, ``kiddolingo.service.Tutor``, in layers: one module per job.

See ``base`` for the order of the layers. Nothing is imported here, so importing one layer
loads only the layers below it.
"""

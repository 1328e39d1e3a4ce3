"""Standard-only compute: layers, sandwiches, update rules, objectives, gradient checks and argument checks.

Every function here takes its array namespace from its inputs and uses only
the Python Array API standard, so it runs on whatever library and device its
arrays belong to. Nothing here knows a library by name; that is
``anynet.backends``' business, the one package below this one.
"""

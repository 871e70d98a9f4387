"""Pictures with Pillow only: puzzle boards (:mod:`.boards`) and line charts of runs (:mod:`.charts`).

A library package: commands (``hrmkit show``, ``hrmkit plot``, the demo) and the evaluation reports draw with it.
"""

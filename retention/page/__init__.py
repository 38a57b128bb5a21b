"""The HTML report page (``run --format html``): pure rendering, no I/O (``page.html``).

A package of its own, in the layer just above ``report`` (whose size formatting it uses),
so that the top level keeps showing the architecture.
"""

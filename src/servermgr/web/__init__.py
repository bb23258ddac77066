"""The web client's files (``static/``), served by Core at ``/`` (core/webpage.py).

Plain ES modules, HTML and CSS: nothing is built, so the files here are the
source. Vendored libraries and how to update them: static/vendor/VENDORED.md.
"""

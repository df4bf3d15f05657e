"""``fastst serve``: a local web page to try exported models (drop a photo, pick a style, download the result).

* :mod:`fastst.serve.models`: find model files, load each once, describe them for the gallery;
* :mod:`fastst.serve.app`: the Starlette app (the page, ``/api/models``, ``/api/stylize``), the upload
  limits and the one-at-a-time inference queue;
* :mod:`fastst.serve.server`: the listening socket (the command and its flags: :mod:`fastst.cli.serve`);
* ``static/``: the page (plain HTML, CSS and JavaScript; no build step, nothing fetched from the internet).

Starlette and uvicorn come with the optional extra ``fastst[serve]``; nothing else in fastst imports
this package, and it imports neither Lightning nor Hydra.
"""

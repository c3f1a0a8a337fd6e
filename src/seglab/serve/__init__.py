"""`seglab serve`: any seglab model behind a small HTTP service, with a page to try it in a browser.

    pip install 'seglab[serve]'
    seglab serve --model bisenetv2.camvid            # then open http://127.0.0.1:8000/

Endpoints: `GET /` (the page), `GET /health`, `GET /models` (a card per model: task, classes, palette,
input scale, inference settings), `POST /predict?model=NAME&format=json|label|overlay` (an image as the
raw body or as a multipart file). Prediction is `seglab predict`'s: the engine's `load_predictor` with the
model file's stored settings, then `predict_image` (`predict_images` for a batch where the predictor has
it). The pieces: `uploads` (body, multipart, decoding with limits), `batching` (admission bound, batch
queues), `render` (replies per task, built by `Task.build_renderer`), `models` (loading, cards), `app`
(routes). Starlette, uvicorn and python-multipart are only imported when a server is made.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence

from ..errors import SeglabError

SERVE_PACKAGES = {"starlette": "starlette", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}


def require_serve_extra() -> None:
    missing = [pip for module, pip in SERVE_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise SeglabError(f"seglab serve needs {', '.join(missing)}: pip install 'seglab[serve]'")


def build_app(model_args: Sequence[str], *, device: str | None = "auto", settings=None, **options):
    """The application for `--model` values (files, shipped names, `ALIAS=FILE`), with `seglab predict`'s
    inference options (`slide`, `tta`, `crf`, `precision`, `score_thresh`)."""
    from .app import create_app
    from .models import load_served_model, unique_names

    require_serve_extra()
    models = unique_names([load_served_model(m, device=device, **options) for m in model_args])
    return create_app(models, settings)


def run_server(model_args: Sequence[str], *, host: str = "127.0.0.1", port: int = 8000,
               device: str | None = "auto", settings=None, log: Callable[[str], None] = print,
               access_log: bool = True, **options) -> None:
    """Load the models and serve them until interrupted (Ctrl-C)."""
    require_serve_extra()
    import uvicorn

    app = build_app(model_args, device=device, settings=settings, **options)
    service = app.state.service
    for m in service.models.values():
        log(f"model {m.name!r}: {m.task.name}, {m.config['name']}, {m.config['num_classes']} classes")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log(f"listening on {host}: other machines can reach this server (it has no authentication)")
    if port == 0:
        log("port 0: the system picks a free port, printed by uvicorn below; Ctrl-C stops")
    else:
        log(f"open http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/ in a browser; Ctrl-C stops")
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log, timeout_keep_alive=5,
                h11_max_incomplete_event_size=16 * 1024)


__all__ = ["build_app", "require_serve_extra", "run_server"]

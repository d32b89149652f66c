"""Browser viewer: ``endolight serve`` (FastAPI + uvicorn, optional extra ``endolight[serve]``)."""

from endolight.serve.app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]

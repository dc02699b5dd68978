"""One router per resource; all mounted under ``/api/v1`` by :func:`cspon_rs.api.app.create_app`."""
